"""Stage 1: transition-matching MeanFlow (TM-MF) pretraining of the flow head (docs/method.md §4, paper Alg. 2).

Sign convention (docs/method.md §2.4 decision): one flow-map step is y_r = y_s - (s - r) u(y_s, s, r; m).

MeanFlow identity in that convention. The inner flow runs from s = 1 (noise y1) to s = 0 (the
transition target y) along dy/ds = v(y_s, s); for the conditional path y_s = (1 - s) y + s y1
(Eq. 5) that is v = y1 - y. The average velocity over [r, s] is defined by

    (s - r) u(y_s, s, r) = y_s - y_r = ∫_r^s v(y_τ, τ) dτ.

Differentiating in s along the trajectory with r fixed (the integral's upper limit gives v(y_s, s)):

    u + (s - r) du/ds = v,      du/ds = ∂_y u · v + ∂_s u   (total derivative, tangent (v, 1)),

so the regression target is u = v - (s - r) du/ds (Eq. 10), with v replaced by the CFG velocity v_g
both in the target and in the tangent. At r = s it is plain flow matching: u(y_s, s, s) = v.
`tests/training/test_stage1.py` checks this on a flow whose average velocity is known in closed form.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

from ..model import BackboneOut
from ..schedule import shift_time
from ..transition import average_velocity
from .draws import calls_must_match, rows

S_MIN, S_MAX = 0.001, 0.999  # clip of the s sampler (docs/method.md §4)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Tensor[B] -> Tensor[B, 1, 1, 1, 1] in like's dtype/device, for broadcasting over a latent."""
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def sample_outer_times(batch_size: int, schedule_cfg, generator: torch.Generator) -> torch.Tensor:
    """t_i ~ Unif{t_1, ..., t_M} of the student's outer grid (docs/method.md §4/§5). Returns Tensor[B] float64."""
    grid = schedule_cfg.outer_times()  # t_M .. t_0
    idx = rows(lambda n: torch.randint(0, len(grid) - 1, (n,), generator=generator), batch_size)
    return grid[:-1][idx]


def sample_s_r(batch_size: int, inner_grid: torch.Tensor, cfg, generator: torch.Generator):
    """(s, r) of TM-MF (docs/method.md §4).

    s = clip(shift_{s_shift}(U), 0.001, 0.999); r = the largest inner-grid point <= s; for a share
    `r_equals_s_share` of the batch r = s. That share is realised per batch by stochastic rounding
    (floor(share · B + U) samples, chosen by a random permutation), so it is exact on average even at
    batch 1 per process. `plain_tm` sets r = s everywhere (the plain transition-matching ablation).

    Args:
        batch_size: B.
        inner_grid (Tensor[N + 1]): inner grid in any order (docs/method.md §1), must contain 0.
        cfg: Stage1Config (s_shift, r_equals_s_share, plain_tm).
        generator: CPU generator; draws, in order: U of s, then the rounding U and the permutation.
    Returns:
        s, r: Tensor[B] float64 with 0 <= r <= s.
    """
    sr = rows(lambda n: torch.stack(_sample_s_r(n, inner_grid, cfg, generator), dim=1), batch_size)
    return sr[:, 0].contiguous(), sr[:, 1].contiguous()


def _sample_s_r(batch_size: int, inner_grid, cfg, generator: torch.Generator):
    u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    s = shift_time(u, float(cfg.s_shift)).clamp(S_MIN, S_MAX)
    if cfg.plain_tm:
        return s, s.clone()
    grid = torch.sort(torch.as_tensor(inner_grid, dtype=torch.float64)).values  # ascending, grid[0] = 0
    r = grid[torch.searchsorted(grid, s, right=True) - 1]
    n_eq = math.floor(
        cfg.r_equals_s_share * batch_size + torch.rand(1, generator=generator, dtype=torch.float64).item()
    )
    eq = torch.zeros(batch_size, dtype=torch.bool)
    eq[torch.randperm(batch_size, generator=generator)[: min(n_eq, batch_size)]] = True
    return s, torch.where(eq, s, r)


