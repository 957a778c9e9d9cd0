"""The TMD patch file: `tmd/1` with `kind = "patch"`, keys in ComfyUI's LoRA naming for Wan (docs/patches.md §2).

Tensors (original/ComfyUI Wan names under `diffusion_model.`, as ComfyUI's LoRA loader matches them):
  diffusion_model.<module>.lora_A.weight [r, in], .lora_B.weight [out, r], .alpha (= r: scale 1)
  diffusion_model.<module>.diff (a weight's difference, stored whole), .diff_b (a bias's)
  diffusion_model.<parameter>.diff (e.g. blocks.0.modulation)
  tmd.fusion.*, tmd.emb_gap.* (the student's own modules, whole)
Metadata: format, kind, tmd_config, base_architecture (the teacher's diffusers config), lora (rank, dtype, key
format, counts, errors per rank), provenance.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import FORMAT, atomic_save_safetensors
from .errors import CheckpointError, CheckpointNotFoundError, ConfigError, InputError
from .layouts import diffusers_key_to_original, normalize_config
from .model import TMDConfig
from .patch import ARCH_FIELDS, Patch

KIND = "patch"
LORA_PREFIX = "diffusion_model."
EXTRA_PREFIX = "tmd."
KEY_FORMAT = "comfyui-wan: diffusion_model.<original key>.lora_A/lora_B/alpha, .diff, .diff_b; tmd.fusion/emb_gap"


def is_patch(metadata: dict) -> bool:
    return metadata.get("format", "").startswith("tmd/") and metadata.get("kind") == KIND


def _file_names(dkey: str) -> dict[str, str]:
    """The file keys of one diffusers key: {"A", "B", "alpha", "full"}."""
    orig = diffusers_key_to_original(dkey)
    if orig.endswith(".weight"):
        module = LORA_PREFIX + orig.removesuffix(".weight")
        return {"A": f"{module}.lora_A.weight", "B": f"{module}.lora_B.weight", "alpha": f"{module}.alpha",
                "full": f"{module}.diff"}
    if orig.endswith(".bias"):
        return {"full": f"{LORA_PREFIX}{orig.removesuffix('.bias')}.diff_b"}
    return {"full": f"{LORA_PREFIX}{orig}.diff"}


def lora_state_dict(patch: Patch) -> dict[str, torch.Tensor]:
    """The part of a patch ComfyUI's LoRA loader reads, under the file's key names (docs/patches.md §2): per weight
    matrix `lora_A`, `lora_B` and `alpha` (= r, so ComfyUI's scale is 1), per other changed tensor its `diff` or
    `diff_b` (float32). Without the `tmd.*` extras. What `save_patch` writes, and what `comfy.lora.load_lora` takes."""
    tensors: dict[str, torch.Tensor] = {}
    for k, (a, b) in patch.lora.items():
        names = _file_names(k)
        tensors[names["A"]], tensors[names["B"]] = a, b
        tensors[names["alpha"]] = torch.tensor(float(a.shape[0]))
    for k, d in patch.full.items():
        tensors[_file_names(k)["full"]] = d.float()
    return tensors


def save_patch(patch: Patch, path) -> Path:
    """Write a patch atomically (docs/patches.md §2). Returns the path."""
    from .version import __version__

    tensors = lora_state_dict(patch)
    for k, v in patch.extra.items():
        tensors[EXTRA_PREFIX + k] = v
    dtypes = sorted({str(a.dtype).removeprefix("torch.") for a, _ in patch.lora.values()})
    lora = {"rank": patch.rank, "dtype": dtypes[0] if len(dtypes) == 1 else dtypes, "key_format": KEY_FORMAT,
            "lora_tensors": len(patch.lora), "full_tensors": len(patch.full), "errors": patch.errors}
    metadata = {"format": FORMAT, "kind": KIND, "tmd_config": json.dumps(patch.tmd_config.to_dict()),
                "base_architecture": json.dumps(patch.base_config), "lora": json.dumps(lora),
                "provenance": json.dumps({"package": "comfyui-tmd", "version": __version__, **patch.provenance},
                                         default=str)}
    atomic_save_safetensors(tensors, path, metadata)
    return Path(path)


def _json_field(name: str, metadata: dict, field: str) -> dict:
    if field not in metadata:
        raise CheckpointError(f"{name} has no {field} metadata: it was not written by save_patch or was cut short; "
                              "extract the patch again (tmd extract-lora)")
    try:
        value = json.loads(metadata[field])
    except ValueError as e:
        raise CheckpointError(f"{name}: its {field} metadata is not valid JSON ({e}): the file is corrupt; extract "
                              "the patch again (tmd extract-lora)") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{name}: its {field} metadata must be a JSON object: the file is corrupt; extract the "
                              "patch again (tmd extract-lora)")
    return value


def _header(path) -> tuple[str, dict, dict]:
    """(file name, metadata, entries) of a patch file, its kind checked."""
    from .checkpoint import _open_header

    metadata, entries = _open_header(path)
    name = Path(path).name
    if not is_patch(metadata):
        if metadata.get("format", "").startswith("tmd/"):
            raise CheckpointError(f"{name} is a full TMD student, not a TMD patch: load it with load_tmd (or make a "
                                  "patch from it: tmd extract-lora STUDENT --teacher T --rank R)")
        raise CheckpointError(f"{name} is not a TMD patch (metadata format={metadata.get('format')!r}, kind="
                              f"{metadata.get('kind')!r}; expected format {FORMAT!r}, kind {KIND!r}): make one with "
                              "tmd extract-lora STUDENT --teacher T --rank R")
    if metadata["format"] != FORMAT:
        raise CheckpointError(f"{name} has format {metadata['format']!r}; this version of the pack reads {FORMAT!r}: "
                              "update the pack")
    return name, metadata, entries


def _configs(name: str, metadata: dict) -> tuple[TMDConfig, dict, dict]:
    raw = _json_field(name, metadata, "tmd_config")
    try:
        tmd_config = TMDConfig.from_dict(raw)
    except (ConfigError, InputError, TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: its tmd_config metadata is impossible ({e}): the file is corrupt or was "
                              "edited; extract the patch again") from e
    base = normalize_config(_json_field(name, metadata, "base_architecture"), source=f"{name}: base_architecture")
    absent = [k for k in ARCH_FIELDS if k not in base]
    if absent:
        raise CheckpointError(f"{name}: its base_architecture metadata lacks {absent}: the file is corrupt; extract "
                              "the patch again")
    if base["num_layers"] != tmd_config.num_layers:
        raise CheckpointError(f"{name}: its layer counts disagree (tmd_config {tmd_config.num_layers}, "
                              f"base_architecture {base['num_layers']}): the file is corrupt; extract the patch again")
    return tmd_config, base, _json_field(name, metadata, "lora")


def read_patch_info(path) -> dict:
    """Header-only summary of a patch file (the record `describe_checkpoint` and `tmd info` show)."""
    name, metadata, entries = _header(path)
    tmd_config, base, lora = _configs(name, metadata)
    counts: dict[str, int] = {"lora": 0, "full": 0, "fusion+gap": 0}
    for k, (shape, _) in entries.items():
        part = "fusion+gap" if k.startswith(EXTRA_PREFIX) else "lora" if ".lora_" in k else "full"
        counts[part] += int(torch.Size(shape).numel())
    try:
        provenance = json.loads(metadata.get("provenance", "{}"))
    except ValueError:
        provenance = {"unreadable": metadata["provenance"][:80]}
    return {"path": str(path), "kind": "tmd-patch", "format": metadata["format"], "file_bytes": Path(path).stat().st_size,
            "parameters": counts, "dtypes": sorted({d for _, d in entries.values()}),
            "num_layers": tmd_config.num_layers, "head_blocks": tmd_config.head_blocks,
            "tmd_config": tmd_config.to_dict(), "transformer_config": base, "lora": lora,
            "provenance": provenance if isinstance(provenance, dict) else {"value": provenance}}


def load_patch(path) -> Patch:
    """Read a patch file (every key and shape checked; CheckpointError naming the file otherwise)."""
    from .wan_build import build_empty_wan

    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"no patch at {path}: check the file name and folder")
    name, metadata, entries = _header(path)
    tmd_config, base, lora_meta = _configs(name, metadata)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_empty_wan(base).state_dict().items()}
    by_file = {}
    for dkey in shapes:
        for role, fkey in _file_names(dkey).items():
            by_file[fkey] = (dkey, role)
    unknown = [k for k in entries if k not in by_file and not k.startswith(EXTRA_PREFIX)]
    if unknown:
        raise CheckpointError(f"{name} has {len(unknown)} tensors that are not part of a patch for "
                              f"{base['num_layers']}-layer Wan, e.g. {unknown[:3]}: the file is corrupt or was edited")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k).clone() for k in entries}
    except Exception as e:
        raise CheckpointError(f"{name}: tensor data unreadable ({e}); the file may be truncated: extract it again") from e
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if not k.startswith(EXTRA_PREFIX):
            dkey, role = by_file[k]
            parts.setdefault(dkey, {})[role] = v
    lora, full = {}, {}
    for dkey, p in parts.items():
        if "full" in p:
            if set(p) != {"full"} or tuple(p["full"].shape) != shapes[dkey]:
                raise CheckpointError(f"{name}: the difference for {dkey} has shape {tuple(p['full'].shape)} (expected "
                                      f"{shapes[dkey]}) or comes with a LoRA too: the file is corrupt")
            full[dkey] = p["full"].float()
            continue
        if not {"A", "B"} <= set(p):
            raise CheckpointError(f"{name}: the LoRA of {dkey} lacks lora_{'A' if 'A' not in p else 'B'}: the file is "
                                  "corrupt or was cut short; extract it again")
        a, b = p["A"], p["B"]
        out, inner = shapes[dkey][0], int(torch.Size(shapes[dkey][1:]).numel())
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or tuple(b.shape[:1]) + tuple(a.shape[1:]) != (out, inner):
            raise CheckpointError(f"{name}: the LoRA of {dkey} has A {tuple(a.shape)}, B {tuple(b.shape)}; a "
                                  f"{shapes[dkey]} weight needs A [r, {inner}] and B [{out}, r]: the file is corrupt")
        if not (a.isfinite().all() and b.isfinite().all()):
            raise CheckpointError(f"{name}: the LoRA of {dkey} holds NaN or inf: the file is corrupt; extract it again")
        alpha = p.get("alpha")
        scale = 1.0 if alpha is None else float(alpha) / a.shape[0]  # ComfyUI's convention: ΔW = alpha / r · B @ A
        lora[dkey] = (a, b if scale == 1.0 else (b.float() * scale).to(b.dtype))
    extra = {k.removeprefix(EXTRA_PREFIX): v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    try:
        provenance = json.loads(metadata.get("provenance", "{}"))
    except ValueError:
        provenance = {}
    return Patch(tmd_config=tmd_config, base_config=base, rank=int(lora_meta.get("rank", 0)), lora=lora, full=full,
                 extra=extra, provenance=provenance if isinstance(provenance, dict) else {},
                 errors=list(lora_meta.get("errors", [])))


def check_teacher_info(info: dict, name: str, flag: str = "the teacher", error=CheckpointError) -> None:
    """A patch's teacher (or an extraction's) must be a Wan teacher: not a TMD student or patch, not a DMD2-v student."""
    from .loading import not_a_teacher

    what = not_a_teacher(info)
    if what:
        raise error(f"{flag} {name} is {what}, not a Wan teacher: give the teacher the TMD student was distilled from")


def load_patched(patch_path, teacher, dtype: torch.dtype | None = None, device="cpu"):
    """A TMDModel from a patch file and its teacher (a path in any teacher layout, or a loaded model).

    The architectures are compared from the headers before the teacher is loaded."""
    from .loading import describe_checkpoint, load_teacher
    from .patch import apply_patch, check_same_architecture
    from .validation import check_dtype

    dtype = check_dtype("dtype", dtype)
    info = read_patch_info(patch_path)
    name = Path(patch_path).name
    if isinstance(teacher, (str, Path)):
        t_info = describe_checkpoint(teacher)
        check_teacher_info(t_info, Path(teacher).name)
        check_same_architecture(info["transformer_config"], t_info["transformer_config"], name, Path(teacher).name)
        teacher_name = Path(teacher).name
        teacher = load_teacher(teacher, dtype=dtype)
    else:
        teacher_name = "the teacher"
        if dtype is not None:
            teacher = teacher.to(dtype)
    return apply_patch(teacher, load_patch(patch_path), source=name, teacher_name=teacher_name).to(device)
