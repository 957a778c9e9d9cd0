"""The README's main job on the toy world: teacher (50 steps, CFG) vs TMD side by side, and a plot."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from ..checkpoint import load_tmd
from ..loading import load_teacher
from ..noise import make_noise
from ..sampler import sample_teacher, sample_tmd
from .bench import benchmark_set, format_table
from .codec import decode_latents
from .evaluate import (
    LATENT_SHAPE,
    TEACHER_CFG,
    TEACHER_SHIFT,
    dmd_methods,
    run_bench,
    teacher_methods,
    tmd_methods,
)
from .shipped import asset
from .text import ToyTextEncoder
from .video_io import make_grid, plot_quality_vs_nfe, write_video

DEMO_PROMPTS = ("a red circle moving left fast", "a blue square moving down slow",
                "a yellow triangle moving right fast", "a cyan cross standing still")


def run_demo(out_dir="out/toy_demo", prompts=DEMO_PROMPTS, outer_steps: int = 2, inner_steps: int = 2,
             seed: int = 0, plot: bool = True) -> dict:
    """Generate `prompts` with the shipped teacher and TMD student; write MP4 + GIF + plot + JSON."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_teacher(asset("toy_teacher"), dtype=torch.float32)
    student = load_tmd(asset("toy_tmd"), dtype=torch.float32)
    enc = ToyTextEncoder()
    ctx, neg = enc.encode(list(prompts)), enc.null_context(len(prompts))
    noise = torch.cat([make_noise((1, *LATENT_SHAPE), seed=seed + i) for i in range(len(prompts))])
    sched = dataclasses.replace(student.tmd_config.schedule, outer_steps=outer_steps, inner_steps=inner_steps)
    t0 = time.perf_counter()
    x_teacher = sample_teacher(teacher, noise, ctx, steps=50, shift=TEACHER_SHIFT, guidance_scale=TEACHER_CFG,
                               negative_context=neg)
    t_teacher = time.perf_counter() - t0
    t0 = time.perf_counter()
    x_tmd = sample_tmd(student, noise, ctx, sched)
    t_tmd = time.perf_counter() - t0
    nfe = student.effective_nfe(outer_steps, inner_steps)
    rows = [(f"teacher 50 steps CFG (100 NFE) {t_teacher / len(prompts):.2f} s/video", decode_latents(x_teacher)),
            (f"TMD {outer_steps}x{inner_steps} ({nfe:.2f} NFE) {t_tmd / len(prompts):.3f} s/video", decode_latents(x_tmd))]
    grid = make_grid(rows, column_labels=list(prompts))
    files = [write_video(out / "teacher_vs_tmd.mp4", grid, fps=6), write_video(out / "teacher_vs_tmd.gif", grid, fps=6)]
    summary = {"prompts": list(prompts), "teacher_seconds": round(t_teacher, 3), "tmd_seconds": round(t_tmd, 3),
               "tmd_effective_nfe": round(nfe, 3), "speedup": round(t_teacher / t_tmd, 1), "files": [str(f) for f in files]}
    if plot:  # a quick ToyBench (one seed per benchmark prompt) for the quality-vs-NFE plot
        dmd_path = asset("toy_dmd2v")
        dmd = load_teacher(dmd_path, dtype=torch.float32)
        pairs = [p for p in benchmark_set() if p[1] == 0]
        bench_rows = run_bench(teacher_methods(teacher, cfg_steps=(50,)) + dmd_methods(dmd) + tmd_methods(student),
                               pairs, progress=False)
        summary["plot"] = plot_quality_vs_nfe(bench_rows, out / "quality_vs_nfe.png", metric="overall",
                                              title=f"ToyBench (quick: {len(pairs)} prompts x 1 seed)")
        summary["table"] = format_table(bench_rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