def draw_stage1(latent_shape, schedule_cfg, cfg, generator: torch.Generator) -> dict:
    """Every random draw of one TM-MF step, in a fixed order (t_i, x1, y1, s/r, dropout).

    Kept separate so a test (or a resumed run) can replay exactly what `tmmf_loss` used.
    Returns a dict of CPU tensors: t_i, s, r (Tensor[B] float64), x1, y1 (Tensor[B, C, F, H, W]),
    drop (Tensor[B] bool: condition dropped -> negative prompt and plain v).
    """
    B = latent_shape[0]
    t_i = sample_outer_times(B, schedule_cfg, generator)
    x1 = rows(lambda n: torch.randn((n, *latent_shape[1:]), generator=generator), B)
    y1 = rows(lambda n: torch.randn((n, *latent_shape[1:]), generator=generator), B)
    inner = schedule_cfg.inner_times()
    s, r = sample_s_r(B, inner, cfg, generator)
    drop = rows(lambda n: torch.rand(n, generator=generator), B) < cfg.cond_dropout
    return {"t_i": t_i, "x1": x1, "y1": y1, "s": s, "r": r, "drop": drop}


def select_out(out: BackboneOut, idx: torch.Tensor) -> BackboneOut:
    """The BackboneOut of the samples `idx` (indices may repeat: used to batch several head calls)."""
    m = out.m[idx]
    context = out.context if out.context.shape[0] == 1 else out.context[idx]
    t = out.t[idx.to(out.t.device)]
    return BackboneOut(
        m=m, context=context, rotary_emb=out.rotary_emb, latent_shape=(m.shape[0], *out.latent_shape[1:]), t=t
    )


def _fp32_state(out: BackboneOut, device_type: str, weights_dtype: torch.dtype = torch.float32):
    """Under autocast, run the finite difference in fp32: with bf16 rounding (~4e-3) a difference
    over 2δ = 1e-2 would be noise. Returns (context manager, BackboneOut cast to fp32). With bf16 master
    weights (`master_dtype: bf16`) there are no fp32 weights to run: it stays under bf16 autocast
    (docs/design.md §7 says what this costs)."""
    if not torch.is_autocast_enabled(device_type) or weights_dtype != torch.float32:
        return contextlib.nullcontext(), out
    rot = tuple(r.float() for r in out.rotary_emb) if isinstance(out.rotary_emb, tuple) else out.rotary_emb
    out = dataclasses.replace(out, m=out.m.float(), context=out.context.float(), rotary_emb=rot)
    return torch.autocast(device_type, enabled=False), out


