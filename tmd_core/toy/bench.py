"""ToyBench: VBench-style scores of generated toy clips, computed from their pixels only.

Three groups, each in [0, 1] (real rendered clips score ≈ 1 on all of them):
- adherence: the mean of four accuracies — colour, shape, direction (incl. "still"), speed
  (moving prompts only) — read from the clip by `measure.py`;
- quality: the mean of sharpness (edge width vs real renders), clean background (deviation of
  the pixels away from the object from black) and temporal consistency (object present in every
  frame, stable area, stable colour);
- diversity: for each prompt, the mean pairwise distance between its clips' (position, size)
  features, relative to the same quantity for real renders of the benchmark set.
overall = mean of the three. The fixed benchmark set is `benchmark_set()`: 24 prompts (12 held
out of training, 12 trained) × 4 seeds.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections import Counter, defaultdict

import torch

from ..errors import InputError
from .measure import ClipMeasurement, measure_clips
from .world import (
    COLOURS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    MOTIONS,
    SHAPES,
    Prompt,
    all_prompts,
    as_prompt,
    is_held_out,
    render_batch,
)

BENCH_SEEDS = (0, 1, 2, 3)
BACKGROUND_TOLERANCE = 0.02  # mean deviation (0-1 units, ≈ 5/255) at which the background score is 0.5
AREA_TOLERANCE = 0.1  # area coefficient of variation at which the temporal score halves
COLOUR_TOLERANCE = 0.05  # mean per-frame colour drift (0-1 RGB units) at which the temporal score halves
COLUMNS = ("adherence", "colour", "shape", "direction", "speed", "quality", "diversity", "overall")


def benchmark_prompts() -> list[Prompt]:
    """24 prompts, each colour 4×, each shape 6×, each motion 2-3×: 12 held out of training, 12 trained.

    The held-out half is the held-out prompt of the (colour, shape) pairs k mod 6, k mod 4 (k < 12);
    the trained half covers the other 12 pairs, each with the least used motion so far.
    """
    colours = list(COLOURS)
    by_pair = {(p.colour, p.shape): p for p in all_prompts() if is_held_out(p)}
    held_out = [by_pair[colours[k % 6], SHAPES[k % 4]] for k in range(12)]
    used = Counter((p.direction, p.speed) for p in held_out)
    trained = []
    for k in range(12):
        colour, shape = colours[k % 6], SHAPES[(k + 1) % 4]
        options = [m for m in MOTIONS if not is_held_out(Prompt(colour, shape, *m))]
        motion = min(options, key=lambda m: (used[m], MOTIONS.index(m)))
        used[motion] += 1
        trained.append(Prompt(colour, shape, *motion))
    return held_out + trained


def benchmark_set() -> list[tuple[Prompt, int]]:
    """The fixed (prompt, seed) pairs of ToyBench: 24 prompts × BENCH_SEEDS, prompt-major (96 pairs)."""
    return [(p, s) for p in benchmark_prompts() for s in BENCH_SEEDS]


@functools.lru_cache(maxsize=4)
def _reference(frames: int, size: int) -> dict:
    """Raw edge sharpness and diversity of real renders of the benchmark set (the 1.0 of those scores)."""
    pairs = benchmark_set()
    clips = render_batch([p for p, _ in pairs], [s for _, s in pairs], frames, size)
    ms = measure_clips(clips)
    return {"edge": sum(m.edge for m in ms) / len(ms), "spread": _spread([p for p, _ in pairs], ms)}


def _spread(prompts: list[Prompt], ms: list[ClipMeasurement]) -> float | None:
    """Mean over prompts (with ≥ 2 clips) of the mean pairwise distance of the clips' features."""
    groups = defaultdict(list)
    for p, m in zip(prompts, ms):
        groups[p].append(torch.tensor(m.features))
    per_prompt = [torch.pdist(torch.stack(g)).mean().item() for g in groups.values() if len(g) >= 2]
    return sum(per_prompt) / len(per_prompt) if per_prompt else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def score_clips(clips, prompts, seeds=None) -> dict:
    """Score generated clips against their prompts.

    Args:
        clips: Tensor[N, 3, F, H, W] (or a list of N Tensor[3, F, H, W]) with values in [-1, 1].
        prompts: N Prompt or prompt texts, one per clip; clips sharing a prompt form its diversity group.
        seeds: optional N ints, kept in the per-clip records.
    Returns:
        dict of scores in [0, 1] (None where not measurable, e.g. diversity with one clip per
        prompt): adherence, colour, shape, direction, speed, all_correct, adherence_held_out,
        adherence_trained, quality, sharpness, background, temporal, diversity, overall; plus
        "clips" (N) and "per_clip" (what was read from each clip).
    """
    if isinstance(clips, (list, tuple)):
        clips = torch.stack(list(clips))
    prompts = [as_prompt(p) for p in prompts]
    seeds = list(seeds) if seeds is not None else [None] * len(prompts)
    if not (len(clips) == len(prompts) == len(seeds)):
        raise InputError(f"got {len(clips)} clips, {len(prompts)} prompts and {len(seeds)} seeds: give one prompt (and seed) per clip")
    if len(clips) == 0:
        raise InputError("no clips to score")
    ms = measure_clips(clips)
    ref = _reference(clips.shape[2], clips.shape[3])

    per_clip = []
    for p, seed, m in zip(prompts, seeds, ms):
        rec = {"prompt": p.text, "seed": seed, "held_out": is_held_out(p),
               "read": {"colour": m.colour, "shape": m.shape, "direction": m.direction, "speed": m.speed}}
        rec["colour"] = float(m.colour == p.colour)
        rec["shape"] = float(m.shape == p.shape)
        rec["direction"] = float(m.direction == p.direction)
        rec["speed"] = None if p.direction == "still" else float(m.direction == p.direction and m.speed == p.speed)
        checks = [rec[k] for k in ("colour", "shape", "direction", "speed") if rec[k] is not None]
        rec["adherence"] = sum(checks) / len(checks)
        rec["all_correct"] = float(all(checks))
        rec["sharpness"] = min(1.0, m.edge / ref["edge"])
        rec["background"] = 1.0 / (1.0 + m.background / BACKGROUND_TOLERANCE)
        rec["temporal"] = m.present / (1.0 + m.area_cv / AREA_TOLERANCE) / (1.0 + m.colour_drift / COLOUR_TOLERANCE)
        rec["quality"] = (rec["sharpness"] + rec["background"] + rec["temporal"]) / 3
        per_clip.append(rec)

    res = {"clips": len(per_clip), "prompts": len(set(prompts))}
    for key in ("colour", "shape", "direction", "speed", "all_correct", "sharpness", "background", "temporal"):
        res[key] = _mean(r[key] for r in per_clip)
    res["adherence"] = _mean(res[k] for k in ("colour", "shape", "direction", "speed"))
    for name, flag in (("adherence_held_out", True), ("adherence_trained", False)):
        res[name] = _mean(r["adherence"] for r in per_clip if r["held_out"] == flag)
    res["quality"] = _mean(res[k] for k in ("sharpness", "background", "temporal"))
    spread = _spread(prompts, ms)
    res["diversity"] = None if spread is None else min(1.0, spread / ref["spread"])
    res["overall"] = _mean(res[k] for k in ("adherence", "quality", "diversity"))
    res["per_clip"] = per_clip
    return res


