"""Fused gating kernels of the fusion layer (docs/method.md §2.2): gated residual and AdaLN modulate."""

from .dispatch import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    gated_residual,
    modulate,
    resolve_backend,
)
from .reference import gated_residual_ref, modulate_ref

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "gated_residual",
    "gated_residual_ref",
    "modulate",
    "modulate_ref",
    "resolve_backend",
]