@torch.no_grad()
def finite_difference_du_ds(student, out: BackboneOut, y_s, v_g, s, r, delta: float) -> torch.Tensor:
    """du/ds along the trajectory (y_s + ε v_g, s + ε), r and m fixed, by finite differences (Eq. 10).

    u = (y_s - head) / s is evaluated at both stencil points (its explicit dependence on y_s and s is
    part of the derivative, not only the head's). Central difference
    with points s ± δ when both lie in [r, 1] (the domain of u(·, ·, r); error O(δ²)); otherwise the
    stencil is clamped to [max(s - δ, r), min(s + δ, 1)], i.e. one-sided (first order) at the
    boundary. Samples with r = s are skipped (zero): their correction (s - r) du/ds vanishes anyway.
    Both stencil points of every live sample go through the head in one batched, no-grad call, in
    fp32 even under autocast. Accuracy needs a time response smooth on the δ scale: Wan's sinusoidal
    embedding of 1000 s reaches 1 rad per timestep unit, so δ = 5e-3 spans 5 rad of its fastest
    channel; a random-weight model uses that channel fully (|du/ds| in the hundreds, FD far off),
    a trained model is expected not to (tests/training/test_stage1.py shows both regimes).

    Args:
        student: TMDModel (anything with `head(out, y_s, s, r)`).
        out: the BackboneOut of y_s's transition (m reused, not recomputed).
        y_s, v_g (Tensor[B, C, F, H, W]): inner state and the (CFG) velocity giving the tangent.
        s, r (Tensor[B]): inner times, r <= s.
        delta: δ (docs/method.md §4: 5e-3).
    Returns:
        Tensor[B, C, F, H, W] float32 (float64 if y_s is); exactly zero where r = s.
    """
    s = torch.as_tensor(s, dtype=torch.float64).reshape(-1).cpu()
    r = torch.as_tensor(r, dtype=torch.float64).reshape(-1).cpu()
    work = torch.float64 if y_s.dtype == torch.float64 else torch.float32
    du_ds = torch.zeros(y_s.shape, dtype=work, device=y_s.device)
    idx = (s > r).nonzero().squeeze(1)
    if idx.numel() == 0:
        if not calls_must_match():
            return du_ds
        # FSDP2 per-block units: make the head call on a stand-in sample (r set below s), then discard it
        finite_difference_du_ds(student, select_out(out, torch.zeros(1, dtype=torch.long, device=out.m.device)),
                                y_s[:1], v_g[:1], s[:1], s[:1] * 0.5, delta)
        return du_ds
    s_i, r_i = s[idx], r[idx]
    s_hi = torch.clamp(s_i + delta, max=1.0)
    s_lo = torch.maximum(torch.maximum(s_i - delta, r_i), 0.5 * s_i)  # u divides by s: stay above 0
    y_i, v_i = y_s[idx.to(y_s.device)].to(work), v_g[idx.to(y_s.device)].to(work)
    y_hi = y_i + _per_sample(s_hi - s_i, y_i) * v_i
    y_lo = y_i + _per_sample(s_lo - s_i, y_i) * v_i
    sub = select_out(out, torch.cat([idx, idx]).to(out.m.device))
    params = getattr(student, "parameters", None)  # an exact-flow stand-in (tests) has none: fp32
    precision, sub = _fp32_state(sub, y_s.device.type, next(params()).dtype if params else torch.float32)
    with precision:
        pred = student.head(sub, torch.cat([y_hi, y_lo]), torch.cat([s_hi, s_lo]), torch.cat([r_i, r_i])).to(
            work
        )
    pred_hi, pred_lo = pred.chunk(2)
    u_hi = average_velocity(y_hi, pred_hi, s_hi)  # Eq. 14: u = (y_s - head) / s at both stencil points
    u_lo = average_velocity(y_lo, pred_lo, s_lo)
    du_ds[idx.to(y_s.device)] = (u_hi - u_lo) / _per_sample(s_hi - s_lo, u_hi)
    return du_ds


@torch.no_grad()
def meanflow_target(student, out: BackboneOut, y_s, v_g, s, r, delta: float) -> torch.Tensor:
    """û = sg(v_g - (s - r) du/ds) (Eq. 10, sign derived in the module docstring). Tensor[B, C, F, H, W] fp32."""
    s = torch.as_tensor(s, dtype=torch.float64).reshape(-1)
    r = torch.as_tensor(r, dtype=torch.float64).reshape(-1)
    du_ds = finite_difference_du_ds(student, out, y_s, v_g, s, r, delta)
    return v_g.to(du_ds.dtype) - _per_sample(s - r, du_ds) * du_ds


def _pair_contexts(context: torch.Tensor, negative: torch.Tensor, batch_size: int):
    """Both contexts as Tensor[B, L, D] with the same L (the shorter zero-padded, as umt5 padding is)."""
    context = context.expand(batch_size, -1, -1) if context.shape[0] != batch_size else context
    negative = negative.expand(batch_size, -1, -1) if negative.shape[0] != batch_size else negative
    n = max(context.shape[1], negative.shape[1])
    context = torch.nn.functional.pad(context, (0, 0, 0, n - context.shape[1]))
    negative = torch.nn.functional.pad(negative, (0, 0, 0, n - negative.shape[1]))
    return context, negative.to(context.dtype)


def adaptive_loss(u: torch.Tensor, target: torch.Tensor, norm_c: float | None = None):
    """‖u - û‖² / sg(‖u - û‖² + c) per sample, averaged over the batch (docs/method.md §4).

    c = d (the number of elements of one sample) unless `norm_c` is given (an absolute value).
    Returns (loss, per-sample squared error Tensor[B]).
    """
    err = (u.float() - target.float()).pow(2).flatten(1).sum(1)  # ‖u - û‖², Tensor[B]
    c = float(u[0].numel()) if norm_c is None else float(norm_c)
    return (err / (err.detach() + c)).mean(), err


