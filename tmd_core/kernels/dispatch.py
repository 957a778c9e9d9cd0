"""Backend dispatcher of the fused gating ops, Triton or the PyTorch reference (docs/method.md §2.2 fusion layer).

Availability is decided once, at import:
- `TRITON_IMPORTABLE`: triton and `triton_gate` import cleanly;
- `TRITON_INTERPRET`: the kernels were decorated for triton's CPU interpreter (`TRITON_INTERPRET=1`
  was in the environment when `triton_gate` was imported), so they run on CPU tensors;
- `CUDA_AVAILABLE`: torch sees a CUDA device.
Compiled Triton needs CUDA tensors; on CPU only the interpreter can run the kernels.
"""

import logging
import os

import torch

from ..errors import ConfigError, TMDError
from .checks import check_gated_residual_inputs, check_modulate_inputs
from .reference import gated_residual_ref, modulate_ref

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "triton", "torch")

try:
    from . import triton_gate

    TRITON_IMPORTABLE = True
    TRITON_IMPORT_ERROR = ""
    TRITON_INTERPRET = triton_gate.INTERPRETED
except Exception as exc:  # a broken triton install must not break the library
    triton_gate = None
    TRITON_IMPORTABLE = False
    TRITON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "on", "yes"}

CUDA_AVAILABLE = torch.cuda.is_available()

# Reasons already logged by the automatic fallback, so each is logged once per process.
_fallback_logged: set[str] = set()


class BackendUnavailableError(TMDError, RuntimeError):
    """An explicitly requested kernel backend cannot run here."""


def available_backends() -> tuple[str, ...]:
    """Concrete backends usable in this process: always "torch", plus "triton" when it can run
    on some device here (CUDA, or CPU through the interpreter)."""
    triton_ok = TRITON_IMPORTABLE and (CUDA_AVAILABLE or TRITON_INTERPRET)
    return ("triton", "torch") if triton_ok else ("torch",)


def _triton_unusable_reason(device: torch.device, D: int | None) -> str | None:
    """Why Triton cannot run for tensors on `device` with rows of `D` features, or None if it can."""
    if not TRITON_IMPORTABLE:
        return f"triton is not importable ({TRITON_IMPORT_ERROR}); install it with `pip install triton`"
    if device.type == "cpu" and not TRITON_INTERPRET:
        return (
            "the tensors are on CPU and compiled Triton needs CUDA; move them to a CUDA device, or "
            "set TRITON_INTERPRET=1 in the environment before importing tmd_core (slow, for testing)"
        )
    if device.type not in ("cpu", "cuda"):
        return f"Triton kernels run on CUDA (or CPU via the interpreter), not on {device.type}"
    if D is not None and D > triton_gate.MAX_BLOCK_D:
        return f"D = {D} exceeds the row-wise kernel limit of {triton_gate.MAX_BLOCK_D} features"
    return None


def resolve_backend(backend: str, device: torch.device | str, D: int | None = None) -> str:
    """Turn a backend request into the concrete backend that will run.

    Args:
        backend: "auto" (Triton on CUDA when importable, else the PyTorch reference; a GPU fallback is logged once),
            "triton" (raise if it cannot run) or "torch".
        device: device of the input tensors.
        D: feature size of a row, when known (very wide rows exceed the Triton tile limit).

    Returns:
        "triton" or "torch".
    """
    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown kernel backend {backend!r}; expected one of {', '.join(map(repr, BACKENDS))}"
        )
    device = torch.device(device)
    if backend == "torch":
        return "torch"
    if backend == "auto" and device.type != "cuda":
        # Triton's CPU interpreter is a correctness tool (tests), far slower than the reference:
        # only an explicit backend="triton" uses it.
        return "torch"
    reason = _triton_unusable_reason(device, D)
    if reason is None:
        return "triton"
    if backend == "triton":
        raise BackendUnavailableError(
            f"backend='triton' cannot run: {reason}. Otherwise pass backend='torch' "
            "(or 'auto' to fall back to it automatically)."
        )
    if reason not in _fallback_logged:
        _fallback_logged.add(reason)
        # A GPU run without Triton loses speed, worth a warning; on CPU the reference is the norm.
        level = logging.WARNING if device.type == "cuda" else logging.INFO
        logger.log(level, "fused gating kernels: using the PyTorch reference because %s", reason)
    return "torch"


def gated_residual(
    m: torch.Tensor, z: torch.Tensor, gate: torch.Tensor, alpha: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """Gated residual of the fusion layer, `h = m + σ(α) · g(s) ⊙ z`, on the chosen backend.

    Args:
        m (Tensor[B, T, D]): backbone token features.
        z (Tensor[B, T, D]): fusion MLP output for `y_s`.
        gate (Tensor[B, D] or Tensor[B, 1, D]): per-sample gate `g(s)` (batch 1 broadcasts).
        alpha (Tensor[] or Tensor[1]): learnable gate logit.
        backend: "auto" | "triton" | "torch".

    Returns:
        Tensor[B, T, D] in `m.dtype`, differentiable w.r.t. m, z, gate and alpha.
    """
    check_gated_residual_inputs(m, z, gate, alpha)
    if resolve_backend(backend, m.device, m.shape[-1]) == "triton":
        return triton_gate.gated_residual_triton(m, z, gate, alpha)
    return gated_residual_ref(m, z, gate, alpha)


def modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6, backend: str = "auto"
) -> torch.Tensor:
    """AdaLN modulate, `LayerNorm(x) · (1 + scale) + shift` (no LayerNorm affine), on the chosen backend.

    Args:
        x (Tensor[B, T, D]): token features.
        shift (Tensor[B, D] or Tensor[B, 1, D]): per-sample shift (batch 1 broadcasts).
        scale (Tensor[B, D] or Tensor[B, 1, D]): per-sample scale (batch 1 broadcasts).
        eps: LayerNorm epsilon.
        backend: "auto" | "triton" | "torch".

    Returns:
        Tensor[B, T, D] in `x.dtype` (computed in fp32), differentiable w.r.t. x, shift and scale.
    """
    check_modulate_inputs(x, shift, scale, eps)
    if resolve_backend(backend, x.device, x.shape[-1]) == "triton":
        return triton_gate.modulate_triton(x, shift, scale, eps)
    return modulate_ref(x, shift, scale, eps)
