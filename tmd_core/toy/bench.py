"""ToyBench: VBench-style scores of generated toy clips, computed from their pixels only, with intervals.

Three groups (real rendered clips score 1 on adherence and diversity, ≈ 1 on quality):
- adherence: the mean of four accuracies — colour, shape, direction (incl. "still"), speed (moving
  prompts only) — read from the clip by `measure.py` (shape: a discriminant on blur-invariant moments,
  see `measure.shape_reader_accuracy` for how it holds on blurred, noisy and blobby renders);
- quality: the mean of sharpness (edge width vs real renders), clean background (deviation of the
  pixels away from the object from black) and temporal consistency (object present in every frame,
  stable area, stable colour);
- diversity: for each prompt, the mean pairwise distance between the (mean x, mean y, √area) features
  of its clips that follow the prompt (every attribute read right), over the same quantity for real
  renders of the same (prompt, seed) pairs; Σ over prompts / Σ over prompts, counting only prompts
  with ≥ 2 correct clips (`diversity_prompts` says how many). Not capped: > 1 means more spread than
  the world's own. Failed clips never count as diverse; if no prompt has 2 correct clips it is 0.
overall = mean of adherence, quality and min(1, diversity) (more spread than real data earns nothing).

Every headline score comes with a 95 % percentile-bootstrap interval over prompts (`*_ci`; the clips
of a prompt are resampled together, B = 2000, fixed seed), and `compare(a, b, key)` gives the paired
bootstrap interval of the difference between two methods scored on the same (prompt, seed) pairs:
say "A beats B" only when that interval excludes 0. Speed is also measured as a number:
`speed_error_px` = mean |measured − true| centroid speed (px/frame) over moving clips whose direction
was read right, `speed_bias_px` its signed mean. `background_std` is the noise floor away from the
object (0-1 units; real renders: 0).

The fixed benchmark set is `benchmark_set()`: 48 prompts (the 24 held out of training + 24 trained,
each colour 8×, each shape 12×, every motion 5-6×) × seeds 0-3 = 192 clips.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter

import torch

from ..errors import InputError
from .measure import measure_clips
from .stats import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, LEVEL, Interval, bootstrap, resample_weights
from .world import (
    COLOURS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    MOTIONS,
    SHAPES,
    SPEEDS,
    TRAVEL,
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
COLUMNS = ("adherence", "colour", "shape", "direction", "speed", "speed_error_px", "quality", "diversity",
           "diversity_prompts", "overall")
HEADERS = {"speed_error_px": "speed err (px/frame)", "diversity_prompts": "div. prompts"}
CI_KEYS = ("adherence", "quality", "diversity", "overall")
_CLIP_KEYS = ("colour", "shape", "direction", "all_correct", "adherence", "sharpness", "background", "temporal",
              "background_std")


def benchmark_prompts() -> list[Prompt]:
    """48 prompts: the 24 held out of training, then 24 trained ones — each colour 8×, each shape 12×.

    Both halves hold one prompt per (colour, shape) pair; the trained prompt of a pair is the motion
    used least so far (over all 48, then within the shape, then within the colour; ties in MOTIONS
    order) among the pair's trained motions, so every motion appears 5 or 6 times.
    """
    held_out = [p for p in all_prompts() if is_held_out(p)]
    used = Counter((p.direction, p.speed) for p in held_out)
    by_shape = Counter((p.shape, p.direction, p.speed) for p in held_out)
    by_colour = Counter((p.colour, p.direction, p.speed) for p in held_out)
    trained = []
    for colour in COLOURS:
        for shape in SHAPES:
            options = [m for m in MOTIONS if not is_held_out(Prompt(colour, shape, *m))]
            motion = min(options, key=lambda m: (used[m], by_shape[(shape, *m)], by_colour[(colour, *m)],
                                                 MOTIONS.index(m)))
            used[motion] += 1
            by_shape[(shape, *motion)] += 1
            by_colour[(colour, *motion)] += 1
            trained.append(Prompt(colour, shape, *motion))
    return held_out + trained


def benchmark_set() -> list[tuple[Prompt, int]]:
    """The fixed (prompt, seed) pairs of ToyBench: 48 prompts × BENCH_SEEDS, prompt-major (192 pairs)."""
    return [(p, s) for p in benchmark_prompts() for s in BENCH_SEEDS]


def true_speed_px(prompt: Prompt, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> float | None:
    """The prompt's object speed in px/frame (slow 0.914, fast 1.829 at 32 px, 8 frames); None when still."""
    return None if prompt.speed is None else TRAVEL[prompt.speed] * size / (frames - 1)


