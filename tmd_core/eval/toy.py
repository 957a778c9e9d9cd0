"""The toy world's report: the rows of `tmd toy bench`, scored by ToyBench, in `tmd eval`'s report format.

Nothing is re-implemented: the methods are tmd_core/toy/evaluate.py's (teacher_methods, dmd_methods,
tmd_methods: same names, NFE and noise) and every row is `toy.evaluate.run_bench` on ToyBench's
(prompt, seed) pairs, so with the default settings and the full benchmark set the rows equal those of
`tmd toy bench` (which adds the inner-noise spread and paired comparisons on top). Each scored row is kept
in `<out>/rows/<row>.json` (atomic), keyed by the checkpoints' digests and the pairs; a re-run skips it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ..checkpoint import atomic_write_text
from .settings import TeacherSetting, slug

DEFAULT_TEACHER = "50x4,1x1,2x1,3x1,4x1"  # tmd toy bench: 50 steps with the toy teacher's CFG 4, Euler 1-4 NFE
DEFAULT_TMD = "1x1,1x2,1x4,2x1,2x2,2x4"
DEFAULT_DMD = "1,2,3"


def methods(teacher, students: list[tuple[str, str, object]], teacher_settings: list[TeacherSetting], tmd_grid,
            dmd_steps) -> list:
    """toy.evaluate Methods for the settings; `students` = [(label, "tmd" | "plain", model)] (labels prefix the
    row names only when there is more than one student of a kind)."""
    from ..toy.evaluate import dmd_methods, teacher_methods, tmd_methods
    from ..toy.teacher import TEACHER_CFG, TEACHER_SHIFT

    out = []
    for s in teacher_settings:
        if s.cfg == TEACHER_CFG:
            out += teacher_methods(teacher, cfg_steps=(s.steps,), euler_steps=())
        elif s.cfg == 1.0:
            out += teacher_methods(teacher, cfg_steps=(), euler_steps=(s.steps,))
        else:
            from ..sampler import sample_teacher
            from ..toy.evaluate import Method

            out.append(Method(s.name, s.family, s.nfe, lambda n, c, neg, s=s: sample_teacher(
                teacher, n, c, steps=s.steps, shift=TEACHER_SHIFT, guidance_scale=s.cfg, negative_context=neg)))
    kinds = [kind for _, kind, _ in students]
    for label, kind, model in students:
        ms = tmd_methods(model, tuple(tmd_grid)) if kind == "tmd" else dmd_methods(model, tuple(dmd_steps))
        if kinds.count(kind) > 1:
            ms = [dataclasses.replace(m, name=f"{label}: {m.name}", family=f"{label}: {m.family}") for m in ms]
        out += ms
    return out


def _key(digests: dict, pairs) -> str:
    text = json.dumps({"checkpoints": digests, "pairs": [[p.text, int(s)] for p, s in pairs]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference_rows(vae, pairs) -> list[dict]:
    """Real renders and real renders through the VAE, on `pairs` (the full set: exactly `tmd toy bench`'s)."""
    from ..toy.bench import bench_real, benchmark_set, score_clips
    from ..toy.evaluate import bench_vae_row
    from ..toy.world import render_batch

    if [(p.text, s) for p, s in pairs] == [(p.text, s) for p, s in benchmark_set()] or \
            {(p.text, s) for p, s in pairs} == {(p.text, s) for p, s in benchmark_set() if s == 0}:
        real = bench_real()  # `tmd toy bench` scores real renders on the full set, --quick included
    else:
        real = score_clips(render_batch([p for p, _ in pairs], [s for _, s in pairs]), [p for p, _ in pairs],
                           [s for _, s in pairs])
    rows = [{"name": "real data (renderer)", **real}, bench_vae_row(vae, pairs)]
    return [{k: v for k, v in r.items() if k != "per_clip"} for r in rows]


def score_rows(method_list, pairs, vae, out_dir, digests: dict, progress: bool = True) -> tuple[list[dict], int]:
    """ToyBench rows of `method_list` on `pairs`, each cached in `<out_dir>/rows/`; returns (rows, rows scored now)."""
    from ..toy.evaluate import run_bench

    folder = Path(out_dir) / "rows"
    key = _key(digests, pairs)
    rows, scored = [], 0
    for m in method_list:
        path = folder / f"{slug(m.name)}.json"
        if path.is_file():
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                rows.append(cached["row"])
                continue
        row = run_bench([m], pairs, progress=progress, vae=vae)[0]
        row.pop("per_clip", None)
        row["scorer"] = "ToyBench"
        atomic_write_text(path, json.dumps({"key": key, "row": row}, indent=1) + "\n")
        rows.append(row)
        scored += 1
    return rows, scored
