"""The README's main job on the toy world: teacher (50 steps, CFG) vs TMD side by side, and a plot."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text, load_tmd
from ..errors import InputError, TMDError
from ..loading import load_teacher
from ..noise import make_noise
from ..sampler import sample_teacher, sample_tmd
from ..transition import INNER_VELOCITY
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
from .shipped import ASSETS, asset
from .text import ToyTextEncoder
from .video_io import make_grid, plot_quality_vs_nfe, write_video

MAX_PROMPTS = 64  # prompts per call of the toy demo / `tmd generate --prompt`
MAX_PROMPT_CHARS = 200


def check_toy_prompts(name: str, prompts) -> list[str]:
    """Prompts the toy text encoder reads completely: known words only, at most TEXT_LENGTH of them
    ("" is the null condition). InputError naming `name` otherwise, before anything is loaded."""
    from .text import TEXT_LENGTH, VOCAB, unknown_words, words

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or len(prompts) > MAX_PROMPTS:
        raise InputError(f"{name}: give 1 to {MAX_PROMPTS} prompts, got {len(prompts)}")
    for text in prompts:
        if not isinstance(text, str):
            raise InputError(f"{name}: a prompt must be text, got {type(text).__name__}")
        if len(text) > MAX_PROMPT_CHARS:
            raise InputError(f"{name}: a prompt of {len(text)} characters; toy prompts are at most {TEXT_LENGTH} words "
                             f"({MAX_PROMPT_CHARS} characters), e.g. 'a red circle moving left fast'")
        unknown = unknown_words(text)
        if unknown:
            raise InputError(f"{name}: the toy text encoder does not know {', '.join(map(repr, unknown[:5]))} in "
                             f"{text!r}; it knows: {', '.join(VOCAB[2:])}")
        if len(words(text)) > TEXT_LENGTH:
            raise InputError(f"{name}: {text!r} has {len(words(text))} words, the toy text encoder reads "
                             f"{TEXT_LENGTH}: shorten it, e.g. 'a red circle moving left fast'")
    return prompts


DEMO_PROMPTS = ("a red circle moving left fast", "a blue square moving down slow",
                "a yellow triangle moving right fast", "a cyan cross standing still")


DEMO_FILES = ("teacher_vs_tmd.mp4", "teacher_vs_tmd.gif", "summary.json")
PLOT_FILE = "quality_vs_nfe.png"
QUICK_PROMPTS = 12  # the quick ToyBench behind the plot: the first 12 benchmark prompts x all its seeds


def check_demo(out_dir, prompts, outer_steps: int, inner_steps: int, seed: int, plot: bool, force: bool,
               names: dict | None = None) -> list[str]:
    """The toy demo's inputs and output files, checked before any model is loaded. Returns the prompts.

    Args:
        names: how the caller spells each input (e.g. {"out_dir": "--out"}); defaults to the argument names.
    """
    from ..validation import MAX_STEPS, check_int, check_output_file, check_output_folder, check_seed

    n = {"out_dir": "out_dir", "prompts": "prompts", "outer_steps": "outer_steps", "inner_steps": "inner_steps",
         "seed": "seed", "force": "force=True", **(names or {})}
    prompts = check_toy_prompts(n["prompts"], prompts)
    check_int(n["outer_steps"], outer_steps, 1, MAX_STEPS)
    check_int(n["inner_steps"], inner_steps, 1, MAX_STEPS)
    check_seed(n["seed"], seed, count=len(prompts))
    out = check_output_folder(n["out_dir"], out_dir)
    for name in DEMO_FILES + ((PLOT_FILE,) if plot else ()):
        check_output_file(n["out_dir"], out / name, force=force, force_hint=f"pass {n['force']} to replace it")
    problem = toy_world_problem(plot)
    if problem:
        raise InputError(f"{problem}: retrain the toy world (`tmd toy train --install`), or run `tmd demo --random`")
    return prompts


def toy_world_problem(plot: bool = True) -> str | None:
    """Why the shipped toy world cannot run the demo (a file missing, or from an older toy world), else None."""
    from ..loading import describe_checkpoint
    from ..worlds import is_toy_config

    for name in ("toy_vae", "toy_teacher", "toy_tmd") + (("toy_dmd2v",) if plot else ()):
        path = ASSETS / f"{name}.safetensors"
        if not path.is_file():
            return f"the toy file {name} is not installed ({path})"
        if name == "toy_vae":
            continue
        try:
            info = describe_checkpoint(path)
        except TMDError as e:
            return f"the toy file {name} is unreadable ({e})"
        if not is_toy_config(info["transformer_config"]):
            return (f"the toy file {name} belongs to an older toy world ({info['transformer_config']['in_channels']} "
                    "latent channels, this one has 16)")
        if name == "toy_tmd" and info["tmd_config"]["inner_velocity"] != INNER_VELOCITY:
            return (f"the shipped toy TMD student was trained with the old inner velocity "
                    f"u = {info['tmd_config']['inner_velocity']}")
    return None


def run_demo(out_dir="out/toy_demo", prompts=DEMO_PROMPTS, outer_steps: int = 2, inner_steps: int = 2,
             seed: int = 0, plot: bool = True, force: bool = False, names: dict | None = None) -> dict:
    """Generate `prompts` with the shipped teacher and TMD student; write MP4 + GIF + plot + JSON.

    Every input and output file is checked first (`check_demo`); existing outputs are replaced only with `force`.
    """
    prompts = check_demo(out_dir, prompts, outer_steps, inner_steps, seed, plot, force, names)
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
    if plot:  # a quick ToyBench for the quality-vs-NFE plot: fewer prompts, but every seed of each, so that
        # diversity is measured and "overall" is the README's (mean of adherence, quality, min(1, diversity))
        dmd_path = asset("toy_dmd2v")
        dmd = load_teacher(dmd_path, dtype=torch.float32)
        pairs = quick_pairs()
        bench_rows = run_bench(teacher_methods(teacher, cfg_steps=(50,)) + dmd_methods(dmd) + tmd_methods(student),
                               pairs, progress=False)
        seeds = len(pairs) // QUICK_PROMPTS
        summary["plot"] = plot_quality_vs_nfe(bench_rows, out / PLOT_FILE, metric="overall",
                                              title=f"ToyBench (quick: {QUICK_PROMPTS} prompts x {seeds} seeds)")
        summary["table"] = format_table(bench_rows)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def quick_pairs() -> list:
    """The quick ToyBench's (prompt, seed) pairs: the first QUICK_PROMPTS benchmark prompts with all their seeds."""
    prompts = list(dict.fromkeys(p.text for p, _ in benchmark_set()))[:QUICK_PROMPTS]
    return [(p, s) for p, s in benchmark_set() if p.text in prompts]
