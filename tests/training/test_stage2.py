"""Stage 2 DMD2-v with flow-head rollout (docs/method.md §5): rollout, DMD gradient, gradient flow, baselines."""

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
from helpers_wan import make_tiny_teacher, tiny_inputs

from tmd_core.errors import ConfigError
from tmd_core.model import TMDModel
from tmd_core.sampler import sample_tmd
from tmd_core.schedule import TMDSchedule, shifted_grid
from tmd_core.training.config import Stage2Config
from tmd_core.training.discriminator import Discriminator
from tmd_core.training.stage2_dmd import (
    critic_loss,
    denoise,
    dmd_loss,
    fake_score_loss,
    gan_generator_loss,
    generator_loss,
    generator_sample,
    kd_warmup_loss,
    rollout,
    sample_dmd_times,
    sample_student_times,
)

SHAPE = dict(batch=2, frames=2, h=4, w=4, text_len=5)


def frozen_teacher(seed=0):
    return make_tiny_teacher(seed).requires_grad_(False)


def make_student(teacher, head_blocks=1, seed=0):
    student = TMDModel.from_teacher(copy.deepcopy(teacher).requires_grad_(True), head_blocks=head_blocks)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in list(student.fusion.parameters()) + list(student.emb_gap.parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return student


def make_batch(teacher, seed=0):
    x, ctx = tiny_inputs(teacher, **SHAPE, seed=seed)
    neg = torch.randn(1, SHAPE["text_len"], ctx.shape[-1], generator=torch.Generator().manual_seed(seed + 7))
    return {"latents": x, "context": ctx, "negative_context": neg}


def test_time_samplers():
    g = torch.Generator().manual_seed(0)
    t = sample_student_times(512, TMDSchedule(outer_steps=2), g)
    grid = shifted_grid(2, 10.0, 0.999)
    assert set(t.tolist()) == {grid[0].item(), grid[1].item()}  # t_1, t_2; never t_0 = 0
    t = sample_dmd_times(4000, 5.0, g)
    assert t.min() >= 0.001 and t.max() <= 0.999
    assert abs(t.median().item() - 5 / 6) < 0.02  # shift_5(0.5) = 5/6


def test_rollout_is_the_sampler_transition():
    """One transition of sample_tmd == x_t - t ŷ from rollout, given the same y1 (same generator seed)."""
    teacher = frozen_teacher(1)
    student = make_student(teacher, head_blocks=2)
    batch = make_batch(teacher, seed=1)
    sched = TMDSchedule(outer_steps=1, inner_steps=3)
    x_t = torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(4))
    ref = sample_tmd(
        student,
        x_t,
        batch["context"],
        TMDSchedule(outer_steps=1, inner_steps=3),
        generator=torch.Generator().manual_seed(11),
    )
    t_max = sched.t_max
    with torch.no_grad():
        y_hat = rollout(
            student,
            x_t,
            torch.full((2,), t_max, dtype=torch.float64),
            batch["context"],
            sched,
            torch.Generator().manual_seed(11),
        )
    assert (x_t - t_max * y_hat - ref).abs().max() < 1e-5


def test_dmd_gradient_is_zero_when_the_fake_score_is_the_teacher():
    teacher = frozen_teacher(2)
    batch = make_batch(teacher, seed=2)
    x_hat = nn.Parameter(torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(0)))
    cfg = Stage2Config(real_cfg=1.0)
    loss, logs = dmd_loss(
        x_hat, teacher, copy.deepcopy(teacher), batch, cfg, torch.Generator().manual_seed(0)
    )
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(x_hat.grad) == 0


class PointMassScore(nn.Module):
    """A 'fake score' of the point mass at x0: v(x_t, t) = (x_t - x0) / t, so g(x_t, t) = x0 exactly."""

    def __init__(self, x0):
        super().__init__()
        self.patch_embedding = nn.Conv3d(1, 1, 1)  # only its dtype is read
        self.register_buffer("x0", x0.detach().clone())

    def forward(self, x, timestep, encoder_hidden_states, return_dict=False):
        t = (timestep / 1000.0).view(-1, 1, 1, 1, 1)
        return ((x - self.x0) / t,)


