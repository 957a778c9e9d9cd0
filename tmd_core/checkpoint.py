"""The `tmd/1` checkpoint: one safetensors file with the student and its settings (docs/design.md §4)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CheckpointError, CheckpointNotFoundError, ConfigError, InputError
from .loading import read_safetensors_header
from .model import TMDConfig, TMDModel
from .transition import INNER_VELOCITY
from .validation import check_dtype
from .wan_build import build_empty_wan, load_in_place, transformer_config_dict

FORMAT = "tmd/1"
# tmd/1 files without `inner_velocity` in their tmd_config were trained with u = y1 - head (pack 0.1).
LEGACY_INNER_VELOCITY = "y1-head"
PARTS = ("transformer", "fusion", "emb_gap")


TMP_SUFFIX = ".tmp"  # temporaries of the atomic writer: `.<name>.<random>.tmp` beside the file they become


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the atomic writers' leftovers (`.<name>.<random>.tmp[.<suffix>]`) in `folder`: what a process killed during a
    write leaves. Call it when a run starts in a folder it owns (no other writer is active there).

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.glob(".*"):  # `.x.safetensors.ab12.tmp`, and videos' `.x.mp4.ab12.tmp.mp4`
        if p.is_file() and TMP_SUFFIX in p.suffixes[-2:]:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _atomic_write(path, write: Callable[[str], None], mode: int | None = None) -> Path:
    """`write(tmp)` to a temporary file in the same folder, fsync, then rename onto `path`.

    A crash never leaves half a file. The file gets `mode`, or normal permissions (0666 & ~umask;
    mkstemp makes 0600) when None.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        write(tmp)
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save_safetensors(tensors: dict, path, metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (temporary file, fsync, rename): the one writer of tensors."""
    _atomic_write(path, lambda tmp: save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                                              metadata=metadata))


def atomic_write_text(path, text: str) -> Path:
    """Write a text file (UTF-8) atomically (temporary file, fsync, rename): the one writer of text and JSON."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return _atomic_write(path, write)


def install_checkpoint(src, dst) -> Path:
    """Copy a finished checkpoint into a model folder atomically, keeping its permissions."""

    def copy(tmp: str) -> None:
        with open(tmp, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, 16 << 20)

    return _atomic_write(dst, copy, os.stat(src).st_mode & 0o777)


def save_tmd(model: TMDModel, path, provenance: dict | None = None) -> Path:
    """Save a TMDModel as `tmd/1` (tensors transformer.*, fusion.*, emb_gap.*; JSON metadata).

    Args:
        provenance: JSON-able facts (teacher file and sha256, stages, iterations); the package version is added.
    Returns:
        The path written.
    """
    from .version import __version__

    prov = {"package": "comfyui-tmd", "version": __version__, **(provenance or {})}
    metadata = {
        "format": FORMAT,
        "tmd_config": json.dumps(model.tmd_config.to_dict()),
        "transformer_config": json.dumps(transformer_config_dict(model.transformer)),
        "provenance": json.dumps(prov, default=str),
    }
    atomic_save_safetensors(model.state_dict(), path, metadata)
    return Path(path)


def _open_header(path) -> tuple[dict, dict[str, tuple[tuple[int, ...], str]]]:
    """(metadata, {key: (shape, dtype name)}) of a checkpoint file, read without its tensors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"no checkpoint at {path}: check the file name and folder")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; a TMD checkpoint is a single .safetensors file")
    try:
        entries, metadata = read_safetensors_header(path)
    except CheckpointError as e:
        raise CheckpointError(
            f"{path.name} is not a readable safetensors file ({e.__cause__}); it may be truncated or corrupt: "
            "download or copy it again"
        ) from e
    return metadata, entries


def _check_format(path, metadata: dict, keys: list[str]) -> None:
    fmt = metadata.get("format")
    if fmt == FORMAT and metadata.get("kind") == "patch":  # docs/patches.md
        raise CheckpointError(
            f"{Path(path).name} is a TMD patch (the student's changes to its teacher), not a full student: load it "
            "together with its teacher (tmd_core.load_patched(patch, teacher); tmd generate PATCH --teacher T)"
        )
    if fmt == FORMAT:
        return
    if fmt and fmt.startswith("tmd/"):
        raise CheckpointError(
            f"{Path(path).name} has format {fmt!r}; this version of the pack reads {FORMAT!r}: update the pack"
        )
    looks_wan = any(k.endswith("patch_embedding.weight") for k in keys)
    if looks_wan:
        raise CheckpointError(
            f"{Path(path).name} is a plain Wan transformer, not a TMD checkpoint: load it as a teacher "
            "(tmd_core.load_teacher, or TMDModelLoader with head_blocks to build an untrained student)"
        )
    raise CheckpointError(
        f"{Path(path).name} is not a TMD checkpoint (metadata format={fmt!r}, expected {FORMAT!r} "
        "with tensors transformer.*, fusion.*, emb_gap.*)"
    )


def _block_count(keys) -> int:
    """Number of transformer blocks a tmd/1 file holds (`transformer.blocks.<i>.`)."""
    ids = {k.split(".")[2] for k in keys if k.startswith("transformer.blocks.")}
    return len({i for i in ids if i.isdigit()})


def _parse_metadata(path, metadata: dict, keys: list[str]) -> tuple[dict, dict]:
    """(tmd_config, transformer_config) of a tmd/1 file, checked: CheckpointError for missing, broken or
    impossible values (head_blocks outside 1..L-1, a layer count that differs from the blocks stored)."""
    name = Path(path).name
    parsed = {}
    for field in ("tmd_config", "transformer_config"):
        if field not in metadata:
            raise CheckpointError(f"{name} has no {field} metadata: it was not written by save_tmd or was cut short; "
                                  "re-save or re-download it")
        try:
            parsed[field] = json.loads(metadata[field])
        except ValueError as e:
            raise CheckpointError(f"{name}: its {field} metadata is not valid JSON ({e}): the file is corrupt; "
                                  "re-save or re-download it") from e
        if not isinstance(parsed[field], dict):
            raise CheckpointError(f"{name}: its {field} metadata must be a JSON object, got {metadata[field][:60]!r}: "
                                  "the file is corrupt; re-save or re-download it")
    tmd_config, tr_config = parsed["tmd_config"], parsed["transformer_config"]
    missing = [k for k in ("num_layers", "head_blocks") if k not in tmd_config]
    if missing:
        raise CheckpointError(f"{name}: its tmd_config metadata lacks {', '.join(missing)}: the file is corrupt or was "
                              "edited; re-save or re-download it")
    tmd_config.setdefault("inner_velocity", LEGACY_INNER_VELOCITY)  # files written before it was recorded
    try:  # every field but the inner-velocity reading (an old reading is reported, and refused by load_tmd)
        TMDConfig.from_dict({**tmd_config, "inner_velocity": INNER_VELOCITY})
    except (ConfigError, InputError, TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: its tmd_config metadata is impossible ({e}): the file is corrupt or was "
                              "edited; re-save or re-download it") from e
    blocks = _block_count(keys)
    layers = {"tmd_config.num_layers": tmd_config["num_layers"],
              "transformer_config.num_layers": tr_config.get("num_layers"), "stored blocks": blocks}
    if len(set(layers.values())) != 1:
        raise CheckpointError(f"{name}: its layer counts disagree ({', '.join(f'{k} {v}' for k, v in layers.items())}): "
                              "the metadata does not describe the weights; re-save or re-download the file")
    return tmd_config, tr_config


def read_tmd_info(path) -> dict:
    """Header-only summary of a `tmd/1` file: format, sizes, H/L, trained schedule, provenance.

    The metadata is checked (CheckpointError for a missing, broken or impossible tmd_config); an old
    inner-velocity reading is reported as it is (`tmd_config.inner_velocity`), not refused.
    """
    metadata, entries = _open_header(path)
    _check_format(path, metadata, list(entries))
    tmd_config, tr_config = _parse_metadata(path, metadata, list(entries))
    counts = {p: 0 for p in PARTS}
    dtypes = set()
    for k, (shape, dtype) in entries.items():
        n = 1
        for d in shape:
            n *= d
        counts[k.split(".", 1)[0]] = counts.get(k.split(".", 1)[0], 0) + n
        dtypes.add(dtype)
    try:
        provenance = json.loads(metadata.get("provenance", "{}"))
    except ValueError:
        provenance = {"unreadable": metadata["provenance"][:80]}
    return {
        "path": str(path),
        "kind": "tmd",
        "format": metadata["format"],
        "file_bytes": Path(path).stat().st_size,
        "parameters": counts,
        "dtypes": sorted(dtypes),
        "num_layers": tmd_config["num_layers"],
        "head_blocks": tmd_config["head_blocks"],
        "tmd_config": tmd_config,
        "transformer_config": tr_config,
        "provenance": provenance if isinstance(provenance, dict) else {"value": provenance},
    }


def load_tmd(path, dtype: torch.dtype | None = None, device="cpu") -> TMDModel:
    """Load a `tmd/1` checkpoint built on the meta device and filled in place (one copy of the weights).

    Args:
        dtype: convert floating tensors to this dtype (default: keep the stored dtype).
    Returns:
        TMDModel in eval mode on `device`.
    """
    dtype = check_dtype("dtype", dtype)
    metadata, entries = _open_header(path)
    keys = list(entries)
    _check_format(path, metadata, keys)
    raw, tr_cfg = _parse_metadata(path, metadata, keys)
    try:
        tcfg = TMDConfig.from_dict(raw)
    except ConfigError as e:  # an old inner-velocity reading
        raise CheckpointError(f"{Path(path).name}: {e}") from e
    with torch.device("meta"):
        transformer = build_empty_wan(tr_cfg)
        model = TMDModel(transformer, tcfg)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            # an owned, allocator-aligned copy per tensor: tensors viewing the file's buffer can be
            # misaligned, which changes CPU SIMD paths and so the last bits of the outputs
            sd = {k: f.get_tensor(k).clone() for k in keys}
    except Exception as e:
        raise CheckpointError(f"{Path(path).name}: tensor data unreadable ({e}); the file may be truncated") from e
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    load_in_place(model, sd, what=Path(path).name)
    return model.to(device).eval()
