"""The one validation layer: every user-facing input is checked here before anything heavy is loaded or sampled.

The command line, the public API, the ComfyUI nodes and the training config all call these checks
(`tmd distill --dry-run` and `tmd generate --dry-run` run exactly them). Each check names the input the
way its caller spells it (`--outer-steps`, `outer_steps`, `stage1.lr`), says what range it accepts and
what to do, and raises a TMDError subclass, so the CLI prints one line instead of a traceback
(docs/errors.md lists the messages).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .errors import InputError, NonFiniteError

# User-facing noise seeds. torch's CPU generator keeps only the low 32 bits of a seed (seeds that differ by a
# multiple of 2**32 give the same noise, as in ComfyUI's own KSampler), so larger seeds are refused rather
# than silently repeating the noise of a smaller one.
SEED_MAX = 2**32 - 1
MAX_STEPS = 1000  # outer/inner/teacher steps accepted from users
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "float": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}


def _got(value) -> str:
    return repr(value)


def _then(hint: str) -> str:
    return f": {hint}" if hint else ""


# ----------------------------------------------------------------------------------------- scalars


def check_int(name: str, value, lo: int | None = None, hi: int | None = None, hint: str = "", error=InputError) -> int:
    """`value` as an int in [lo, hi]; bools, non-integral numbers, NaN and strings are refused."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and int(value) == value
    if ok:
        value = int(value)
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        if lo is not None and hi is not None:
            span = f" from {lo} to {hi}"
        else:
            span = f" >= {lo}" if lo is not None else (f" <= {hi}" if hi is not None else "")
        raise error(f"{name} must be an integer{span}, got {_got(value)}{_then(hint)}")
    return value


def check_float(name: str, value, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False, hint: str = "", error=InputError) -> float:
    """`value` as a finite float in the interval lo..hi (open ends where asked); NaN and inf are refused."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        span = " and ".join(parts)
        raise error(f"{name} must be a finite number{' ' + span if span else ''}, got {_got(value)}{_then(hint)}")
    return float(value)


def check_choice(name: str, value, choices, hint: str = "", error=InputError):
    if value not in tuple(choices):
        raise error(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}{_then(hint)}")
    return value


def check_seed(name: str, seed, count: int = 1, error=InputError) -> int:
    """A noise seed: an integer in 0..2**32-1 (with `count` seeds seed .. seed+count-1 all inside)."""
    hi = SEED_MAX - (count - 1)
    large = not isinstance(seed, bool) and isinstance(seed, int) and seed > hi
    hint = ("torch's CPU generator uses 32 bits of a seed, so a larger seed would repeat the noise of a smaller one"
            + (f" (the {count} samples use seed .. seed + {count - 1})" if count > 1 else "") + "; pick a seed in "
            "that range") if large else ""
    return check_int(name, seed, 0, hi, error=error, hint=hint)


def check_dtype(name: str, dtype) -> torch.dtype | None:
    """None, a floating torch.dtype, or one of the names in DTYPES ("fp32", "bf16", "fp16", ...)."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise InputError(f"{name} must be None (keep the stored dtype), a floating torch.dtype or one of "
                     f"{', '.join(DTYPES)}, got {dtype!r}")


# ----------------------------------------------------------------------------------------- paths


def check_input_file(name: str, path, what: str = "file", error=InputError) -> Path:
    """An existing, readable file (not a folder)."""
    if path is None or str(path).strip() == "":
        raise error(f"{name} is empty: give the path of the {what}")
    p = Path(path).expanduser()
    if not p.exists():
        raise error(f"{name}: no {what} at {p}: check the path")
    if p.is_dir():
        raise error(f"{name}: {p} is a folder, expected a {what}")
    if not os.access(p, os.R_OK):
        raise error(f"{name}: {p} is not readable: check its permissions")
    return p


