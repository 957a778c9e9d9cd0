"""Load a Wan2.1 teacher (docs/design.md §3) from any supported file layout into diffusers' model.

Layouts: original/ComfyUI single `.safetensors` (optionally under `model.diffusion_model.`),
diffusers single `.safetensors`, diffusers folders (`config.json` + one or more shards). The model
is built on the meta device and the file's tensors are assigned in place, so one copy of the
weights exists: with the stored dtype on CPU the parameters are safetensors' memory maps of the
file (pages are read on first use and shared with the page cache). Do not overwrite or truncate a
checkpoint file while a model loaded from it is alive.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, CheckpointNotFoundError, InputError
from .layouts import (
    CONFIG_FIELDS,
    SHAPE_FIELDS,
    check_supported_variant,
    detect_layout,
    diffusers_to_original_state_dict,
    infer_wan_config,
    normalize_config,
    not_wan_message,
    original_to_diffusers_state_dict,
    strip_comfy_prefix,
)
from .wan_build import rebuild_rope

__all__ = [
    "load_teacher", "teacher_from_state_dict", "detect_checkpoint_kind", "teacher_sha256",
    "read_safetensors_header", "sidecar_config_path", "infer_wan_config", "describe_checkpoint",
    "original_to_diffusers_state_dict", "diffusers_to_original_state_dict",
]

KINDS = ("wan-original", "wan-diffusers", "wan-diffusers-folder", "tmd", "tmd-patch")
DMD_FORMAT = "wan-dmd"  # metadata `format` of a DMD2-v student: a plain Wan file, but no teacher (docs/design.md §4)


def not_a_teacher(info: Mapping[str, Any]) -> str | None:
    """What a checkpoint is when it is no Wan teacher ("a TMD student", "a TMD patch", "a DMD2-v student"), from
    `describe_checkpoint`'s header info; None for a teacher. Every place that takes a teacher by name asks this."""
    what = {"tmd": "a TMD student", "tmd-patch": "a TMD patch"}.get(info["kind"])
    return what or ("a DMD2-v student" if info.get("format") == DMD_FORMAT else None)
_FLOAT8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))
# Keys of ComfyUI's "scaled fp8" files that only describe the quantisation.
_FP8_EXTRA_SUFFIXES = (".scale_weight", ".scale_input")
_FP8_MARKER = "scaled_fp8"
_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_IGNORED_UNEXPECTED = ("norm_added_q",)  # diffusers' own _keys_to_ignore_on_load_unexpected


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------

def read_safetensors_header(path: str | Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str]]:
    """Read a safetensors header without touching the tensor data.

    Returns:
        ({key: (shape, dtype name)}, metadata dict). Raises CheckpointError for a truncated,
        corrupt or non-safetensors file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            entries = {}
            for k in f.keys():
                s = f.get_slice(k)
                entries[k] = (tuple(s.get_shape()), s.get_dtype())
            return entries, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own SafetensorError (not an OSError subclass)
        raise _corrupt(path, e) from e


def _corrupt(path: str | Path, e: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable .safetensors file ({type(e).__name__}: {e}): it is truncated or "
        f"corrupt, or not in safetensors format. Re-download or re-save it."
    )


def _open_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of `files` as safetensors' memory-mapped CPU views (no data is read yet)."""
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for k in f.keys():
                    if k in tensors:
                        raise CheckpointError(
                            f"weight {k!r} appears in two shards ({file.name} and another): the folder "
                            f"mixes two checkpoints. Keep one set of shards."
                        )
                    tensors[k] = f.get_tensor(k)
        except CheckpointError:
            raise
        except Exception as e:
            raise _corrupt(file, e) from e
    return tensors


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise CheckpointNotFoundError(
            f"checkpoint not found: {path} (expected a .safetensors file, a TMD student or a Wan teacher, or a "
            f"diffusers folder with config.json). Check the path; ComfyUI keeps TMD students in models/tmd and Wan "
            f"files in models/diffusion_models."
        )


def _diffusers_folder(path: Path) -> Path | None:
    """The folder holding the transformer's config.json: `path` or its `transformer/` subfolder."""
    for folder in (path, path / "transformer"):
        if (folder / "config.json").is_file():
            return folder
    return None


