"""One transition's inner flow (paper Eq. 5, 14; Algorithm 1's inner loop): used by sampling and by stage 2.

The flow head predicts `head(y_s, s, r)`; the average velocity over [r, s] is taken from the *current*
point (docs/method.md §2):

    u(y_s, s, r) = (y_s - head) / s          =>   y_r = y_s - (s - r) u = (r/s) y_s + (1 - r/s) head

so head(y_s, s, s) is E[y | y_s] (the velocity of the marginal flow is (y_s - E[y | y_s]) / s) and one
step from s = 1 to r = 0 returns the head itself (the decoupling invariant). The earlier reading
u = y1 - head subtracted the *initial* y1 where the flow needs E[y1 | y_s]; even a perfect head then
shrinks the inner distribution (tests/test_transition.py measures both on exact 1-D flows).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# What `tmd_config.inner_velocity` records in a checkpoint trained with this parameterisation.
INNER_VELOCITY = "(y_s-head)/s"


def _per_sample(v, like: torch.Tensor) -> torch.Tensor | float:
    """A float stays a float; Tensor[B] -> Tensor[B, 1, ...] broadcastable over `like`."""
    if isinstance(v, (int, float)):
        return float(v)
    v = torch.as_tensor(v)
    if v.numel() == 1:
        return float(v.reshape(()).item())
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def average_velocity(y_s: torch.Tensor, head: torch.Tensor, s) -> torch.Tensor:
    """Eq. 14 as this project implements it: u = (y_s - head) / s.

    Args:
        y_s (Tensor[B, C, F, H, W]): inner state at inner time s (> 0).
        head (Tensor[B, C, F, H, W]): the flow head's output at (y_s, s, r).
        s: float or Tensor[B], the inner time (s >= 0.001 in training, s_1 > 0 on every sampling grid).
    Returns:
        u, same shape as y_s.
    """
    return (y_s - head) / _per_sample(s, y_s)


def flow_map_step(y_s: torch.Tensor, head: torch.Tensor, s, r) -> torch.Tensor:
    """y_r = y_s - (s - r) u(y_s, s, r) (docs/method.md §2: the sign consistent with Eqs. 8, 10, 14).

    Computed in the equal form (r/s) y_s + (1 - r/s) head, so a step to r = 0 returns the head exactly.
    """
    ratio = _per_sample(r, y_s) / _per_sample(s, y_s)
    return ratio * y_s + (1 - ratio) * head


def inner_flow(
    model,
    out,
    y1: torch.Tensor,
    inner_times: list[float],
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """ŷ = InnerFlow(m): N flow-map steps from y1 at s_N to s_0 = 0 (Algorithm 1, inner loop).

    Differentiable when called with gradients enabled (stage 2 backpropagates through every step).

    Args:
        model: a TMDModel (anything with `head(out, y_s, s, r)`).
        out: the BackboneOut of this transition (m, rope and text state, computed once).
        y1 (Tensor[B, C, F, H, W]): the transition's fresh inner noise (Eq. 5).
        inner_times: descending floats s_N, ..., s_0 = 0 (TMDSchedule.inner_times().tolist()).
        on_step: called after every step with (inner index j counted from 0, head output).
    Returns:
        ŷ (Tensor[B, C, F, H, W] float32): the transition's sample of y = x1 - x.
    """
    y = y1
    for j in range(len(inner_times) - 1):
        s_j, s_prev = inner_times[j], inner_times[j + 1]
        pred = model.head(out, y, s_j, s_prev)
        y = flow_map_step(y, pred, s_j, s_prev)
        if on_step is not None:
            on_step(j, pred)
    return y