_REAL_FEATURES: dict[tuple[str, int, int, int], tuple[float, float, float]] = {}


@functools.lru_cache(maxsize=4)
def _reference(frames: int, size: int) -> dict:
    """Raw edge sharpness of real renders of the benchmark set (the 1.0 of the sharpness score)."""
    pairs = benchmark_set()
    ms = measure_clips(render_batch([p for p, _ in pairs], [s for _, s in pairs], frames, size))
    for (p, s), m in zip(pairs, ms):  # the benchmark set's real features, for diversity
        _REAL_FEATURES.setdefault((p.text, s, frames, size), m.features)
    return {"edge": sum(m.edge for m in ms) / len(ms)}


def real_features(pairs, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> list[tuple[float, float, float]]:
    """Diversity features (mean x, mean y, √area) of real renders of (prompt, seed) pairs (memoised)."""
    keys = [(p.text, int(s), frames, size) for p, s in pairs]
    missing = list(dict.fromkeys(k for k in keys if k not in _REAL_FEATURES))
    for i in range(0, len(missing), 256):
        chunk = missing[i:i + 256]
        clips = render_batch([k[0] for k in chunk], [k[1] for k in chunk], frames, size)
        for k, m in zip(chunk, measure_clips(clips)):
            _REAL_FEATURES[k] = m.features
    return [_REAL_FEATURES[k] for k in keys]


def _occurrence_seeds(prompts: list[Prompt]) -> list[int]:
    """Seeds 0, 1, 2, ... per prompt in order of appearance (used when the caller gives no seeds)."""
    seen: Counter = Counter()
    out = []
    for p in prompts:
        out.append(seen[p])
        seen[p] += 1
    return out


def _mean_pairwise(features: list) -> float:
    return torch.pdist(torch.tensor(features, dtype=torch.float64)).mean().item()


# ---- per-prompt totals and the scores computed from them (point estimate and bootstrap alike) -------

def _totals(per_clip: list[dict]) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Per-prompt sums and counts of the per-clip records: (prompt texts, {name: Tensor[G] float64})."""
    order = list(dict.fromkeys(r["prompt"] for r in per_clip))
    gi = {p: i for i, p in enumerate(order)}
    g = len(order)
    t = {k: torch.zeros(g, dtype=torch.float64) for k in
         ("n", *_CLIP_KEYS, "speed", "n_moving", "held_out_adh", "n_held_out", "trained_adh", "n_trained",
          "div_num", "div_den", "div_possible", "div_counted",
          *(f"{k}_{c}" for k in ("err", "bias", "n_err") for c in ("all", *SPEEDS)))}
    by_prompt: dict[str, list[dict]] = {p: [] for p in order}
    for r in per_clip:
        i = gi[r["prompt"]]
        by_prompt[r["prompt"]].append(r)
        t["n"][i] += 1
        for k in _CLIP_KEYS:
            t[k][i] += r[k]
        if r["speed"] is not None:
            t["speed"][i] += r["speed"]
            t["n_moving"][i] += 1
        flag = "held_out" if r["held_out"] else "trained"
        t[f"{flag}_adh"][i] += r["adherence"]
        t[f"n_{flag}"][i] += 1
        if r["speed_error_px"] is not None:
            cls = as_prompt(r["prompt"]).speed
            for c in ("all", cls):
                t[f"err_{c}"][i] += abs(r["speed_error_px"])
                t[f"bias_{c}"][i] += r["speed_error_px"]
                t[f"n_err_{c}"][i] += 1
    for p, recs in by_prompt.items():
        i = gi[p]
        t["div_possible"][i] = float(len(recs) >= 2)
        good = [r for r in recs if r["all_correct"] == 1.0]
        if len(good) >= 2:
            t["div_num"][i] = _mean_pairwise([r["features"] for r in good])
            t["div_den"][i] = _mean_pairwise([r["real_features"] for r in good])
            t["div_counted"][i] = 1.0
    return order, t


def _ratio(w: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    d = w @ den
    return torch.where(d > 0, (w @ num) / torch.where(d > 0, d, 1.0), float("nan"))


def _scores(w: torch.Tensor, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every score for group weights Tensor[B, G] (ones = the data as given): {name: Tensor[B]} (NaN = none)."""
    s = {k: _ratio(w, t[k], t["n"]) for k in _CLIP_KEYS}
    s["speed"] = _ratio(w, t["speed"], t["n_moving"])
    s["adherence"] = torch.stack([s["colour"], s["shape"], s["direction"], s["speed"]]).nanmean(0)
    s["adherence_held_out"] = _ratio(w, t["held_out_adh"], t["n_held_out"])
    s["adherence_trained"] = _ratio(w, t["trained_adh"], t["n_trained"])
    s["quality"] = (s["sharpness"] + s["background"] + s["temporal"]) / 3
    div = _ratio(w, t["div_num"], t["div_den"])
    measurable = (w @ t["div_possible"]) > 0
    s["diversity"] = torch.where(measurable, div.nan_to_num(0.0), float("nan"))  # nothing counted: 0
    s["diversity_prompts"] = w @ t["div_counted"]
    capped = s["diversity"].clamp(max=1.0)
    s["overall"] = torch.where(measurable, (s["adherence"] + s["quality"] + capped) / 3,
                               (s["adherence"] + s["quality"]) / 2)
    for c in ("all", *SPEEDS):
        suffix = "" if c == "all" else f"_{c}"
        s[f"speed_error_px{suffix}"] = _ratio(w, t[f"err_{c}"], t[f"n_err_{c}"])
        s[f"speed_bias_px{suffix}"] = _ratio(w, t[f"bias_{c}"], t[f"n_err_{c}"])
    return s


def _value(x: torch.Tensor) -> float | None:
    v = float(x)
    return None if math.isnan(v) else v


def _intervals(t: dict[str, torch.Tensor], keys, samples: int, seed: int, level: float) -> dict[str, list | None]:
    g = len(t["n"])
    stats = _scores(resample_weights(g, samples, seed), t)
    qs = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    out = {}
    for k in keys:
        v = stats[k][~torch.isnan(stats[k])]
        out[k] = None if len(v) == 0 else [float(q) for q in torch.quantile(v, qs)]
    return out


def score_clips(clips, prompts, seeds=None, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                level: float = LEVEL) -> dict:
    """Score generated clips against their prompts.

    Args:
        clips: Tensor[N, 3, F, H, W] (or a list of N Tensor[3, F, H, W]) with values in [-1, 1].
        prompts: N Prompt or prompt texts, one per clip; clips sharing a prompt form its diversity group
            and are resampled together by the bootstrap.
        seeds: N ints: the render seed each clip stands for (its real counterpart for diversity); without
            them the clips of each prompt stand for seeds 0, 1, 2, ... in order.
        samples, seed, level: bootstrap settings of the intervals.
    Returns:
        dict: adherence, colour, shape, direction, speed, all_correct, adherence_held_out,
        adherence_trained, quality, sharpness, background, temporal, diversity, overall (None where not
        measurable: diversity with one clip per prompt); adherence_ci, quality_ci, diversity_ci,
        overall_ci ([lo, hi]); speed_error_px, speed_bias_px (and _slow / _fast); diversity_prompts;
        background_std; "clips", "prompts" and "per_clip" (what was read from each clip).
    """
    if isinstance(clips, (list, tuple)):
        clips = torch.stack(list(clips))
    prompts = [as_prompt(p) for p in prompts]
    seeds = [int(s) for s in seeds] if seeds is not None else _occurrence_seeds(prompts)
    if not (len(clips) == len(prompts) == len(seeds)):
        raise InputError(f"got {len(clips)} clips, {len(prompts)} prompts and {len(seeds)} seeds: give one prompt (and seed) per clip")
    if len(clips) == 0:
        raise InputError("no clips to score")
    ms = measure_clips(clips)
    frames, size = clips.shape[2], clips.shape[3]
    ref = _reference(frames, size)  # measures the benchmark set's real renders once (and keeps their features)
    reals = real_features(list(zip(prompts, seeds)), frames, size)

    per_clip = []
    for p, sd, m, real in zip(prompts, seeds, ms, reals):
        rec = {"prompt": p.text, "seed": sd, "held_out": is_held_out(p),
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
        rec["speed_px"] = m.speed_px
        rec["true_speed_px"] = true_speed_px(p, frames, size)
        moving_right_way = p.direction != "still" and m.direction == p.direction
        rec["speed_error_px"] = m.speed_px - rec["true_speed_px"] if moving_right_way else None  # signed
        rec["background_std"] = m.background_std
        rec["features"] = list(m.features)
        rec["real_features"] = list(real)
        per_clip.append(rec)
    res = summarize(per_clip, samples=samples, seed=seed, level=level)
    res["per_clip"] = per_clip
    return res


def summarize(per_clip: list[dict], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
              level: float = LEVEL) -> dict:
    """The scores and intervals of `score_clips` from its per-clip records (e.g. a subset of them)."""
    if not per_clip:
        raise InputError("no clips to summarise")
    order, t = _totals(per_clip)
    point = _scores(torch.ones(1, len(order), dtype=torch.float64), t)
    res: dict = {"clips": len(per_clip), "prompts": len(order)}
    for k in ("colour", "shape", "direction", "speed", "all_correct", "adherence", "adherence_held_out",
              "adherence_trained", "sharpness", "background", "temporal", "quality", "diversity", "overall",
              "speed_error_px", "speed_bias_px", *(f"speed_{kind}_px_{c}" for kind in ("error", "bias") for c in SPEEDS),
              "background_std"):
        res[k] = _value(point[k][0])
    res["diversity_prompts"] = int(point["diversity_prompts"][0])
    for k, ci in _intervals(t, CI_KEYS, samples, seed, level).items():
        res[f"{k}_ci"] = None if res[k] is None else ci
    return res


def _aligned(res_a: dict, res_b: dict) -> tuple[list[dict], list[dict]]:
    for name, res in (("first", res_a), ("second", res_b)):
        if not res.get("per_clip"):
            raise InputError(f"the {name} result has no per_clip records: keep them (run_bench keeps them; "
                             "write_json(per_clip=True) stores them)")
    b = {(r["prompt"], r["seed"]): r for r in res_b["per_clip"]}
    pairs = [(r, b[(r["prompt"], r["seed"])]) for r in res_a["per_clip"] if (r["prompt"], r["seed"]) in b]
    if not pairs:
        raise InputError("the two results share no (prompt, seed) pair: score both methods on the same set")
    return [a for a, _ in pairs], [b for _, b in pairs]


def compare(res_a: dict, res_b: dict, key: str = "overall", *, samples: int = BOOTSTRAP_SAMPLES,
            seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> Interval:
    """Paired bootstrap of score A − score B over the (prompt, seed) pairs both were scored on.

    Both scores are recomputed on the common pairs for each resample of prompts (the same resample for
    A and B), so the interval is of the difference itself. Works for every score of `score_clips`
    (composites like overall and diversity included).

    Args:
        res_a, res_b: `score_clips` results (or `run_bench` rows) with their "per_clip" records.
        key: the score to compare.
    Returns:
        Interval(mean difference, lo, hi, prompts); `.excludes_zero` decides "A differs from B".
    """
    a, b = _aligned(res_a, res_b)
    order_a, ta = _totals(a)
    order_b, tb = _totals(b)
    assert order_a == order_b  # aligned records: same prompts in the same order
    if key not in _scores(torch.ones(1, len(order_a), dtype=torch.float64), ta):
        raise InputError(f"unknown score {key!r} for compare")

    def diff(w):
        return _scores(w, ta)[key] - _scores(w, tb)[key]

    return bootstrap(diff, len(order_a), samples=samples, seed=seed, level=level)


def format_comparison(res_a: dict, res_b: dict, keys=CI_KEYS, names: tuple[str, str] | None = None) -> str:
    """Paired differences A − B as a Markdown table: `key | A − B [95 % CI] | beyond the interval?`."""
    a_name = (names or (res_a.get("name", "A"), res_b.get("name", "B")))[0]
    b_name = (names or (res_a.get("name", "A"), res_b.get("name", "B")))[1]
    lines = [f"| {a_name} − {b_name} | difference [95 % CI] | CI excludes 0 |", "|---|---:|:---:|"]
    for k in keys:
        d = compare(res_a, res_b, k)
        cell = "–" if math.isnan(d.mean) else f"{d.mean:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]"
        lines.append(f"| {k} | {cell} | {'yes' if d.excludes_zero else 'no'} |")
    return "\n".join(lines)


def bench_real(frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> dict:
    """ToyBench scores of real rendered clips of the benchmark set (the reference row)."""
    pairs = benchmark_set()
    clips = render_batch([p for p, _ in pairs], [s for _, s in pairs], frames, size)
    return score_clips(clips, [p for p, _ in pairs], [s for _, s in pairs])


def _cell(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    if ci is not None and all(c is not None for c in ci):
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def format_table(rows: list[dict]) -> str:
    """A Markdown table, one line per row; the headline scores as `mean [95 % CI]`.

    Args:
        rows: dicts with "name", optional "nfe" and the keys of `score_clips` (e.g.
            `{"name": "TMD 2×2", "nfe": 2.5, **score_clips(...)}`).
    Returns:
        the table as a string (no trailing newline).
    """
    return method_table(rows, "name", [HEADERS.get(k, k) for k in COLUMNS],
                        lambda row: [_cell(row.get(k), row.get(f"{k}_ci")) for k in COLUMNS])


def method_table(rows: list[dict], first: str, headers: list[str], cells) -> str:
    """A Markdown table of method rows: `first` (the row's name), NFE, then `cells(row)` under `headers`."""
    header = [first, "NFE", *headers]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        nfe = row.get("nfe")
        lines.append("| " + " | ".join([str(row.get("name", "?")), "–" if nfe is None else f"{nfe:g}", *cells(row)])
                     + " |")
    return "\n".join(lines)


def describe_benchmark() -> dict:
    return {
        "name": "ToyBench",
        "prompts": [p.text for p in benchmark_prompts()],
        "held_out": [p.text for p in benchmark_prompts() if is_held_out(p)],
        "seeds": list(BENCH_SEEDS),
        "scores": {"adherence": "mean of colour, shape, direction, speed accuracy",
                   "quality": "mean of sharpness, background, temporal",
                   "diversity": "per prompt, spread of (position, size) over its correct clips (>= 2) / the same "
                                "for real renders of those (prompt, seed) pairs; sum over prompts / sum; uncapped",
                   "overall": "mean of adherence, quality, min(1, diversity)",
                   "speed_error_px": "mean |measured - true| centroid speed (px/frame), moving clips read in the "
                                     "right direction",
                   "intervals": f"95 % percentile bootstrap over prompts, B = {BOOTSTRAP_SAMPLES}, "
                                f"seed {BOOTSTRAP_SEED}"},
    }


def write_json(path, rows: list[dict], meta: dict | None = None, per_clip: bool = True) -> None:
    """Write {"benchmark": ..., "meta": meta, "rows": rows} to `path` (atomically; parent folders made).

    Args:
        rows: as for `format_table`.
        per_clip: keep each row's "per_clip" records (False drops them for a compact file).
    """
    from ..checkpoint import atomic_write_text

    rows = [r if per_clip else {k: v for k, v in r.items() if k != "per_clip"} for r in rows]
    doc = {"benchmark": describe_benchmark(), "meta": meta or {}, "rows": rows}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


__all__ = ["BENCH_SEEDS", "bench_real", "benchmark_prompts", "benchmark_set", "compare", "describe_benchmark",
           "format_comparison", "format_table", "real_features", "score_clips", "summarize", "true_speed_px", "write_json"]