def _folder_weight_files(folder: Path) -> list[Path]:
    index = folder / _INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{index} is not a valid shard index ({e}); expected JSON with a 'weight_map'. "
                f"Re-download the folder."
            ) from e
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(
                f"{folder} is missing shards {missing[:3]} listed in {_INDEX_NAME}: the download is "
                f"incomplete. Fetch the missing files."
            )
        return files
    single = folder / "diffusion_pytorch_model.safetensors"
    if single.is_file():
        return [single]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        hint = f" (found {pickles[:3]}: pickled weights are never loaded, convert them)" if pickles else ""
        raise CheckpointError(
            f"diffusers folder {folder} has no .safetensors weights{hint}; expected "
            f"diffusion_pytorch_model*.safetensors next to config.json."
        )
    return files


def _read_folder_config(folder: Path) -> dict:
    file = folder / "config.json"
    try:
        raw = json.loads(file.read_text())
    except ValueError as e:
        raise CheckpointError(f"{file} is not valid JSON ({e}); re-download the folder.") from e
    cls = raw.get("_class_name", "WanTransformer3DModel")
    if cls != "WanTransformer3DModel":
        raise CheckpointError(
            f"{folder} holds a {cls}, not a WanTransformer3DModel: point at a Wan2.1 transformer folder "
            f"(a pipeline's transformer/ subfolder)."
        )
    return normalize_config(raw, source=str(file))


def sidecar_config_path(path: str | Path) -> Path:
    """Where an optional config for a single-file checkpoint lives: `<stem>.config.json` beside it."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + ".config.json")


def _read_sidecar(path: Path) -> dict | None:
    side = sidecar_config_path(path)
    if not side.is_file():
        return None
    try:
        raw = json.loads(side.read_text())
    except ValueError as e:
        raise CheckpointError(f"config sidecar {side} is not valid JSON ({e}); fix or delete it.") from e
    return normalize_config(raw, source=str(side))


# ---------------------------------------------------------------------------------------------
# Kinds and provenance
# ---------------------------------------------------------------------------------------------

def detect_checkpoint_kind(path: str | Path) -> str:
    """Classify a checkpoint path without reading tensor data.

    Returns:
        "wan-original" (original/ComfyUI keys), "wan-diffusers" (diffusers keys, one file),
        "wan-diffusers-folder" (config.json + shards), "tmd" (a TMD student, format "tmd/N") or "tmd-patch" (a
        TMD patch: format "tmd/N", kind "patch", docs/patches.md).
        Raises CheckpointNotFoundError (a CheckpointError and a FileNotFoundError) for a missing path,
        CheckpointError for anything else.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        folder = _diffusers_folder(path)
        if folder is None:
            raise CheckpointError(
                f"{path} is a folder without config.json: expected a diffusers Wan transformer folder "
                f"(config.json + diffusion_pytorch_model*.safetensors) or a pipeline with transformer/. "
                f"Point at the .safetensors file for single-file checkpoints."
            )
        _read_folder_config(folder)
        _folder_weight_files(folder)
        return "wan-diffusers-folder"
    if path.suffix in _PICKLE_SUFFIXES or path.suffix == ".gguf":
        raise CheckpointError(
            f"{path.name} is a {path.suffix} file; only .safetensors checkpoints are loaded (pickles are "
            f"never unpickled, GGUF is not supported). Use the .safetensors release of the model."
        )
    entries, metadata = read_safetensors_header(path)
    if metadata.get("format", "").startswith("tmd/"):
        return "tmd-patch" if metadata.get("kind") == "patch" else "tmd"
    layout = detect_layout(entries)
    if layout == "tmd":
        return "tmd"
    if layout is None:
        raise CheckpointError(not_wan_message(str(path), entries))
    return "wan-original" if layout == "original" else "wan-diffusers"


