"""Stage 2: DMD2-v with flow-head rollout (docs/method.md §5): generator, fake-score and discriminator losses.

One named function per loss term, each returning (loss, logs) with logs a dict of detached 0-dim
tensors. The training loop runs, per iteration, `critic_loss` (fake score + discriminator) and,
every `student_every`-th iteration, `generator_sample` + `generator_loss` (DMD + λ GAN).
Every random draw comes from the explicit CPU generator, in the order the code reads.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model import TMDModel
from ..sampler import teacher_velocity
from ..schedule import shift_time
from ..transition import inner_flow
from .draws import rows
from .stage1_tmmf import _per_sample, sample_outer_times
from .teacher_features import teacher_features

T_MIN, T_MAX = 0.001, 0.999  # clip of the t_dmd sampler (docs/method.md §5)


def sample_student_times(batch_size: int, schedule_cfg, generator: torch.Generator) -> torch.Tensor:
    """t_i ~ Unif{t_1, ..., t_M} of the student's outer grid. Returns Tensor[B] float64."""
    return sample_outer_times(batch_size, schedule_cfg, generator)


def sample_dmd_times(batch_size: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """t = clip(shift_γ(U), 0.001, 0.999) (γ = 5: t_dmd of docs/method.md §5). Returns Tensor[B] float64."""
    u = rows(lambda n: torch.rand(n, generator=generator, dtype=torch.float64), batch_size)
    return shift_time(u, float(shift)).clamp(T_MIN, T_MAX)


def _noise_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    draw = rows(lambda n: torch.randn((n, *x.shape[1:]), generator=generator, dtype=torch.float32), x.shape[0])
    return draw.to(x.device)


def _noised(x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x + t ε (Eq. 1), t per sample."""
    t = _per_sample(t, x.float())
    return (1 - t) * x.float() + t * eps


def rollout(student: TMDModel, x_t, t_i, context, schedule_cfg, generator: torch.Generator) -> torch.Tensor:
    """ŷ = InnerFlow(m): N flow-map steps from a fresh y1, differentiable (the sampler's `inner_flow`).

    Gradients flow through every inner step, the fusion and the backbone.

    Args:
        student: TMDModel.
        x_t (Tensor[B, C, F, H, W]): noisy latent at the outer time t_i.
        t_i: float or Tensor[B] (per-sample outer times).
        context (Tensor[B or 1, L_text, text_dim]).
        schedule_cfg: TMDSchedule (its inner grid).
        generator: CPU generator for y1.
    Returns:
        ŷ (Tensor[B, C, F, H, W] float32): the transition's prediction of y = x1 - x.
    """
    out = student.backbone(x_t, t_i, context)  # m = B(x_t, t_i, c), once per transition
    y1 = _noise_like(x_t, generator)  # fresh y1 (Eq. 5)
    s = schedule_cfg.inner_times().tolist()  # s_N .. s_0
    return inner_flow(student, out, y1, s)


def generator_sample(student, batch: dict, schedule_cfg, stage2_cfg, generator: torch.Generator):
    """x̂ of the student from a real-data x_t (no backward simulation), with gradients (docs/method.md §5).

    TMD student ("tmd"): x̂ = x_t - t_i ŷ, ŷ = rollout(...) (decision; x_hat_mode "x1": x̂ = x1 - ŷ).
    DMD2-v baseline ("dmd", a plain WanTransformer3DModel): x̂ = g(x_t, t_i) = x_t - t_i v (Eq. 17).

    Args:
        student: TMDModel ("tmd") or WanTransformer3DModel ("dmd"), as stage2_cfg.student_kind says.
        batch: {"latents", "context", ...} (see tmmf_loss).
        generator: CPU generator; draws t_i, x1, then (tmd) y1.
    Returns:
        (x̂ Tensor[B, C, F, H, W] float32 with grad, aux dict: t_i Tensor[B] float64, x_t, x1).
    """
    kind = stage2_cfg.student_kind
    if kind not in ("tmd", "dmd"):
        raise ConfigError(f"stage2.student_kind must be 'tmd' or 'dmd', got {kind!r}")
    if (kind == "tmd") != isinstance(student, TMDModel):
        raise ConfigError(
            f"stage2.student_kind is {kind!r} but the student is a {type(student).__name__}: use 'tmd' "
            "with a TMDModel (decoupled, rollout) and 'dmd' with a plain Wan transformer (DMD2-v baseline)"
        )
    x = batch["latents"].float()
    t_i = sample_student_times(x.shape[0], schedule_cfg, generator)
    x1 = _noise_like(x, generator)
    x_t = _noised(x, t_i, x1)  # Eq. 1 on real data
    t = _per_sample(t_i, x)
    if kind == "dmd":
        x_hat = x_t - t * teacher_velocity(student, x_t, t_i, batch["context"])  # Eq. 17
    else:
        y_hat = rollout(student, x_t, t_i, batch["context"], schedule_cfg, generator)
        if stage2_cfg.x_hat_mode == "x_t":
            x_hat = x_t - t * y_hat  # decision: one Eq. 4 step from t_i to 0
        elif stage2_cfg.x_hat_mode == "x1":
            x_hat = x1 - y_hat  # the paper's literal form (equal at t_i ≈ 1)
        else:
            raise ConfigError(f"stage2.x_hat_mode must be 'x_t' or 'x1', got {stage2_cfg.x_hat_mode!r}")
    return x_hat, {"t_i": t_i, "x_t": x_t, "x1": x1}


def denoise(model, x_t, t, context, negative_context=None, guidance_scale: float = 1.0) -> torch.Tensor:
    """g(x_t, t) = x_t - t v(x_t, t) (Eq. 17), v with optional CFG. Tensor[B, C, F, H, W] float32."""
    v = teacher_velocity(model, x_t, t, context, negative_context, guidance_scale)
    return x_t.float() - _per_sample(torch.as_tensor(t, dtype=torch.float64).reshape(-1), v) * v


def dmd_loss(x_hat, teacher, fake_score, batch: dict, cfg, generator: torch.Generator):
    """DMD/VSD loss 0.5 ‖x̂ - sg(x̂ - grad)‖² (docs/method.md §5, DMD2 normalisation).

    t = clip(shift_5(U), .001, .999), x̂_t = (1 - t) x̂ + t ε; g_real = teacher with CFG `real_cfg`
    (negative prompt), g_fake = fake score without CFG; grad = (g_fake - g_real) / mean|x̂ - g_real|
    per sample ("dmd2"; "l1diff": / mean|g_fake - g_real|). Reduction: mean over all B·C·F·H·W
    elements (as DMD2), so ∂loss/∂x̂ = grad / (B·d).

    Args:
        x_hat (Tensor[B, C, F, H, W]): generator output with grad.
        teacher, fake_score: WanTransformer3DModel (both run without grad here).
        batch: needs "context" and "negative_context".
        cfg: Stage2Config (dmd_shift, real_cfg, dmd_norm).
        generator: CPU generator; draws t then ε.
    Returns:
        (loss, logs).
    """
    B = x_hat.shape[0]
    t = sample_dmd_times(B, cfg.dmd_shift, generator)
    eps = _noise_like(x_hat, generator)
    with torch.no_grad():
        x0 = x_hat.detach().float()
        x_t = _noised(x0, t, eps)
        g_real = denoise(teacher, x_t, t, batch["context"], batch["negative_context"], cfg.real_cfg)
        g_fake = denoise(fake_score, x_t, t, batch["context"])
        dims = tuple(range(1, x0.ndim))
        if cfg.dmd_norm == "dmd2":
            norm = (x0 - g_real).abs().mean(dim=dims, keepdim=True)
        elif cfg.dmd_norm == "l1diff":
            norm = (g_fake - g_real).abs().mean(dim=dims, keepdim=True)
        else:
            raise ConfigError(f"stage2.dmd_norm must be 'dmd2' or 'l1diff', got {cfg.dmd_norm!r}")
        grad = torch.nan_to_num((g_fake - g_real) / norm)
    loss = 0.5 * F.mse_loss(x_hat.float(), (x0 - grad).detach(), reduction="mean")
    logs = {
        "dmd_loss": loss.detach(),
        "dmd_grad_rms": grad.pow(2).mean().sqrt(),
        "dmd_norm": norm.mean(),
        "dmd_t_mean": t.mean().float(),
    }
    return loss, logs


@contextlib.contextmanager
def _params_frozen(module):
    """Build the graph without the module's parameters (grads reach the input only), then restore."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def gan_generator_loss(x_hat, teacher, discriminator, batch: dict, cfg, generator: torch.Generator):
    """Non-saturating generator GAN loss softplus(-D(x̂_t)) (docs/method.md §5); gradients reach x̂ through
    the frozen teacher's features and the discriminator, whose parameters get no gradient here.
    t from the t_dmd sampler, fresh ε (draws: t, ε)."""
    t = sample_dmd_times(x_hat.shape[0], cfg.dmd_shift, generator)
    x_t = _noised(x_hat, t, _noise_like(x_hat, generator))
    with _params_frozen(discriminator):
        logits = discriminator.logits(teacher, x_t, t, batch["context"])
    loss = F.softplus(-logits).mean()
    return loss, {"gan_g_loss": loss.detach(), "d_fake_logit_g": logits.detach().mean()}


def discriminator_loss(discriminator, teacher, x_hat, batch: dict, cfg, generator: torch.Generator):
    """softplus(D(fake)) + softplus(-D(real)) (docs/method.md §5): fake = sg(x̂) noised, real = the batch's
    latents noised independently (own t and ε). Teacher features without grad, one batched forward.
    Draws: t_fake, ε_fake, t_real, ε_real."""
    x_fake = x_hat.detach().float()
    x_real = batch["latents"].float()
    B = x_fake.shape[0]
    t_f = sample_dmd_times(B, cfg.dmd_shift, generator)
    xf_t = _noised(x_fake, t_f, _noise_like(x_fake, generator))
    t_r = sample_dmd_times(x_real.shape[0], cfg.dmd_shift, generator)
    xr_t = _noised(x_real, t_r, _noise_like(x_real, generator))
    ctx = batch["context"]
    ctx = ctx.expand(B, -1, -1) if ctx.shape[0] != B else ctx
    with torch.no_grad():
        feats = teacher_features(
            teacher,
            torch.cat([xf_t, xr_t]),
            torch.cat([t_f, t_r]),
            torch.cat([ctx, ctx]),
            discriminator.layers,
        )
    logits = discriminator(feats)
    l_fake, l_real = logits[:B], logits[B:]
    loss = F.softplus(l_fake).mean() + F.softplus(-l_real).mean()
    logs = {
        "disc_loss": loss.detach(),
        "d_real_logit": l_real.detach().mean(),
        "d_fake_logit": l_fake.detach().mean(),
        "d_accuracy": 0.5 * ((l_real > 0).float().mean() + (l_fake < 0).float().mean()).detach(),
    }
    return loss, logs


def fake_score_loss(fake_score, x_hat, batch: dict, cfg, generator: torch.Generator):
    """Flow matching of the fake score on sg(x̂): ‖v_fake(x̂_t, t) - (ε - x̂)‖², mean over elements,
    t from the t_dmd sampler (docs/method.md §5). Draws: t, ε."""
    x0 = x_hat.detach().float()
    t = sample_dmd_times(x0.shape[0], cfg.dmd_shift, generator)
    eps = _noise_like(x0, generator)
    v = teacher_velocity(fake_score, _noised(x0, t, eps), t, batch["context"])
    loss = F.mse_loss(v, eps - x0)  # Eq. 2 target x1 - x with x1 = ε
    return loss, {"fake_loss": loss.detach()}


def generator_loss(x_hat, teacher, fake_score, discriminator, batch: dict, cfg, generator: torch.Generator):
    """Generator total = DMD + λ GAN (docs/method.md §5; λ = cfg.gan_weight, GAN skipped when 0 or no D)."""
    loss, logs = dmd_loss(x_hat, teacher, fake_score, batch, cfg, generator)
    if discriminator is not None and cfg.gan_weight > 0:
        gan, gan_logs = gan_generator_loss(x_hat, teacher, discriminator, batch, cfg, generator)
        loss = loss + cfg.gan_weight * gan
        logs.update(gan_logs)
    logs["generator_loss"] = loss.detach()
    return loss, logs


def critic_loss(x_hat, fake_score, discriminator, teacher, batch: dict, cfg, generator: torch.Generator):
    """Fake score + discriminator loss on sg(x̂) (their parameters are disjoint: one backward, two
    optimizers). Reuse the generator's x̂ on student iterations; otherwise sample it under no_grad."""
    loss, logs = fake_score_loss(fake_score, x_hat, batch, cfg, generator)
    if discriminator is not None and cfg.gan_weight > 0:
        d_loss, d_logs = discriminator_loss(discriminator, teacher, x_hat, batch, cfg, generator)
        loss = loss + d_loss
        logs.update(d_logs)
    return loss, logs


def kd_warmup_loss(student_transformer, noise, teacher_x0, context, t: float = 1.0):
    """One-step DMD2-v baseline warm-up: regress teacher ODE noise->data pairs (docs/method.md §5).

    x̂ = g(noise, t) = noise - t v_student(noise, t) (Eq. 17 at the top time, t = 1 by default;
    pass schedule t_max to match sampling), loss = mean (x̂ - x0_teacher)².

    Args:
        student_transformer: WanTransformer3DModel (plain student).
        noise, teacher_x0 (Tensor[B, C, F, H, W]): the pair from the teacher's ODE sampler.
        context (Tensor[B or 1, L_text, text_dim]).
    """
    x_hat = denoise(student_transformer, noise.float(), t, context)
    loss = F.mse_loss(x_hat, teacher_x0.float())
    return loss, {"kd_loss": loss.detach()}
