"""Does a sampler use its noise? Spread of the object's position and size across inner- and outer-noise draws.

A TMD sample has two noises: the outer noise x_T (one per clip) and the inner noise y1 of the flow head
(fresh at every transition). `noise_spread` holds the outer noise fixed and redraws only the inner one,
and compares the spread of what the clips show with the spread across outer noises and across real
renders of the prompt. An inner/outer ratio near 0 means the flow head ignores its inner noise.

    def sample_fn(noise_seed, inner_seed, prompts):   # the caller wraps its sampler
        ...  # outer noise from noise_seed; inner noise y1 from torch.Generator().manual_seed(inner_seed),
        ...  # or the sampler's default inner noise when inner_seed is None
        return clips                                 # Tensor[len(prompts), 3, F, H, W] in [-1, 1]
    noise_spread(sample_fn, ["a red circle moving left fast"], outer_seeds=(0, 1, 2, 3), inner_draws=8)

Spreads are fractions of the frame side: the root mean square over the three features (mean x, mean y,
√area) of each feature's sample standard deviation. Only clips where an object was found count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import torch

from ..errors import InputError
from .measure import ClipMeasurement, measure_clips
from .world import DEFAULT_FRAMES, DEFAULT_SIZE, Prompt, as_prompt, render_batch

SampleFn = Callable[[int, "int | None", list[Prompt]], torch.Tensor]


def feature_std(ms: Sequence[ClipMeasurement]) -> float | None:
    """RMS over (x, y, √area) of the sample std across the clips that show an object; None if < 2 do."""
    feats = [m.features for m in ms if m.present > 0]
    if len(feats) < 2:
        return None
    return math.sqrt(torch.tensor(feats, dtype=torch.float64).var(0, unbiased=True).mean().item())


def _reading(m: ClipMeasurement) -> tuple:
    return (m.colour, m.shape, m.direction, m.speed)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _call(sample_fn: SampleFn, noise_seed: int, inner_seed: int | None, prompts: list[Prompt]) -> torch.Tensor:
    clips = sample_fn(noise_seed, inner_seed, prompts)
    if not isinstance(clips, torch.Tensor) or clips.ndim != 5 or len(clips) != len(prompts):
        raise InputError(f"sample_fn must return Tensor[{len(prompts)}, 3, F, H, W], got "
                         f"{getattr(clips, 'shape', type(clips))}")
    return clips


def noise_spread(sample_fn: SampleFn, prompts, outer_seeds: Sequence[int] = (0, 1, 2, 3), inner_draws: int = 8,
                 real_seeds: Sequence[int] | None = None, frames: int = DEFAULT_FRAMES,
                 size: int = DEFAULT_SIZE) -> dict:
    """Spread of what the clips show across inner-noise draws (outer fixed), outer-noise draws, and real renders.

    Args:
        sample_fn: (noise_seed, inner_seed or None, prompts) -> Tensor[len(prompts), 3, F, H, W] in [-1, 1].
            Called once per outer seed with inner_seed None (the sampler's own inner noise), and once per
            (outer seed, inner seed 0 … inner_draws − 1).
        prompts: Prompt or prompt texts.
        outer_seeds: the outer noises (≥ 2 for an outer spread).
        inner_draws: inner noises per outer noise (≥ 2).
        real_seeds: render seeds of the real reference (default: outer_seeds).
        frames, size: of the real renders (should match the sampler's clips).
    Returns:
        {"inner", "outer", "real": mean spread over prompts (fractions of the side), "ratio": inner / outer,
        "agree": share of inner draws whose read attributes (colour, shape, direction, speed) equal the most
        common reading among the draws of their outer noise, "inner_correct": share of inner draws that follow
        the prompt, "per_prompt": the same per prompt, "outer_seeds", "inner_draws"}.
    """
    prompts = [as_prompt(p) for p in prompts]
    outer_seeds = [int(s) for s in outer_seeds]
    real_seeds = [int(s) for s in (real_seeds if real_seeds is not None else outer_seeds)]
    if not prompts:
        raise InputError("noise_spread needs at least one prompt")
    if inner_draws < 2 or len(outer_seeds) < 1:
        raise InputError(f"need inner_draws >= 2 and at least one outer seed (got {inner_draws}, {len(outer_seeds)})")
    n = len(prompts)
    outer = [_call(sample_fn, s, None, prompts) for s in outer_seeds]
    inner = [[_call(sample_fn, s, j, prompts) for j in range(inner_draws)] for s in outer_seeds]
    real = render_batch([p for p in prompts for _ in real_seeds], [s for _ in prompts for s in real_seeds], frames, size)
    flat = torch.cat(outer + [c for row in inner for c in row])
    ms = measure_clips(flat)
    m_outer = [ms[k * n:(k + 1) * n] for k in range(len(outer_seeds))]  # [outer seed][prompt]
    base = len(outer_seeds) * n
    m_inner = [[ms[base + (k * inner_draws + j) * n: base + (k * inner_draws + j + 1) * n] for j in range(inner_draws)]
               for k in range(len(outer_seeds))]  # [outer seed][draw][prompt]
    m_real = measure_clips(real)

    per_prompt = []
    for i, p in enumerate(prompts):
        inner_std, agree, correct = [], [], []
        for k in range(len(outer_seeds)):
            draws = [m_inner[k][j][i] for j in range(inner_draws)]
            inner_std.append(feature_std(draws))
            readings = [_reading(m) for m in draws]
            agree.append(Counter(readings).most_common(1)[0][1] / inner_draws)
            correct.append(sum(r == (p.colour, p.shape, p.direction, p.speed) for r in readings) / inner_draws)
        per_prompt.append({
            "prompt": p.text,
            "inner": _mean(inner_std),
            "outer": feature_std([m_outer[k][i] for k in range(len(outer_seeds))]),
            "real": feature_std(m_real[i * len(real_seeds):(i + 1) * len(real_seeds)]),
            "agree": sum(agree) / len(agree),
            "inner_correct": sum(correct) / len(correct),
        })
    res = {k: _mean(r[k] for r in per_prompt) for k in ("inner", "outer", "real", "agree", "inner_correct")}
    res["ratio"] = None if res["inner"] is None or not res["outer"] else res["inner"] / res["outer"]
    res.update(per_prompt=per_prompt, outer_seeds=outer_seeds, inner_draws=inner_draws)
    return res


__all__ = ["feature_std", "noise_spread"]
