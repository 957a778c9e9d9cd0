"""Stage 1 TM-MF (docs/method.md §4): (s, r) sampling, the finite-difference du/ds, the MeanFlow target and loss."""

import copy
import time

import pytest
import torch
from helpers_wan import make_tiny_teacher, tiny_inputs
from torch.nn.attention import SDPBackend, sdpa_kernel

from tmd_core.model import BackboneOut, TMDModel
from tmd_core.schedule import TMDSchedule, shifted_grid
from tmd_core.training.config import Stage1Config
from tmd_core.training.stage1_tmmf import (
    draw_stage1,
    finite_difference_du_ds,
    meanflow_target,
    sample_s_r,
    tmmf_loss,
)

SHAPE = dict(batch=2, frames=2, h=4, w=4, text_len=5)


def smooth_time_response(lin, max_freq=0.01):
    """Zero a time MLP's inputs (`linear_1`) from sinusoids faster than `max_freq` rad per Wan timestep.

    Random weights use every channel of Wan's time sinusoid, whose fastest is 1 rad per unit of 1000 s,
    so d head/ds is in the hundreds and δ = 5e-3 spans 5 rad; a trained teacher responds smoothly in t.
    """
    half = lin.in_features // 2
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half) / half)  # diffusers Timesteps
    fast = torch.cat([freqs, freqs]) > max_freq  # [cos | sin] (flip_sin_to_cos)
    with torch.no_grad():
        lin.weight[:, fast] = 0.0
    return lin


def make_student(seed=0, head_blocks=1, perturb=0.05, smooth=False):
    """A tiny TMD student whose fusion and emb_gap are non-zero (so the head depends on y_s and r)."""
    teacher = make_tiny_teacher(seed)
    student = TMDModel.from_teacher(copy.deepcopy(teacher), head_blocks=head_blocks)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in list(student.fusion.parameters()) + list(student.emb_gap.parameters()):
            p.add_(perturb * torch.randn(p.shape, generator=g))
    if smooth:  # emb(s) of the teacher (also used by the fusion) and emb_gap(s - r)
        smooth_time_response(student.transformer.condition_embedder.time_embedder.linear_1)
        smooth_time_response(student.emb_gap.time_embedder.linear_1)
    return student


def make_batch(model, seed=0, batch=2):
    x, ctx = tiny_inputs(model.transformer, **{**SHAPE, "batch": batch}, seed=seed)
    neg = torch.randn(1, SHAPE["text_len"], ctx.shape[-1], generator=torch.Generator().manual_seed(seed + 7))
    return {"latents": x, "context": ctx, "negative_context": neg}


# --- (s, r) sampling ---------------------------------------------------------------------------


def test_sample_s_r_ranges_grid_and_share():
    cfg = Stage1Config()
    grid = shifted_grid(4, 10.0, 0.999)
    g = torch.Generator().manual_seed(0)
    n_eq, n = 0, 0
    for _ in range(200):
        s, r = sample_s_r(8, grid, cfg, g)
        assert s.dtype == torch.float64 and (s >= 0.001).all() and (s <= 0.999).all()
        assert (r <= s).all()
        eq = r == s
        assert 5 <= eq.sum() <= 7  # 0.75 * 8 = 6, stochastic rounding moves it by at most 1
        lower = r[~eq]  # the largest grid point <= s
        for rv, sv in zip(lower.tolist(), s[~eq].tolist()):
            assert rv in grid.tolist() and not any(rv < gv <= sv for gv in grid.tolist())
        n_eq, n = n_eq + int(eq.sum()), n + 8
    assert abs(n_eq / n - 0.75) < 0.02
    s, r = sample_s_r(64, grid, Stage1Config(plain_tm=True), g)
    assert torch.equal(s, r)
    # shift_3 pushes s toward 1: the median of shift_3(U) is 0.75
    s, _ = sample_s_r(4000, grid, cfg, g)
    assert abs(s.median().item() - 0.75) < 0.03


def test_share_is_kept_on_average_at_batch_one():
    g = torch.Generator().manual_seed(1)
    eq = [
        bool((lambda s, r: (s == r).all())(*sample_s_r(1, shifted_grid(2, 10.0), Stage1Config(), g)))
        for _ in range(400)
    ]
    assert abs(sum(eq) / 400 - 0.75) < 0.07


# --- du/ds and the MeanFlow target -------------------------------------------------------------