def check_safetensors_file(name: str, path, what: str = "safetensors file", error=InputError):
    """An existing .safetensors file whose header reads. Returns ({key: (shape, dtype)}, metadata).

    Pickles are refused by their suffix and by their content, and never unpickled."""
    from .loading import read_safetensors_header

    p = check_input_file(name, path, what, error)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise error(f"{name}: {p.name} is a pickle ({p.suffix}); only .safetensors files are read (pickles are never "
                    "unpickled): save the tensors with safetensors.torch.save_file")
    if p.stat().st_size == 0:
        raise error(f"{name}: {p} is empty (0 bytes), expected a {what}")
    try:
        return read_safetensors_header(p)
    except Exception as e:  # CheckpointError from the header reader
        raise error(f"{name}: {p.name} is not a readable safetensors file (truncated, corrupt, a pickle or another "
                    f"format), expected a {what}") from e


def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_folder(name: str, path, error=InputError) -> Path:
    """A folder that exists and is writable, or can be created inside a writable folder."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise error(f"{name}: {p} is a file, expected a folder: choose another path")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise error(f"{name}: {p} cannot be created because {base} is a file: choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise error(f"{name}: {base} is not writable (read-only file system or no permission): choose a writable folder")
    return p


def check_output_file(name: str, path, *, force: bool = False, force_hint: str = "pass --force to replace it",
                      error=InputError) -> Path:
    """A file path that can be written: not a folder, in a writable (or creatable) folder, and new unless `force`."""
    if path is None or str(path).strip() == "":
        raise error(f"{name} is empty: give a file name to write")
    p = Path(path).expanduser()
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise error(f"{name}: {p} is a folder, expected a file name to write")
    if p.exists() and not force:
        raise error(f"{name}: {p} already exists: {force_hint}, or choose another name")
    if p.exists() and not os.access(p, os.W_OK):
        raise error(f"{name}: {p} exists and is read-only: choose another name")
    check_output_folder(name, p.parent, error)
    return p


# ----------------------------------------------------------------------------------------- sizes and memory


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else physical memory; None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def parse_shape(name: str, text: str, rank: int = 4, labels: str = "C,F,H,W") -> tuple[int, ...]:
    """"16,3,8,8" -> (16, 3, 8, 8): `rank` positive integers."""
    try:
        shape = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        shape = ()
    if len(shape) != rank or any(v < 1 for v in shape):
        raise InputError(f"{name} must be {rank} positive integers {labels}, got {text!r}")
    return shape


def sampling_bytes(config, batch: int, shape) -> int:
    """A lower bound on the memory sampling a latent [batch, *shape] takes: latents plus one block's activations."""
    c, f, h, w = shape
    pt, ph, pw = config["patch_size"]
    tokens = max(1, (f // pt) * (h // ph) * (w // pw))
    width = config["num_attention_heads"] * config["attention_head_dim"]
    latent = batch * c * f * h * w * 4
    return 8 * latent + batch * tokens * (6 * width + config["ffn_dim"]) * 4


def check_latent_shape(name: str, shape, config: dict, batch: int = 1) -> tuple[int, ...]:
    """A (C, F, H, W) latent that fits a Wan transformer `config` (dict) and this machine's memory."""
    c, f, h, w = shape
    if c != config["in_channels"]:
        raise InputError(f"{name}: the model has {config['in_channels']} latent channels, {name} has {c}: use "
                         f"{config['in_channels']},F,H,W")
    pt, ph, pw = config["patch_size"]
    if f % pt or h % ph or w % pw:
        raise InputError(f"{name}: frames/height/width {f}x{h}x{w} must be multiples of the patch size {pt}x{ph}x{pw}")
    need, have = sampling_bytes(config, batch, shape), available_memory_bytes()
    if have is not None and need > have:
        raise InputError(f"{name}: a latent of {batch}x{c}x{f}x{h}x{w} needs at least {need / 2**30:.1f} GiB to "
                         f"sample, this machine has {have / 2**30:.1f} GiB available: make it smaller")
    return tuple(shape)


# ----------------------------------------------------------------------------------------- tensors


def check_finite(name: str, x: torch.Tensor, hint: str = "") -> torch.Tensor:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(f"{name} holds {bad} NaN/inf values of {x.numel()}, expected finite numbers{_then(hint)}")
    return x


def check_latent_and_context(config, x: torch.Tensor, context: torch.Tensor, what: str = "latent",
                             context_name: str = "the text context") -> None:
    """Raise InputError unless `x` (Tensor[B, C, F, H, W]) and `context` (Tensor[B', L, text_dim]) fit `config`.

    Args:
        config: the transformer's config (in_channels, text_dim, patch_size).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(
            f"the {what} must be 5-D [batch, channels, frames, height, width], got {shape}: "
            "pass a video latent (e.g. from EmptyHunyuanLatentVideo), not an image latent"
        )
    c = config.in_channels
    if x.shape[1] != c:
        raise InputError(
            f"the model has {c} latent channels, the {what} has {x.shape[1]}: "
            f"use a latent made for this model (Wan2.1 VAE latents have 16 channels)"
        )
    p_t, p_h, p_w = config.patch_size
    f, h, w = x.shape[2:]
    if f % p_t or h % p_h or w % p_w or min(f, h, w) < 1:
        raise InputError(
            f"{what} frames/height/width {f}x{h}x{w} must be positive multiples of the patch size {p_t}x{p_h}x{p_w}"
        )
    if not isinstance(context, torch.Tensor) or context.ndim != 3:
        shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
        raise InputError(f"{context_name} must be 3-D [batch, tokens, width], got {shape}")
    if context.shape[-1] != config.text_dim:
        raise InputError(
            f"the model expects text embeddings of width {config.text_dim}, {context_name} has width "
            f"{context.shape[-1]}: encode the prompt with the text encoder this model was trained with "
            "(umt5-xxl, 4096, for Wan2.1)"
        )
    if context.shape[0] not in (1, x.shape[0]):
        raise InputError(f"{context_name} has batch {context.shape[0]}, the {what} has batch {x.shape[0]}: give one "
                         "context, or one per latent")
    if context.shape[1] < 1:
        raise InputError(f"{context_name} has 0 tokens: encode a prompt (an empty prompt is one all-zero token)")
    check_finite(f"the {what} (noise)", x, "draw it with make_noise")
    check_finite(context_name, context, "re-encode the prompt; the embeddings file may be corrupt")


def non_finite_cause(modules: dict, inputs: dict) -> str:
    """The likely cause of a NaN/inf result: a non-finite input, else the first weight that is not finite.

    Args:
        modules: name -> nn.Module whose parameters fed the computation.
        inputs: name -> Tensor or float fed to it.
    """
    for name, v in inputs.items():
        t = v if isinstance(v, torch.Tensor) else torch.tensor(float(v))
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"the input {name} is not finite"
    for mname, module in modules.items():
        for pname, p in list(module.named_parameters()) + list(module.named_buffers()):
            if p.is_floating_point() and p.device.type != "meta" and not bool(torch.isfinite(p).all()):
                return (f"the weight {mname}.{pname} holds NaN/inf: the checkpoint is corrupt (re-download or re-save "
                        "it) or a training run diverged")
    return ("every weight and input is finite, so a weight is out of range (a corrupt or wrongly converted file) "
            "or the dtype overflowed: try dtype fp32, and check the checkpoint with `tmd info`")


def ensure_finite(x: torch.Tensor, where: str, modules: dict, inputs: dict) -> torch.Tensor:
    """Raise NonFiniteError naming `where` and the likely cause when `x` holds NaN or inf."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"the sample became NaN/inf {where}; likely cause: {non_finite_cause(modules, inputs)}. "
                             "Nothing was saved")
    return x