def tmmf_loss(student, batch: dict, schedule_cfg, stage1_cfg, generator: torch.Generator):
    """The TM-MF loss of one batch (docs/method.md §4, Alg. 2); backbone, fusion and head all get gradients.

    Args:
        student: TMDModel.
        batch: {"latents": Tensor[B, C, F, H, W] clean x (normalised latent space),
                "context": Tensor[B, L, text_dim], "negative_context": Tensor[1 or B, L', text_dim]}.
        schedule_cfg: TMDSchedule (outer and inner grids).
        stage1_cfg: Stage1Config (cfg_scale ω, cond_dropout, r_equals_s_share, s_shift, fd_delta,
            norm_c, plain_tm).
        generator: CPU generator; the draws are those of `draw_stage1`.
    Returns:
        (loss: 0-dim tensor with grad, logs: dict of detached 0-dim tensors).
    """
    cfg = stage1_cfg
    x = batch["latents"].float()
    B, dev = x.shape[0], x.device
    d = draw_stage1(tuple(x.shape), schedule_cfg, cfg, generator)
    x1, y1, drop = d["x1"].to(dev), d["y1"].to(dev), d["drop"].to(dev)
    t_i, s, r = d["t_i"], d["s"], d["r"]
    context, negative = _pair_contexts(batch["context"], batch["negative_context"], B)
    # condition dropout: the negative prompt is the null condition; dropped samples regress plain v
    context = torch.where(drop.view(B, 1, 1), negative, context)

    x_t = (1 - _per_sample(t_i, x)) * x + _per_sample(t_i, x) * x1  # Eq. 1
    out = student.backbone(x_t, t_i, context)  # m = B(x_t, t_i, c), not detached
    y = x1 - x  # Eq. 3
    y_s = (1 - _per_sample(s, y)) * y + _per_sample(s, y) * y1  # Eq. 5
    u = average_velocity(y_s, student.head(out, y_s, s, r), s)  # Eq. 14: u = (y_s - head) / s
    v = y1 - y  # conditional inner velocity dy/ds

    with torch.no_grad():
        v_g = v
        keep = (~drop).nonzero().squeeze(1)
        if cfg.cfg_scale != 1.0 and keep.numel() == 0 and calls_must_match():
            # FSDP2 per-block units: the negative-prompt backbone and head run on a stand-in sample, discarded
            student.head(student.backbone(x_t[:1], t_i[:1], negative[:1]), y_s[:1], s[:1], s[:1])
        if cfg.cfg_scale != 1.0 and keep.numel() > 0:
            # v_g = ω v + (1 - ω) sg[u(y_s, s, s; m_neg)], m_neg = backbone on the negative prompt
            k_cpu = keep.cpu()
            out_neg = student.backbone(x_t[keep], t_i[k_cpu], negative[keep])
            u_neg = average_velocity(y_s[keep], student.head(out_neg, y_s[keep], s[k_cpu], s[k_cpu]).float(), s[k_cpu])
            v_g = v.clone()
            v_g[keep] = cfg.cfg_scale * v[keep] + (1.0 - cfg.cfg_scale) * u_neg
        m_sg = dataclasses.replace(out, m=out.m.detach(), context=out.context.detach())
        du_ds = finite_difference_du_ds(student, m_sg, y_s, v_g, s, r, cfg.fd_delta)
        target = v_g - _per_sample(s - r, du_ds) * du_ds  # Eq. 10: û = sg(v_g - (s - r) du/ds)

    loss, err = adaptive_loss(u, target, cfg.norm_c)
    live = (s > r).to(dev)
    logs = {
        "loss": loss.detach(),
        "mse": (err / u[0].numel()).mean().detach(),  # raw mean squared error of u per element
        # the same error in the head's units (s (u - û) = head's miss; u divides by s, so small s inflates mse)
        "mse_head": (err * s.to(err) ** 2 / u[0].numel()).mean().detach(),
        "share_r_eq_s": (~live).float().mean(),
        "share_dropped": drop.float().mean(),
        "mean_s": s.mean().float(),
        "mean_t": t_i.mean().float(),
        "correction_rms": (_per_sample(s - r, du_ds) * du_ds).pow(2).mean().sqrt(),  # |(s - r) du/ds|
    }
    return loss, logs