def _jvp_u(student, out, y, v, s, r):
    """Exact total derivative of u = (y_s - head) / s along (v, 1) by forward-mode AD (math SDPA supports it)."""

    def f(y_, s_):
        return (y_ - student.head(out, y_, s_, r)) / s_.view(-1, 1, 1, 1, 1)

    with sdpa_kernel(SDPBackend.MATH):
        _, tangent = torch.func.jvp(f, (y, s), (v, torch.ones_like(s)))
    return tangent.detach()


@pytest.mark.parametrize("smooth, deltas, rel", [(True, (1e-2, 5e-3), 1e-3), (False, (1e-3, 5e-4), 0.05)])
def test_finite_difference_matches_exact_jvp_to_second_order(smooth, deltas, rel):
    """Central FD error shrinks ~4x when δ halves (O(δ²)) and is small; u = (y_s - head) / s.

    With a time response as smooth as a trained model's, the paper's δ = 5e-3 is accurate. The raw
    random head reacts to Wan's time sinusoid at full frequency (1 rad per unit of 1000 s), so there
    the asymptotic regime only starts near δ = 1e-3.
    """
    student = make_student(seed=3, smooth=smooth).double()
    batch = make_batch(student, seed=3)
    x, ctx = batch["latents"].double(), batch["context"].double()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        out = student.backbone(x, torch.tensor([0.5, 0.9]), ctx)
    y = torch.randn(x.shape, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    s = torch.tensor([0.6, 0.7], dtype=torch.float64)
    r = torch.tensor([0.2, 0.4], dtype=torch.float64)
    exact = _jvp_u(student, out, y, v, s, r)
    errs = [(finite_difference_du_ds(student, out, y, v, s, r, d) - exact).abs().max().item() for d in deltas]
    scale = exact.abs().max().item()
    print(
        f"FD vs JVP (smooth={smooth}): max|du/ds| {scale:.3g}, err(δ={deltas[0]}) {errs[0]:.3g}, "
        f"err(δ={deltas[1]}) {errs[1]:.3g}"
    )
    assert 3.0 < errs[0] / errs[1] < 5.0
    assert errs[1] < rel * scale


def test_one_sided_difference_near_r_still_converges():
    student = make_student(seed=4).double()
    batch = make_batch(student, seed=4)
    x, ctx = batch["latents"].double(), batch["context"].double()
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        out = student.backbone(x, 0.7, ctx)
    y = torch.randn(x.shape, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    r = torch.tensor([0.3, 0.5], dtype=torch.float64)
    s = r + 1e-5  # s - δ < r: the stencil is clamped to [r, s + δ]
    exact = _jvp_u(student, out, y, v, s, r)
    errs = [
        (finite_difference_du_ds(student, out, y, v, s, r, d) - exact).abs().max().item()
        for d in (4e-4, 2e-4)
    ]
    assert 1.6 < errs[0] / errs[1] < 2.6  # first order at the boundary
    assert errs[1] < 0.1 * exact.abs().max().item()


def test_finite_difference_runs_in_fp32_under_bf16_autocast():
    """bf16 rounding (~4e-3) over a 2δ = 1e-2 difference would be ~40 % noise: the FD leaves autocast."""
    student = make_student(seed=0, smooth=True)
    batch = make_batch(student, seed=0)
    x = batch["latents"]
    g = torch.Generator().manual_seed(1)
    y, v = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    s, r = torch.tensor([0.6, 0.8], dtype=torch.float64), torch.tensor([0.2, 0.3], dtype=torch.float64)
    with torch.no_grad():
        out = student.backbone(x, 0.5, batch["context"])
    ref = finite_difference_du_ds(student, out, y, v, s, r, 5e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = finite_difference_du_ds(student, out, y, v, s, r, 5e-3)
    assert (low - ref).abs().max() <= 1e-3 * ref.abs().max()


def test_r_equals_s_makes_the_correction_exactly_zero():
    student = make_student(seed=1)
    batch = make_batch(student, seed=1, batch=3)
    x, ctx = batch["latents"], batch["context"]
    with torch.no_grad():
        out = student.backbone(x, 0.5, ctx)
    g = torch.Generator().manual_seed(2)
    y_s, v_g = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    s = torch.tensor([0.4, 0.8, 0.95], dtype=torch.float64)
    r = torch.tensor([0.4, 0.0, 0.95], dtype=torch.float64)  # samples 0 and 2: r = s
    du_ds = finite_difference_du_ds(student, out, y_s, v_g, s, r, 5e-3)
    assert torch.count_nonzero(du_ds[[0, 2]]) == 0 and du_ds[1].abs().max() > 0
    target = meanflow_target(student, out, y_s, v_g, s, r, 5e-3)
    assert torch.equal(target[[0, 2]], v_g[[0, 2]])
    assert not torch.allclose(target[1], v_g[1])


class QuadraticFlow:
    """Exact inner flow dy/ds = y² (elementwise). From y_r = 1 / (s - r + 1 / y_s) the average velocity
    of the convention y_r = y_s - (s - r) u is u = y_s² / (1 + (s - r) y_s); v = y_s².
    Its `head` (u = (y_s - head) / s, so head = y_s - s u) plays the student in the target computation."""

    @staticmethod
    def u(y, s, r):
        h = (s - r).view(-1, 1, 1, 1, 1)
        return y * y / (1 + h * y)

    def head(self, out, y_s, s, r):
        s = torch.as_tensor(s, dtype=torch.float64).reshape(-1)
        r = torch.as_tensor(r, dtype=torch.float64).reshape(-1)
        return y_s - s.view(-1, 1, 1, 1, 1) * self.u(y_s, s, r)


def test_meanflow_target_equals_the_true_average_velocity():
    """û = v - (s - r) du/ds is a fixed point at the exact average velocity (the sign decision holds)."""
    g = torch.Generator().manual_seed(0)
    shape = (3, 2, 1, 2, 2)
    y_s = 0.2 + 0.6 * torch.rand(shape, generator=g, dtype=torch.float64)  # keep 1 + h y_s > 0
    s = torch.tensor([0.9, 0.6, 0.999], dtype=torch.float64)
    r = torch.tensor(
        [0.1, 0.598, 0.5], dtype=torch.float64
    )  # interior, near r (one-sided), near 1 (one-sided)
    out = BackboneOut(
        m=torch.zeros(3, 1, 1),
        context=torch.zeros(3, 1, 1),
        rotary_emb=None,
        latent_shape=shape,
        t=torch.zeros(3),
    )
    flow = QuadraticFlow()
    v = y_s * y_s
    truth = flow.u(y_s, s, r)
    target = meanflow_target(flow, out, y_s, v, s, r, 5e-3)
    err = (target - truth).abs().flatten(1).max(1).values
    assert err[0] < 1e-6  # central difference: O(δ²)
    assert err.max() < 1e-3  # clamped (one-sided) stencils near r and near 1: O(δ)
    du_ds = finite_difference_du_ds(flow, out, y_s, v, s, r, 5e-3)
    flipped = v + (s - r).view(-1, 1, 1, 1, 1) * du_ds  # what y_r = y_s + (s - r) u would imply
    assert (flipped - truth).abs().max() > 0.05


# --- the loss ----------------------------------------------------------------------------------


def test_plain_tm_with_unit_guidance_is_y_regression():
    """r = s everywhere, ω = 1, no dropout: u = (y_s - head) / s regresses v = y1 - y, i.e. the head regresses
    y with weight 1/s²: loss ‖(y - head) / s‖² / sg(‖(y - head) / s‖² + d), computed here."""
    student = make_student(seed=2)
    batch = make_batch(student, seed=2)
    sched = TMDSchedule(outer_steps=2, inner_steps=2)
    cfg = Stage1Config(plain_tm=True, cfg_scale=1.0, cond_dropout=0.0)
    loss, logs = tmmf_loss(student, batch, sched, cfg, torch.Generator().manual_seed(9))

    x = batch["latents"]
    d = draw_stage1(tuple(x.shape), sched, cfg, torch.Generator().manual_seed(9))
    t = d["t_i"].float().view(-1, 1, 1, 1, 1)
    s = d["s"].float().view(-1, 1, 1, 1, 1)
    x_t = (1 - t) * x + t * d["x1"]
    y = d["x1"] - x
    y_s = (1 - s) * y + s * d["y1"]
    with torch.no_grad():
        pred = student.head(student.backbone(x_t, d["t_i"], batch["context"]), y_s, d["s"], d["s"])
    err = ((y - pred) / s).pow(2).flatten(1).sum(1)
    ref = (err / (err + y[0].numel())).mean()
    err_u = ((y_s - pred) / s - (d["y1"] - y)).pow(2).flatten(1).sum(1)  # the same, as Eq. 14 reads
    assert torch.allclose(err, err_u, rtol=1e-4)
    assert abs(loss.item() - ref.item()) < 1e-6
    assert logs["share_r_eq_s"].item() == 1.0 and logs["correction_rms"].item() == 0.0


def test_tmmf_loss_trains_backbone_fusion_head_and_gap():
    student = make_student(seed=0)
    batch = make_batch(student, seed=0, batch=4)
    sched = TMDSchedule(outer_steps=2, inner_steps=2)
    cfg = Stage1Config(r_equals_s_share=0.0, cond_dropout=0.5)
    loss, logs = tmmf_loss(student, batch, sched, cfg, torch.Generator().manual_seed(0))
    loss.backward()
    tr = student.transformer
    for name, p in [
        ("backbone block", tr.blocks[0].ffn.net[0].proj.weight),
        ("head block", tr.blocks[-1].attn1.to_q.weight),
        ("fusion fc2", student.fusion.fc2.weight),
        ("fusion alpha", student.fusion.alpha),
        ("emb_gap", student.emb_gap.time_embedder.linear_1.weight),
        ("patch", tr.patch_embedding.weight),
    ]:
        assert p.grad is not None and p.grad.abs().max() > 0, name
    assert 0 < logs["loss"].item() < 1 and logs["correction_rms"].item() > 0
    assert logs["share_r_eq_s"].item() == 0.0


def test_tmmf_loss_is_reproducible_from_the_generator():
    student = make_student(seed=0)
    batch = make_batch(student, seed=0)
    sched, cfg = TMDSchedule(), Stage1Config()
    a, _ = tmmf_loss(student, batch, sched, cfg, torch.Generator().manual_seed(3))
    b, _ = tmmf_loss(student, batch, sched, cfg, torch.Generator().manual_seed(3))
    assert a.item() == b.item()


@pytest.mark.slow
def test_200_steps_fit_the_transition_target():
    """Overfitting a fixed tiny batch with fixed draws drives the head to y (plain TM, ω = 1).

    With u = (y_s - head) / s the head regresses y with weight 1/s², so the raw error of u falls by
    orders of magnitude once the gradient path (backbone, fusion, head) works. Fixed draws (the
    generator is re-seeded every step) remove the irreducible variance of the target.
    """
    student = make_student(seed=0, head_blocks=2, smooth=True)
    batch = make_batch(student, seed=0, batch=2)
    sched = TMDSchedule(outer_steps=2, inner_steps=2)
    cfg = Stage1Config(lr=1e-3, plain_tm=True, cfg_scale=1.0, cond_dropout=0.0)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    losses, t0 = [], time.perf_counter()
    for _ in range(200):
        loss, logs = tmmf_loss(student, batch, sched, cfg, torch.Generator().manual_seed(0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append((logs["loss"].item(), logs["mse"].item()))
    first = [sum(v) / 20 for v in zip(*losses[:20])]
    last = [sum(v) / 20 for v in zip(*losses[-20:])]
    print(
        f"stage-1 200 steps (mean of first/last 20): loss {first[0]:.4f} -> {last[0]:.4f}, "
        f"raw mse {first[1]:.2f} -> {last[1]:.2f}, {time.perf_counter() - t0:.1f}s"
    )
    assert last[0] < 0.6 * first[0] and last[1] < 0.01 * first[1]


def test_meanflow_target_to_r_zero_is_u_plus_the_head_derivative():
    """With u = (y_s - head) / s and r = 0, Eq. 10 reads û = v - s du/ds = u + dhead/ds: v cancels and
    the target asks the head to stay constant along the trajectory (its value there is the endpoint)."""
    student = make_student(seed=5, smooth=True).double()
    batch = make_batch(student, seed=5)
    x, ctx = batch["latents"].double(), batch["context"].double()
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        out = student.backbone(x, 0.6, ctx)
    y = torch.randn(x.shape, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    s, r = torch.tensor([0.5, 0.7], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        u = (y - student.head(out, y, s, r)) / s.view(-1, 1, 1, 1, 1)
        target = meanflow_target(student, out, y, v, s, r, 5e-3)

    def head(y_, s_):
        return student.head(out, y_, s_, r)

    with sdpa_kernel(SDPBackend.MATH):
        _, dhead = torch.func.jvp(head, (y, s), (v, torch.ones_like(s)))
    assert (target - (u + dhead)).abs().max() < 1e-3 * (u + dhead).abs().max()


if __name__ == "__main__":
    pytest.main([__file__, "-q", "-s"])
