"""Samplers: TMD (Algorithm 1), the flow-matching teacher with CFG, and DMD2-v's few-step Eq. 18."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from .errors import InputError
from .model import TMDModel, wan_timestep
from .schedule import TMDSchedule, shifted_grid
from .transition import inner_flow
from .validation import check_float, check_int, check_latent_and_context, ensure_finite

# callback(step_index, inner_index, x0_estimate): outer/inner counted from 0 in the order they run.
Callback = Callable[[int, int, torch.Tensor], None]


def inner_noise_generators(noise: torch.Tensor) -> list[torch.Generator]:
    """The one seeding rule for y1: sample b's inner noise comes from a CPU generator seeded by a hash of
    sample b's own initial noise. A clip therefore depends only on its noise and prompt — not on the batch
    it was sampled in — and TMDSampler, `tmd generate`, training previews and ToyBench agree for a seed."""
    gens = []
    for b in range(noise.shape[0]):
        head = noise[b].detach().flatten()[:4096].float().cpu().numpy().tobytes()
        digest = hashlib.sha256(head).digest()
        gens.append(torch.Generator("cpu").manual_seed(int.from_bytes(digest[:8], "little") >> 1))
    return gens


def draw_inner_noise(shape, generators: list[torch.Generator] | torch.Generator, device) -> torch.Tensor:
    """y1 ~ N(0, I) of one transition (Eq. 5): one draw per sample from its generator, or the whole batch
    from a single generator. Returns Tensor[shape] float32 on `device`."""
    if isinstance(generators, torch.Generator):
        return torch.randn(tuple(shape), generator=generators, dtype=torch.float32).to(device)
    y1 = [torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(y1).to(device)


@torch.no_grad()
def sample_tmd(
    model: TMDModel,
    noise: torch.Tensor,
    context: torch.Tensor,
    schedule: TMDSchedule,
    *,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Algorithm 1: M transitions, each one backbone pass and N flow-head steps.

    Args:
        model: a TMDModel.
        noise (Tensor[B, C, F, H, W]): x ~ N(0, I) (see make_noise), normalised latent space.
        context (Tensor[B or 1, L_text, text_dim]): text embeddings (no CFG: guidance is distilled in).
        schedule: outer/inner steps and grids.
        callback: called after every inner step with (outer index, inner index, x0 estimate).
        generator: one CPU generator for the y1 of the whole batch (default: `inner_noise_generators`,
            i.e. derived from each sample's noise; pass one to vary y1 with the outer noise fixed).
    Returns:
        Tensor[B, C, F, H, W] float32: x_0 in the normalised latent space.
    """
    check_latent_and_context(model.config, noise, context)
    if not all(hasattr(schedule, a) for a in ("outer_times", "inner_times")):  # a TMDSchedule (of any import path)
        raise InputError(f"schedule must be a TMDSchedule, got {type(schedule).__name__}: e.g. TMDSchedule(2, 2)")
    t = schedule.outer_times().tolist()  # t_M .. t_0
    s = schedule.inner_times().tolist()  # s_N .. s_0
    gens = generator if generator is not None else inner_noise_generators(noise)
    x = noise.float()
    for i in range(len(t) - 1):
        t_i, t_prev = t[i], t[i + 1]
        out = model.backbone(x, t_i, context)  # m = B(x, t_i, c): once per transition
        y1 = draw_inner_noise(x.shape, gens, x.device)  # fresh y1 for every transition (Eq. 5)

        def on_step(j, pred, i=i, t_i=t_i, x=x):
            if callback is not None:
                callback(i, j, x - t_i * pred)  # x0 estimate from the current head prediction

        y = inner_flow(model, out, y1, s, on_step)
        x = x - (t_i - t_prev) * y  # Eq. 4
        ensure_finite(x, f"in transition {i + 1} of {len(t) - 1} (t = {t_i:.4g} -> {t_prev:.4g}, backbone + flow head)",
                      {"model": model}, {"context": context})
    return x


def _velocity(transformer, x, t, context) -> torch.Tensor:
    dtype = transformer.patch_embedding.weight.dtype
    ts = wan_timestep(t, x.shape[0], x.device)
    return transformer(x.to(dtype), timestep=ts, encoder_hidden_states=context.to(dtype), return_dict=False)[0].float()