def test_dmd_step_moves_x_hat_toward_the_teacher_denoiser():
    """With g_fake = x̂ (fake score knows only x̂), one SGD step on x̂ shrinks |x̂ - g_real| elementwise."""
    teacher = frozen_teacher(3)
    batch = make_batch(teacher, seed=3)
    x_hat = nn.Parameter(torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(1)))
    cfg = Stage2Config(real_cfg=5.0)
    loss, _ = dmd_loss(x_hat, teacher, PointMassScore(x_hat), batch, cfg, torch.Generator().manual_seed(5))
    # replay the loss's draws (t, ε) to get the g_real it used
    g = torch.Generator().manual_seed(5)
    t = sample_dmd_times(2, cfg.dmd_shift, g)
    eps = torch.randn(x_hat.shape, generator=g)
    tt = t.float().view(-1, 1, 1, 1, 1)
    with torch.no_grad():
        g_real = denoise(
            teacher, (1 - tt) * x_hat + tt * eps, t, batch["context"], batch["negative_context"], 5.0
        )
    before = (x_hat.detach() - g_real).abs()
    loss.backward()
    # ∂loss/∂x̂ = (x̂ - g_real) / (numel · mean|x̂ - g_real|): this lr moves x̂ about a quarter of the way
    opt = torch.optim.SGD([x_hat], lr=0.25 * x_hat.numel() * before.mean().item())
    opt.step()
    after = (x_hat.detach() - g_real).abs()
    assert (after <= before + 1e-6).all() and after.mean() < 0.9 * before.mean()


def test_stage2_gradients_reach_backbone_fusion_head_and_gap_teacher_frozen():
    teacher = frozen_teacher(0)
    student = make_student(teacher, head_blocks=1)
    fake = copy.deepcopy(teacher).requires_grad_(True)
    disc = Discriminator.from_teacher(teacher)
    batch = make_batch(teacher, seed=0)
    sched, cfg = TMDSchedule(outer_steps=2, inner_steps=2), Stage2Config(gan_weight=0.5)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x_hat, aux = generator_sample(student, batch, sched, cfg, g)
    loss, logs = generator_loss(x_hat, teacher, fake, disc, batch, cfg, g)
    loss.backward()
    tr = student.transformer
    for name, p in [
        ("backbone block", tr.blocks[0].attn1.to_q.weight),
        ("head block", tr.blocks[-1].ffn.net[0].proj.weight),
        ("fusion fc1", student.fusion.fc1.weight),
        ("fusion fc2", student.fusion.fc2.weight),
        ("fusion alpha", student.fusion.alpha),
        ("emb_gap", student.emb_gap.time_embedder.linear_2.weight),
    ]:
        assert p.grad is not None and p.grad.abs().max() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in fake.parameters())  # the generator loss does not train the fake score
    assert all(p.grad is None for p in disc.parameters())  # nor the discriminator
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    opt.step()
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())
    assert {"dmd_loss", "gan_g_loss", "generator_loss"} <= set(logs) and aux["t_i"].shape == (2,)


def test_x_hat_modes():
    teacher = frozen_teacher(0)
    student = make_student(teacher)
    batch = make_batch(teacher, seed=0)
    sched = TMDSchedule(outer_steps=1, inner_steps=2)
    with torch.no_grad():
        a, aux = generator_sample(
            student, batch, sched, Stage2Config(x_hat_mode="x_t"), torch.Generator().manual_seed(0)
        )
        b, _ = generator_sample(
            student, batch, sched, Stage2Config(x_hat_mode="x1"), torch.Generator().manual_seed(0)
        )
    t = aux["t_i"].float().view(-1, 1, 1, 1, 1)
    y_hat = (aux["x_t"] - a) / t
    assert torch.allclose(b, aux["x1"] - y_hat, atol=1e-5)
    # (x_t - t ŷ) - (x1 - ŷ) = (1 - t)(ŷ - y): small only near t = 1; here t = 0.999
    assert (a - b).abs().max() < 0.05
    with pytest.raises(ConfigError):
        generator_sample(student, batch, sched, Stage2Config(x_hat_mode="x0"), torch.Generator())


