"""Input checks shared by every backend of the fused gating ops (docs/method.md §2.2 fusion layer)."""

import torch

from ..errors import InputError


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, {str(t.dtype).removeprefix('torch.')} on {t.device}"


def _check_tokens(op: str, name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InputError(
            f"{op}: {name} must be a torch.Tensor of shape (B, T, D), got {type(t).__name__}"
        )
    if t.dim() != 3:
        raise InputError(
            f"{op}: {name} has {_describe(t)}; expected token features of shape (B, T, D): "
            "flatten the frame/height/width grid into T before calling"
        )
    if not t.is_floating_point():
        raise InputError(f"{op}: {name} has {_describe(t)}; expected a floating-point tensor")
    return t


def _check_per_sample(op: str, name: str, v: object, ref: torch.Tensor, ref_name: str) -> None:
    """`v` must be `[B, D]` or `[B, 1, D]` with B equal to the batch of `ref` or 1."""
    B, _, D = ref.shape
    if not isinstance(v, torch.Tensor):
        raise InputError(
            f"{op}: {name} must be a torch.Tensor of shape (B, D) or (B, 1, D), got {type(v).__name__}"
        )
    ok_rank = v.dim() == 2 or (v.dim() == 3 and v.shape[1] == 1)
    if not ok_rank or v.shape[0] not in (B, 1) or v.shape[-1] != D:
        raise InputError(
            f"{op}: {name} has {_describe(v)}; expected a per-sample vector of shape (B, D) or "
            f"(B, 1, D) with B = {B} (or 1) and D = {D} to match {ref_name} {tuple(ref.shape)}: "
            "pass it before broadcasting over tokens"
        )
    if not v.is_floating_point():
        raise InputError(f"{op}: {name} has {_describe(v)}; expected a floating-point tensor")
    if v.device != ref.device:
        raise InputError(
            f"{op}: {name} is on {v.device} but {ref_name} is on {ref.device}: move both to one device"
        )


def check_gated_residual_inputs(m: object, z: object, gate: object, alpha: object) -> None:
    """Raise InputError unless `m, z: [B, T, D]`, `gate: [B|1, (1,) D]`, `alpha` 1 element, one device."""
    op = "gated_residual"
    m = _check_tokens(op, "m", m)
    z = _check_tokens(op, "z", z)
    if z.shape != m.shape:
        raise InputError(f"{op}: z has shape {tuple(z.shape)} but m has {tuple(m.shape)}; they must match")
    if z.device != m.device:
        raise InputError(f"{op}: z is on {z.device} but m is on {m.device}: move both to one device")
    _check_per_sample(op, "gate", gate, m, "m")
    if not isinstance(alpha, torch.Tensor) or alpha.numel() != 1 or not alpha.is_floating_point():
        got = _describe(alpha) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
        raise InputError(
            f"{op}: alpha is {got}; expected a floating-point tensor with one element "
            "(the learnable gate logit, e.g. nn.Parameter(torch.zeros(())))"
        )
    if alpha.device != m.device:
        raise InputError(f"{op}: alpha is on {alpha.device} but m is on {m.device}: move both to one device")


def check_modulate_inputs(x: object, shift: object, scale: object, eps: float) -> None:
    """Raise InputError unless `x: [B, T, D]`, `shift, scale: [B|1, (1,) D]` on x's device, eps >= 0."""
    op = "modulate"
    x = _check_tokens(op, "x", x)
    _check_per_sample(op, "shift", shift, x, "x")
    _check_per_sample(op, "scale", scale, x, "x")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise InputError(f"{op}: eps = {eps!r}; expected a non-negative float (Wan uses 1e-6)")
