"""Outer/inner time grids and the effective NFE (docs/method.md §1, §3; paper Eq. 16)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError


def shift_time(u: torch.Tensor | float, gamma: float) -> torch.Tensor | float:
    """shift_γ(u) = γ u / ((γ - 1) u + 1): pushes a uniform grid toward t = 1 (noise)."""
    return gamma * u / ((gamma - 1.0) * u + 1.0)


def shifted_grid(steps: int, gamma: float, t_max: float = 0.999) -> torch.Tensor:
    """Descending grid `t_steps = t_max > ... > t_0 = 0` = shift_γ(uniform), top set to t_max.

    Args:
        steps: number of intervals (M outer or N inner), >= 1.
        gamma: shift γ (> 0); 1 gives the uniform grid.
        t_max: value of the top point (0.999 by default; 1.0 makes the first step start from pure noise).
    Returns:
        Tensor[steps + 1] float64, descending, last element exactly 0.
    """
    if int(steps) != steps or steps < 1:
        raise InputError(f"a grid needs at least 1 step, got {steps!r}: use outer_steps/inner_steps >= 1")
    if gamma <= 0:
        raise InputError(f"shift must be > 0, got {gamma}")
    if not 0.0 < t_max <= 1.0:
        raise InputError(f"t_max must be in (0, 1], got {t_max}")
    u = torch.linspace(0.0, 1.0, int(steps) + 1, dtype=torch.float64)
    t = shift_time(u, float(gamma))
    t[-1] = t_max
    t[0] = 0.0
    return t.flip(0)


def effective_nfe(outer_steps: int, inner_steps: int, head_blocks: int, num_layers: int) -> float:
    """Eq. 16: M (1 + (N - 1) H / L) teacher-forward equivalents (embeddings/fusion not counted)."""
    if outer_steps < 1 or inner_steps < 1:
        raise InputError(f"outer_steps and inner_steps must be >= 1, got {outer_steps} and {inner_steps}")
    if not 0 < head_blocks < num_layers:
        raise InputError(f"head_blocks must be in 1..{num_layers - 1} for {num_layers} layers, got {head_blocks}")
    return outer_steps * (1.0 + (inner_steps - 1) * head_blocks / num_layers)


@dataclass
class TMDSchedule:
    """How many transitions (outer) and flow-head steps (inner) to run, and their grids."""

    outer_steps: int = 2  # M: backbone runs, one per transition
    inner_steps: int = 2  # N: flow-head steps inside each transition
    outer_shift: float = 10.0  # γ of the outer grid (docs/method.md §1 default)
    inner_shift: float = 10.0  # γ of the inner grid
    t_max: float = 0.999  # top point of both grids
    outer_times_override: tuple[float, ...] | None = None  # explicit descending outer times ending in 0

    def __post_init__(self):
        for name in ("outer_steps", "inner_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or int(v) != v or v < 1:
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
            setattr(self, name, int(v))
        for name in ("outer_shift", "inner_shift"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise InputError(f"{name} must be a number > 0, got {v!r}")
        if isinstance(self.t_max, bool) or not isinstance(self.t_max, (int, float)) or not 0 < self.t_max <= 1:
            raise InputError(f"t_max must be in (0, 1], got {self.t_max!r}")
        if self.outer_times_override is not None:
            ts = [float(v) for v in self.outer_times_override]
            if len(ts) < 2 or any(a <= b for a, b in zip(ts, ts[1:])) or ts[-1] != 0.0 or ts[0] > 1.0:
                raise InputError(
                    f"explicit outer times must be strictly descending from <= 1 to exactly 0, got {ts}"
                )
            self.outer_times_override = tuple(ts)
            self.outer_steps = len(ts) - 1

    def outer_times(self) -> torch.Tensor:
        """Tensor[M + 1] float64, descending t_M = t_max, ..., t_0 = 0."""
        if self.outer_times_override is not None:
            return torch.tensor(self.outer_times_override, dtype=torch.float64)
        return shifted_grid(self.outer_steps, self.outer_shift, self.t_max)

    def inner_times(self) -> torch.Tensor:
        """Tensor[N + 1] float64, descending s_N = t_max, ..., s_0 = 0."""
        return shifted_grid(self.inner_steps, self.inner_shift, self.t_max)

    def effective_nfe(self, head_blocks: int, num_layers: int) -> float:
        return effective_nfe(self.outer_steps, self.inner_steps, head_blocks, num_layers)