def bench_real(frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> dict:
    """ToyBench scores of real rendered clips of the benchmark set (the reference row)."""
    pairs = benchmark_set()
    clips = render_batch([p for p, _ in pairs], [s for _, s in pairs], frames, size)
    return score_clips(clips, [p for p, _ in pairs], [s for _, s in pairs])


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_table(rows: list[dict]) -> str:
    """A markdown table, one line per row.

    Args:
        rows: dicts with "name", optional "nfe" and the keys of `score_clips` (e.g.
            `{"name": "TMD 2×2", "nfe": 2.5, **score_clips(...)}`).
    Returns:
        the table as a string (no trailing newline).
    """
    header = ["name", "NFE", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        nfe = row.get("nfe")
        cells = [str(row.get("name", "?")), "–" if nfe is None else f"{nfe:g}"] + [_cell(row.get(k)) for k in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_benchmark() -> dict:
    return {
        "name": "ToyBench",
        "prompts": [p.text for p in benchmark_prompts()],
        "held_out": [p.text for p in benchmark_prompts() if is_held_out(p)],
        "seeds": list(BENCH_SEEDS),
        "scores": {"adherence": "mean of colour, shape, direction, speed accuracy",
                   "quality": "mean of sharpness, background, temporal",
                   "diversity": "per-prompt spread of (position, size) across seeds / real renders",
                   "overall": "mean of adherence, quality, diversity"},
    }


def write_json(path, rows: list[dict], meta: dict | None = None, per_clip: bool = True) -> None:
    """Write {"benchmark": ..., "meta": meta, "rows": rows} to `path` (atomically; parent folders made).

    Args:
        rows: as for `format_table`.
        per_clip: keep each row's "per_clip" records (False drops them for a compact file).
    """
    rows = [r if per_clip else {k: v for k, v in r.items() if k != "per_clip"} for r in rows]
    doc = {"benchmark": describe_benchmark(), "meta": meta or {}, "rows": rows}
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


__all__ = ["BENCH_SEEDS", "bench_real", "benchmark_prompts", "benchmark_set", "describe_benchmark", "format_table",
           "score_clips", "write_json"]