def teacher_sha256(path: str | Path, chunk_bytes: int = 16 << 20) -> str:
    """SHA-256 (hex) of a checkpoint, streamed; for a folder, over its config and weight files.

    A folder's digest hashes, in sorted order, each file's name followed by its bytes.
    """
    path = Path(path)
    _check_exists(path)
    digest = hashlib.sha256()
    if path.is_dir():
        folder = _diffusers_folder(path) or path
        files = sorted([folder / "config.json", *_folder_weight_files(folder)])
    else:
        files = [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(chunk_bytes):
                digest.update(chunk)
    return digest.hexdigest()


def describe_checkpoint(path: str | Path) -> dict:
    """Header-only facts of any checkpoint this package reads (no tensor data is read).

    A `tmd` file gives `read_tmd_info`'s record. A Wan file (a teacher, or a DMD2-v student saved by
    `tmd distill`) gives: path, kind, format (the file's metadata `format`, or its layout), file_bytes,
    parameters ({"transformer": n}), dtypes, num_layers, transformer_config (config.json, sidecar, or
    inferred from the shapes, as load_teacher decides) and provenance (a DMD2-v student's, else {}).
    """
    path = Path(path)
    kind = detect_checkpoint_kind(path)
    if kind == "tmd":
        from .checkpoint import read_tmd_info

        return read_tmd_info(path)
    if kind == "tmd-patch":
        from .patch_file import read_patch_info

        return read_patch_info(path)
    if kind == "wan-diffusers-folder":
        folder = _diffusers_folder(path)
        file_config, files = _read_folder_config(folder), _folder_weight_files(folder)
    else:
        file_config, files = _read_sidecar(path) or {}, [path]
    entries: dict[str, tuple[tuple[int, ...], str]] = {}
    metadata: dict[str, str] = {}
    for file in files:
        e, m = read_safetensors_header(file)
        entries.update(e)
        metadata = metadata or m
    sd = strip_comfy_prefix(entries)
    check_supported_variant(sd, str(path))
    config = dict(file_config)
    if not all(k in config for k in SHAPE_FIELDS):
        config = {**infer_wan_config({k: v[0] for k, v in entries.items()}, config.get("num_attention_heads")), **config}
    try:
        provenance = json.loads(metadata.get("provenance", "{}"))
    except ValueError:
        provenance = {"unreadable": metadata["provenance"][:80]}
    n = 0
    for shape, _ in sd.values():
        k = 1
        for d in shape:
            k *= d
        n += k
    return {
        "path": str(path), "kind": kind, "format": metadata.get("format") or kind,
        "file_bytes": sum(f.stat().st_size for f in files), "parameters": {"transformer": n},
        "dtypes": sorted({d for _, d in sd.values()}), "num_layers": config["num_layers"],
        "transformer_config": config, "provenance": provenance if isinstance(provenance, dict) else {},
    }


# ---------------------------------------------------------------------------------------------
# Building the model
# ---------------------------------------------------------------------------------------------

def load_teacher(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    config: Mapping[str, Any] | None = None,
):
    """Load a Wan2.1 transformer from any supported layout as diffusers' `WanTransformer3DModel`.

    Args:
        path: an original/ComfyUI or diffusers `.safetensors` file, or a diffusers folder.
        dtype: parameter dtype; None keeps the stored one (see `teacher_from_state_dict`).
        device: where the parameters live.
        config: config fields that win over the file's (e.g. {"num_attention_heads": 2} for models
            whose heads are not 128 wide). Otherwise: a folder's config.json, else a
            `<stem>.config.json` sidecar (`sidecar_config_path`), else inference from the shapes.
    Returns:
        The model in eval mode, with real rope buffers.
    """
    from .validation import check_dtype

    dtype = check_dtype("dtype", dtype)
    path = Path(path)
    kind = detect_checkpoint_kind(path)
    if kind == "tmd":
        raise CheckpointError(
            f"{path.name} is a TMD checkpoint (format 'tmd/...'), not a plain Wan teacher: load it with "
            f"tmd_core.load_tmd (ComfyUI: TMDModelLoader), or pass the teacher's own Wan file."
        )
    if kind == "tmd-patch":
        raise CheckpointError(
            f"{path.name} is a TMD patch, not a plain Wan teacher: pass the teacher's own Wan file, and the patch "
            f"beside it (tmd_core.load_patched(patch, teacher))."
        )
    if kind == "wan-diffusers-folder":
        folder = _diffusers_folder(path)
        file_config, files = _read_folder_config(folder), _folder_weight_files(folder)
    else:
        file_config, files = _read_sidecar(path), [path]
    merged = {**(file_config or {}), **_check_config_arg(config)}
    state_dict = _open_tensors(files)
    return teacher_from_state_dict(state_dict, config=merged, dtype=dtype, device=device, source=str(path))


def _check_config_arg(config: Mapping[str, Any] | None) -> dict:
    if config is None:
        return {}
    unknown = sorted(k for k in config if k not in CONFIG_FIELDS)
    if unknown:
        raise InputError(
            f"config has fields {unknown} that WanTransformer3DModel does not take; "
            f"expected some of {list(CONFIG_FIELDS)}."
        )
    return normalize_config(config)


def teacher_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    source: str = "the state dict",
):
    """Build a `WanTransformer3DModel` around existing tensors (original or diffusers keys).

    This is also the path for a native ComfyUI MODEL (`diffusion_model.`-prefixed original keys).
    The tensors are used in place when dtype and device already match (no copy).

    Args:
        state_dict: key -> tensor, either layout, optionally ComfyUI-prefixed. ComfyUI's scaled-fp8
            files are dequantised (weight * scale_weight).
        config: config fields that win over inference from the shapes.
        dtype: parameter dtype. None keeps the stored dtype: the dtype holding most elements (files
            are uniform in practice; a mixed file is made uniform, because a Linear cannot mix a bf16
            weight with an fp32 bias), fp8 counting as bfloat16, which fp8 weights dequantise to.
            diffusers' `_keep_in_fp32_modules` is deliberately not applied: one dtype keeps memory
            at the weight bytes, matches how ComfyUI runs Wan, and the forward computes norms and
            modulation in fp32 anyway.
        device: target device.
        source: names the origin in error messages.
    """
    from diffusers import WanTransformer3DModel

    layout = detect_layout(state_dict)
    if layout == "tmd":
        raise CheckpointError(f"{source} holds a TMD model (transformer.*, fusion.*): load it with load_tmd.")
    if layout is None:
        raise CheckpointError(not_wan_message(source, state_dict))
    sd = strip_comfy_prefix(state_dict)
    check_supported_variant(sd, source)
    if layout == "original":
        sd = original_to_diffusers_state_dict(sd)
    sd = _dequantize_fp8(sd)

    config = _check_config_arg(config)
    if not all(k in config for k in SHAPE_FIELDS):
        config = {**infer_wan_config(sd, config.get("num_attention_heads")), **config}
    _check_heads(config)
    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    expected = _check_keys_and_shapes(model, sd, source)

    if dtype is None:
        dtype = _stored_dtype(sd)
    device = torch.device(device)
    sd = {k: v.to(device=device, dtype=dtype) for k, v in sd.items() if k in expected}
    model.load_state_dict(sd, strict=True, assign=True)
    rebuild_rope(model, device)
    return model.eval()


