"""ToyBench runs: generate the benchmark clips with each method and score them (the ToyBench table, docs/toy_world.md)."""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..noise import cpu_generator, make_noise
from ..sampler import sample_dmd, sample_teacher, sample_tmd
from ..schedule import TMDSchedule
from .bench import benchmark_set, score_clips
from .codec import decode_latents
from .latent import LATENT_SHAPE
from .teacher import TEACHER_CFG, TEACHER_SHIFT
from .text import ToyTextEncoder


@dataclass
class Method:
    name: str  # row label
    family: str  # line in the quality-vs-NFE plot
    nfe: float  # (effective) network function evaluations per sample
    run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (noise, ctx, neg) -> latents


def teacher_methods(teacher, cfg_steps=(50,), euler_steps=(1, 2, 3, 4)) -> list[Method]:
    out = [Method(f"teacher {k} steps CFG {TEACHER_CFG:g}", "teacher CFG", 2 * k,
                  lambda n, c, neg, k=k: sample_teacher(teacher, n, c, steps=k, shift=TEACHER_SHIFT,
                                                        guidance_scale=TEACHER_CFG, negative_context=neg))
           for k in cfg_steps]
    out += [Method(f"teacher Euler {k} NFE", "teacher Euler", k,
                   lambda n, c, neg, k=k: sample_teacher(teacher, n, c, steps=k, shift=TEACHER_SHIFT, guidance_scale=1.0))
            for k in euler_steps]
    return out


def dmd_methods(student, steps=(1, 2, 3), shift: float | None = None) -> list[Method]:
    """DMD2-v baseline rows; `shift` defaults to the toy preset's student grid (the grid it was trained on)."""
    if shift is None:
        from ..training.config import preset

        shift = preset("toy").schedule.outer_shift
    return [Method(f"DMD2-v {k}-step", "DMD2-v", k,
                   lambda n, c, neg, k=k: sample_dmd(student, n, c, TMDSchedule(outer_steps=k, inner_steps=1, outer_shift=shift)))
            for k in steps]


def tmd_methods(model, grid=((1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4))) -> list[Method]:
    out = []
    for m, n in grid:
        sched = dataclasses.replace(model.tmd_config.schedule, outer_steps=m, inner_steps=n)
        out.append(Method(f"TMD outer {m} x inner {n}", f"TMD outer {m}", model.effective_nfe(m, n),
                          lambda noise, ctx, neg, s=sched: sample_tmd(model, noise, ctx, s)))
    return out


def pair_seed(prompt, seed: int) -> int:
    """Noise seed of one (prompt, seed) pair: stable across processes (crc32, not Python's salted hash)."""
    return zlib.crc32(prompt.text.encode()) * 1000 + int(seed)


def generate(method: Method, pairs, batch_size: int = 32, vae=None) -> torch.Tensor:
    """Clips Tensor[N, 3, F, H, W] for (prompt, seed) pairs; noise seeded per pair (same across methods).

    `vae`: the toy VAE the models were trained with (a ToyVAE or its path; None: the shipped one)."""
    enc = ToyTextEncoder()
    clips = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        noise = torch.cat([make_noise((1, *LATENT_SHAPE), seed=pair_seed(p, s)) for p, s in chunk])
        ctx = enc.encode([p.text for p, _ in chunk])
        neg = enc.null_context(len(chunk))
        clips.append(decode_latents(method.run(noise, ctx, neg), vae))
    return torch.cat(clips)


def run_bench(methods: list[Method], pairs=None, progress: bool = True, vae=None) -> list[dict]:
    """Score every method on the benchmark set; rows for `format_table` / `plot_quality_vs_nfe`.

    Each row keeps its "per_clip" records, so two rows can be compared with `bench.compare(row_a, row_b,
    key)` (paired bootstrap over the same (prompt, seed) pairs); `write_json(..., per_clip=False)` drops them.
    """
    pairs = pairs if pairs is not None else benchmark_set()
    rows = []
    for m in methods:
        t0 = time.perf_counter()
        clips = generate(m, pairs, vae=vae)
        seconds = time.perf_counter() - t0
        res = score_clips(clips, [p for p, _ in pairs], [s for _, s in pairs])
        rows.append({"name": m.name, "method": m.family, "nfe": round(m.nfe, 3), **res,
                     "seconds_per_clip": round(seconds / len(pairs), 4)})
        if progress:
            print(f"  {m.name:28s} NFE {m.nfe:6.2f}  adherence {_with_ci(res, 'adherence')}  "
                  f"quality {_with_ci(res, 'quality')}  overall {_with_ci(res, 'overall')}  ({seconds:.1f} s)", flush=True)
    return rows


def _with_ci(res: dict, key: str) -> str:
    value, ci = res.get(key), res.get(f"{key}_ci")
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def tmd_sample_fn(model, schedule: TMDSchedule, vae=None) -> Callable:
    """A `spread.noise_spread` sample_fn for a TMD model: the outer noise of (prompt, seed) is the one
    `generate` uses (`pair_seed`); the inner noise y1 comes from `cpu_generator(inner_seed)` (None: the
    sampler's default, derived from the outer noise). Returns decoded clips."""
    enc = ToyTextEncoder()

    def sample_fn(noise_seed: int, inner_seed: int | None, prompts) -> torch.Tensor:
        noise = torch.cat([make_noise((1, *LATENT_SHAPE), seed=pair_seed(p, noise_seed)) for p in prompts])
        gen = None if inner_seed is None else cpu_generator(inner_seed)
        return decode_latents(sample_tmd(model, noise, enc.encode([p.text for p in prompts]), schedule, generator=gen), vae)

    return sample_fn


def bench_vae_row(vae=None, pairs=None) -> dict:
    """ToyBench of real renders passed through the toy VAE (encode, decode): the ceiling of any generator,
    and the reference noise floor (`background_std`) for generated clips."""
    from .codec import encode_clips
    from .world import render_batch

    pairs = pairs if pairs is not None else benchmark_set()
    clips = render_batch([p for p, _ in pairs], [s for _, s in pairs])
    rec = decode_latents(encode_clips(clips, vae), vae)
    res = score_clips(rec, [p for p, _ in pairs], [s for _, s in pairs])
    return {"name": "real data through the VAE", "method": "real", "nfe": None, **res}


SPREAD_PROMPTS = 12  # the first benchmark prompts (held out of training) used for the inner/outer-noise spread


def add_noise_spread(row: dict, model, schedule: TMDSchedule, vae=None, outer_seeds=(0, 1, 2, 3),
                     inner_draws: int = 4) -> dict:
    """Attach the inner-noise sensitivity of a TMD row: spread over y1 with the outer noise fixed, over outer
    noise, and over real renders (fractions of the frame side; spread.py), and inner / outer."""
    from .bench import benchmark_prompts
    from .spread import noise_spread

    res = noise_spread(tmd_sample_fn(model, schedule, vae), benchmark_prompts()[:SPREAD_PROMPTS],
                       outer_seeds=outer_seeds, inner_draws=inner_draws)
    row.update({"inner_spread": res["inner"], "outer_spread": res["outer"], "real_spread": res["real"],
                "inner_outer_ratio": res["ratio"], "inner_agree": res["agree"]})
    return row