def test_dmd2v_baseline_student_and_kind_checks():
    teacher = frozen_teacher(0)
    plain = copy.deepcopy(teacher).requires_grad_(True)
    batch = make_batch(teacher, seed=0)
    sched, cfg = TMDSchedule(outer_steps=2), Stage2Config(student_kind="dmd")
    g = torch.Generator().manual_seed(0)
    x_hat, aux = generator_sample(plain, batch, sched, cfg, g)
    with torch.no_grad():
        ref = denoise(teacher, aux["x_t"], aux["t_i"], batch["context"])  # Eq. 17 with identical weights
    assert torch.allclose(x_hat, ref, atol=1e-5)
    loss, _ = generator_loss(
        x_hat, teacher, copy.deepcopy(teacher), Discriminator.from_teacher(teacher), batch, cfg, g
    )
    loss.backward()
    assert plain.blocks[0].attn1.to_q.weight.grad.abs().max() > 0
    with pytest.raises(ConfigError, match="student_kind"):
        generator_sample(plain, batch, sched, Stage2Config(student_kind="tmd"), g)
    with pytest.raises(ConfigError, match="student_kind"):
        generator_sample(make_student(teacher), batch, sched, cfg, g)


def test_fake_score_loss_is_flow_matching_on_sg_x_hat():
    teacher = frozen_teacher(0)
    fake = copy.deepcopy(teacher).requires_grad_(True)
    batch = make_batch(teacher, seed=0)
    x_hat = torch.randn(batch["latents"].shape, requires_grad=True)
    cfg = Stage2Config()
    loss, _ = fake_score_loss(fake, x_hat, batch, cfg, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = sample_dmd_times(2, cfg.dmd_shift, g)
    eps = torch.randn(x_hat.shape, generator=g)
    tt = t.float().view(-1, 1, 1, 1, 1)
    x_t = (1 - tt) * x_hat.detach() + tt * eps
    with torch.no_grad():
        v = (x_t - denoise(fake, x_t, t, batch["context"])) / tt
    assert abs(loss.item() - (v - (eps - x_hat.detach())).pow(2).mean().item()) < 1e-5
    loss.backward()
    assert x_hat.grad is None and fake.blocks[0].attn1.to_q.weight.grad.abs().max() > 0


def test_generator_total_is_dmd_plus_lambda_gan_and_critic_trains_fake_and_disc():
    teacher = frozen_teacher(0)
    fake = copy.deepcopy(teacher).requires_grad_(True)
    disc = Discriminator.from_teacher(teacher)
    batch = make_batch(teacher, seed=0)
    x_hat = torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(2)).requires_grad_()
    cfg = Stage2Config(gan_weight=0.03)
    total, logs = generator_loss(x_hat, teacher, fake, disc, batch, cfg, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    dmd, _ = dmd_loss(x_hat, teacher, fake, batch, cfg, g)
    gan, _ = gan_generator_loss(x_hat, teacher, disc, batch, cfg, g)
    assert abs(total.item() - (dmd.item() + 0.03 * gan.item())) < 1e-6
    assert torch.isclose(logs["generator_loss"], total.detach())
    no_gan, _ = generator_loss(
        x_hat, teacher, fake, disc, batch, replace(cfg, gan_weight=0.0), torch.Generator().manual_seed(1)
    )
    assert abs(no_gan.item() - dmd.item()) < 1e-7
    loss, logs = critic_loss(
        x_hat.detach(), fake, disc, teacher, batch, cfg, torch.Generator().manual_seed(0)
    )
    loss.backward()
    assert fake.blocks[1].ffn.net[0].proj.weight.grad.abs().max() > 0
    assert disc.heads[0].net[0].weight.grad.abs().max() > 0
    assert {"fake_loss", "disc_loss", "d_accuracy"} <= set(logs)


def test_kd_warmup_loss():
    teacher = frozen_teacher(0)
    student = copy.deepcopy(teacher).requires_grad_(True)
    batch = make_batch(teacher, seed=0)
    noise = torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = denoise(student, noise, 1.0, batch["context"])  # noise - v(noise, 1)
    loss, _ = kd_warmup_loss(student, noise, own, batch["context"])
    assert loss.item() < 1e-10
    loss, logs = kd_warmup_loss(student, noise, batch["latents"], batch["context"])
    loss.backward()
    assert loss.item() > 0 and student.proj_out.weight.grad.abs().max() > 0
    assert abs(loss.item() - (own - batch["latents"]).pow(2).mean().item()) < 1e-5