def _check_heads(config: Mapping[str, Any]) -> None:
    heads, head_dim = config.get("num_attention_heads"), config.get("attention_head_dim")
    if heads and head_dim and head_dim % 2:
        raise CheckpointError(
            f"attention_head_dim={head_dim} is odd; Wan's rotary embedding needs an even head size. "
            f"Choose num_attention_heads so that width / heads is even."
        )


def _expected_keys(model) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in model.state_dict().items()}


def _check_keys_and_shapes(model, sd: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Size]:
    """Raise CheckpointError unless `sd` holds exactly the model's weights; returns key -> shape."""
    expected = _expected_keys(model)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(k for k in set(sd) - set(expected) if not any(i in k for i in _IGNORED_UNEXPECTED))
    cfg = model.config
    summary = f"a {cfg.num_layers}-layer, {cfg.num_attention_heads * cfg.attention_head_dim}-wide Wan model"
    if missing:
        raise CheckpointError(
            f"{source} lacks {len(missing)} of the {len(expected)} weights of {summary}, e.g. {missing[:4]}: "
            f"the file is incomplete or a different Wan variant. Re-download it, or pass a config that fits."
        )
    if unexpected:
        raise CheckpointError(
            f"{source} has {len(unexpected)} weights that {summary} does not use, e.g. {unexpected[:4]}: "
            f"it is a different Wan variant or holds extra modules. Use a plain Wan2.1 T2V/I2V transformer."
        )
    wrong = [(k, tuple(sd[k].shape), tuple(s)) for k, s in expected.items() if tuple(sd[k].shape) != tuple(s)]
    if wrong:
        details = ", ".join(f"{k}: file {a}, model {b}" for k, a, b in wrong[:3])
        raise CheckpointError(
            f"{source} does not fit the config {dict(cfg)}: {len(wrong)} weights have other shapes "
            f"({details}). Fix the config (argument, config.json or sidecar) or leave it to inference."
        )
    return expected


def _dequantize_fp8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo ComfyUI's fp8 storage: weight * scale_weight (scaled files), plain upcast otherwise."""
    if not any(v.dtype in _FLOAT8 for v in sd.values()):
        return sd
    out = {}
    for k, v in sd.items():
        if k == _FP8_MARKER or k.endswith(_FP8_EXTRA_SUFFIXES):
            continue
        if v.dtype in _FLOAT8:
            scale = sd.get(k.removesuffix(".weight") + ".scale_weight")
            v = v.to(torch.bfloat16)
            if scale is not None:
                v = v * scale.to(torch.bfloat16)
        out[k] = v
    return out


def _stored_dtype(sd: Mapping[str, torch.Tensor]) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for v in sd.values():
        if v.is_floating_point():
            counts[v.dtype] = counts.get(v.dtype, 0) + v.numel()
    return max(counts, key=counts.get) if counts else torch.float32

