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

from .errors import CheckpointError, ConfigError
from .loading import read_safetensors_header
from .model import TMDConfig, TMDModel
from .wan_build import build_empty_wan, load_in_place, transformer_config_dict

FORMAT = "tmd/1"
# tmd/1 files without `inner_velocity` in their tmd_config were trained with u = y1 - head (pack 0.1).
LEGACY_INNER_VELOCITY = "y1-head"
PARTS = ("transformer", "fusion", "emb_gap")


def _atomic_write(path, write: Callable[[str], None], mode: int | None = None) -> Path:
    """`write(tmp)` to a temporary file in the same folder, fsync, then rename onto `path`.

    A crash never leaves half a file. The file gets `mode`, or normal permissions (0666 & ~umask;
    mkstemp makes 0600) when None.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
        raise CheckpointError(f"no checkpoint at {path}: check the file name and folder")
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


def read_tmd_info(path) -> dict:
    """Header-only summary of a `tmd/1` file: format, sizes, H/L, trained schedule, provenance."""
    metadata, entries = _open_header(path)
    _check_format(path, metadata, list(entries))
    counts = {p: 0 for p in PARTS}
    dtypes = set()
    for k, (shape, dtype) in entries.items():
        n = 1
        for d in shape:
            n *= d
        counts[k.split(".", 1)[0]] = counts.get(k.split(".", 1)[0], 0) + n
        dtypes.add(dtype)
    tmd_config = json.loads(metadata["tmd_config"])
    tmd_config.setdefault("inner_velocity", LEGACY_INNER_VELOCITY)
    return {
        "path": str(path),
        "format": metadata["format"],
        "file_bytes": Path(path).stat().st_size,
        "parameters": counts,
        "dtypes": sorted(dtypes),
        "num_layers": tmd_config["num_layers"],
        "head_blocks": tmd_config["head_blocks"],
        "tmd_config": tmd_config,
        "transformer_config": json.loads(metadata["transformer_config"]),
        "provenance": json.loads(metadata.get("provenance", "{}")),
    }


def load_tmd(path, dtype: torch.dtype | None = None, device="cpu") -> TMDModel:
    """Load a `tmd/1` checkpoint built on the meta device and filled in place (one copy of the weights).

    Args:
        dtype: convert floating tensors to this dtype (default: keep the stored dtype).
    Returns:
        TMDModel in eval mode on `device`.
    """
    metadata, entries = _open_header(path)
    keys = list(entries)
    _check_format(path, metadata, keys)
    try:
        raw = json.loads(metadata["tmd_config"])
        raw.setdefault("inner_velocity", LEGACY_INNER_VELOCITY)  # files written before it was recorded
        tcfg = TMDConfig.from_dict(raw)
        tr_cfg = json.loads(metadata["transformer_config"])
    except ConfigError as e:
        raise CheckpointError(f"{Path(path).name}: {e}") from e
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{Path(path).name}: broken tmd_config/transformer_config metadata ({e})") from e
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