def teacher_velocity(transformer, x, t, context, negative_context=None, guidance_scale: float = 1.0) -> torch.Tensor:
    """v(x_t, t) with classifier-free guidance: v_neg + w (v_pos - v_neg), one batched forward."""
    B = x.shape[0]
    if context.shape[0] != B:
        context = context.expand(B, -1, -1)
    if negative_context is None or guidance_scale == 1.0:
        return _velocity(transformer, x, t, context)
    if negative_context.shape[0] != B:
        negative_context = negative_context.expand(B, -1, -1)
    if negative_context.shape[1] != context.shape[1]:  # pad the shorter with zeros, as umt5 padding does
        n = max(negative_context.shape[1], context.shape[1])
        context = torch.nn.functional.pad(context, (0, 0, 0, n - context.shape[1]))
        negative_context = torch.nn.functional.pad(negative_context, (0, 0, 0, n - negative_context.shape[1]))
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    t2 = t if t.numel() == 1 else torch.cat([t, t])  # per-sample times follow the doubled batch
    v = _velocity(transformer, torch.cat([x, x]), t2, torch.cat([context, negative_context]))
    v_pos, v_neg = v.chunk(2)
    return v_neg + guidance_scale * (v_pos - v_neg)


@torch.no_grad()
def sample_teacher(
    transformer,
    noise: torch.Tensor,
    context: torch.Tensor,
    steps: int = 50,
    shift: float = 8.0,
    guidance_scale: float = 5.0,
    negative_context: torch.Tensor | None = None,
    callback: Callback | None = None,
    t_max: float = 1.0,
) -> torch.Tensor:
    """Flow-matching Euler sampling of the teacher: x <- x - (t_i - t_{i-1}) v (Eq. 2, 4), with CFG.

    NFE = 2 * steps with guidance (cond + uncond), `steps` without.
    Returns Tensor[B, C, F, H, W] float32 in the normalised latent space.
    """
    check_latent_and_context(transformer.config, noise, context)
    steps = check_int("steps", steps, 1)
    shift = check_float("shift", shift, 0, lo_open=True)
    guidance_scale = check_float("guidance_scale", guidance_scale, hint="1 turns classifier-free guidance off")
    if guidance_scale != 1.0 and negative_context is None:
        raise InputError("guidance_scale != 1 needs a negative_context (the negative prompt's embedding)")
    if negative_context is not None:
        check_latent_and_context(transformer.config, noise, negative_context, context_name="the negative context")
    t = shifted_grid(steps, shift, t_max).tolist()
    x = noise.float()
    inputs = {"context": context, **({"negative_context": negative_context} if negative_context is not None else {})}
    for i in range(len(t) - 1):
        v = teacher_velocity(transformer, x, t[i], context, negative_context, guidance_scale)
        if callback is not None:
            callback(i, 0, x - t[i] * v)  # Eq. 17: g(x_t, t) = x_t - t v
        x = x - (t[i] - t[i + 1]) * v
        ensure_finite(x, f"at teacher step {i + 1} of {len(t) - 1} (t = {t[i]:.4g})", {"teacher": transformer}, inputs)
    return x


@torch.no_grad()
def sample_dmd(
    transformer,
    noise: torch.Tensor,
    context: torch.Tensor,
    times: torch.Tensor | TMDSchedule,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Few-step sampling of a plain (undecoupled) DMD2-v student, Eq. 18:
    x_{t_{i-1}} = (1 - t_{i-1}/t_i) g(x_{t_i}, t_i) + (t_{i-1}/t_i) x_{t_i},  g = x - t v (Eq. 17).

    Args:
        times: descending Tensor[M + 1] ending in 0, or a TMDSchedule (its outer grid).
    """
    check_latent_and_context(transformer.config, noise, context)
    if isinstance(times, TMDSchedule):
        times = times.outer_times()
    t = torch.as_tensor(times, dtype=torch.float64).tolist()
    if len(t) < 2 or any(a <= b for a, b in zip(t, t[1:])) or t[-1] != 0.0 or not 0 < t[0] <= 1:
        raise InputError(f"times must be strictly descending from at most 1 to exactly 0, got {t}")
    x = noise.float()
    for i in range(len(t) - 1):
        v = teacher_velocity(transformer, x, t[i], context)
        g = x - t[i] * v
        if callback is not None:
            callback(i, 0, g)
        ratio = t[i + 1] / t[i]
        x = (1.0 - ratio) * g + ratio * x
        ensure_finite(x, f"at student step {i + 1} of {len(t) - 1} (t = {t[i]:.4g})", {"student": transformer},
                      {"context": context})
    return x
