"""The toy-world study behind the README's TMD vs DMD2-v table: variants × training seeds, benched with ToyBench.

    python benchmarks/toy_study.py run s1_tmmf --seed 0        # stage 1 (TM-MF), 1.5k iterations
    python benchmarks/toy_study.py run tmd_w0.3 --seed 0       # stage 2 from s1_tmmf (same seed), TM-MF weight 0.3
    python benchmarks/toy_study.py run dmd2v --seed 0          # the DMD2-v baseline, same stage-2 budget
    python benchmarks/toy_study.py bench tmd_w0.3 --seed 0     # ToyBench rows (+ inner-noise spread) -> bench.json
    python benchmarks/toy_study.py report                      # all benched runs -> results/toy_study.{json,md}, plots
    python benchmarks/toy_study.py all --jobs 2                # every run of STUDY not yet benched, then report

Every run is `tmd_core.training.loop.run_distill` on the toy preset with the overrides of its variant,
on one teacher and one data folder (`--world`, a `tmd toy train` run folder: vae, teacher, data), into
`--out/<variant>_s<seed>/` (config.yaml, log.jsonl, checkpoints; re-running resumes). One torch thread per
process, so two runs share the two cores of this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

STAGE1 = {  # stage-1 variants: overrides of the toy preset
    "s1_tmmf": {},
    "s1_tm": {"stage1": {"plain_tm": True}},
    "s1_concat": {"model": {"fusion": "concat"}},
    "s1_tmmf_3k": {"stage1": {"iterations": 3000}},
    # LoRA mode (docs/design.md §7): rank 16 of the toy's width 128 on every block's linears, same budget and lrs
    "s1_tmmf_lora": {"model": {"mode": "lora", "lora_rank": 16}},
}


def variant(name: str) -> tuple[dict, str | None]:
    """(overrides, stage-1 variant it starts from or None) of a variant name.

    Stage-2 names: dmd2v; tmd_w<weight>[_from_<stage-1 variant>][_lr<student lr>][_dmdshift<γ>][_lora]
    (`_lora`: LoRA mode, from the stage-1 variant's LoRA-mode twin, e.g. tmd_w0.3_lora from s1_tmmf_lora).
    """
    if name in STAGE1:
        return {"stages": ["stage1"], **STAGE1[name]}, None
    if name == "dmd2v":
        return {"stages": ["stage2"], "name": "toy_dmd2v", "stage2": {"student_kind": "dmd", "tmmf_weight": 0.0}}, None
    if name.startswith("dmd2v_dmdshift"):
        return {"stages": ["stage2"], "name": "toy_dmd2v", "stage2": {"student_kind": "dmd", "tmmf_weight": 0.0, "dmd_shift": float(name[14:])}}, None
    if not name.startswith("tmd_w"):
        raise SystemExit(f"unknown variant {name!r}")
    parts = name[5:].split("_")
    s2 = {"tmmf_weight": float(parts[0])}
    start, over = "s1_tmmf", {}
    for p in parts[1:]:
        if p.startswith("from"):
            start = "s1_" + p[4:]
        elif p.startswith("lr"):
            s2["lr_student"] = float(p[2:])
        elif p.startswith("dmdshift"):
            s2["dmd_shift"] = float(p[8:])
        elif p == "lora":
            start += "_lora"
        else:
            raise SystemExit(f"unknown part {p!r} of {name!r}")
    over = {"stages": ["stage2"], "stage2": s2, **{k: v for k, v in STAGE1[start].items() if k == "model"}}
    return over, start


def run_dir(out: Path, name: str, seed: int) -> Path:
    return out / f"{name}_s{seed}"


def result_path(out: Path, name: str, seed: int) -> Path:
    d = run_dir(out, name, seed)
    if name in STAGE1:
        return d / "toy_tmd.safetensors"
    return d / ("toy_dmd2v.safetensors" if name.startswith("dmd2v") else "toy_tmd.safetensors")


def cmd_run(args) -> None:
    from tmd_core.training.config import apply_overrides, preset
    from tmd_core.training.loop import run_distill

    world = Path(args.world)
    over, start = variant(args.variant)
    cfg = preset("toy")
    apply_overrides(cfg, {k: v for k, v in over.items() if k != "stages"})
    cfg.stages = tuple(over["stages"])
    cfg.seed = args.seed
    if args.iterations:  # smoke runs
        cfg.stage1.iterations = cfg.stage2.iterations = args.iterations
    cfg.model.teacher, cfg.data = str(world / "teacher.safetensors"), str(world / "data")
    cfg.output_dir = str(run_dir(Path(args.out), args.variant, args.seed))
    if start is not None:
        init = result_path(Path(args.out), start, args.seed)
        if not init.is_file():
            raise SystemExit(f"{args.variant} starts from {init}: run `toy_study.py run {start} --seed {args.seed}` first")
        cfg.model.student_init = str(init)
    path = run_distill(cfg, resume=(Path(cfg.output_dir) / "log.jsonl").exists())  # study.log alone is no run
    print(f"wrote {path}")


def _bench_rows(out: Path, name: str, seed: int, world: Path, quick: bool) -> list[dict]:
    from tmd_core.checkpoint import load_tmd
    from tmd_core.loading import detect_checkpoint_kind, load_teacher
    from tmd_core.patch_file import load_patched
    from tmd_core.toy.autoencoder import load_vae
    from tmd_core.toy.bench import benchmark_set
    from tmd_core.toy.evaluate import add_noise_spread, dmd_methods, run_bench, tmd_methods

    vae = load_vae(world / "vae.safetensors")
    pairs = [p for p in benchmark_set() if p[1] == 0] if quick else benchmark_set()
    path = result_path(out, name, seed)
    if name.startswith("dmd2v"):
        return run_bench(dmd_methods(load_teacher(path, dtype=torch.float32)), pairs, vae=vae)
    if detect_checkpoint_kind(path) == "tmd-patch":  # a LoRA-mode run's result: the patch on the world's teacher
        model = load_patched(path, world / "teacher.safetensors", dtype=torch.float32)
    else:
        model = load_tmd(path, dtype=torch.float32)
    rows = run_bench(tmd_methods(model, grid=((1, 1), (1, 2), (2, 1), (2, 2), (2, 4))), pairs, vae=vae)
    for row in rows:
        if row["name"] in ("TMD outer 1 x inner 2", "TMD outer 2 x inner 2"):
            m = int(row["name"].split()[2])
            sched = dataclasses.replace(model.tmd_config.schedule, outer_steps=m, inner_steps=2)
            add_noise_spread(row, model, sched, vae)
            print(f"  {row['name']}: inner/outer spread {row['inner_spread']:.4f} / {row['outer_spread']:.4f} "
                  f"= {row['inner_outer_ratio']:.2f} (real {row['real_spread']:.4f})", flush=True)
    return rows


def cmd_bench(args) -> None:
    out = Path(args.out)
    rows = _bench_rows(out, args.variant, args.seed, Path(args.world), args.quick)
    target = run_dir(out, args.variant, args.seed) / ("bench_quick.json" if args.quick else "bench.json")
    doc = {"variant": args.variant, "seed": args.seed, "world": world_label(args), "teacher_sha256": _sha(
        Path(args.world) / "teacher.safetensors"), "rows": rows}
    target.write_text(json.dumps(doc, default=str))
    print(f"wrote {target}")
    if not args.quick:  # the record the report reads, kept in the repository (run folders are not)
        doc["curves"] = _log_curves(run_dir(out, args.variant, args.seed))
        kept = Path(args.results) / "toy_study_runs" / f"{doc['world']}_{args.variant}_s{args.seed}.json"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(_rounded(json.loads(json.dumps(doc, default=str)))))
        print(f"wrote {kept}")


def world_label(args) -> str:
    """The study world a run was trained in: `--world-label`, else the world folder's name (not resolved)."""
    return args.world_label or Path(args.world).name


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _rounded(x):
    """Floats to 6 significant digits (far below any interval the study reports), so the kept records stay small."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def _log_curves(folder: Path) -> dict:
    curves = {}
    log = folder / "log.jsonl"
    if not log.exists():
        return curves
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if "step" not in rec or "stage" not in rec or "event" in rec:
            continue
        for k, v in rec.items():
            if isinstance(v, (int, float)) and k not in ("step", "it_s", "mem_mb"):
                curves.setdefault(f"{rec['stage']}/{k}", []).append((rec["step"], v))
    return curves


KEYS = ("adherence", "quality", "diversity", "overall", "speed_error_px", "background_std",
        "inner_spread", "outer_spread", "inner_outer_ratio")


def cmd_report(args) -> None:
    from tmd_core.toy.bench import compare
    from tmd_core.toy.stats import seed_spread

    kept = Path(args.results) / "toy_study_runs"
    docs = [json.loads(f.read_text()) for f in sorted(kept.glob("*_s*.json"))]
    benches, worlds = {}, {}
    for doc in docs:
        if doc["seed"] in benches.get(doc["variant"], {}):
            raise SystemExit(f"{doc['variant']} seed {doc['seed']} is recorded twice in {kept}: seeds are unique")
        benches.setdefault(doc["variant"], {})[doc["seed"]] = {r["name"]: r for r in doc["rows"]}
        worlds[(doc["variant"], doc["seed"])] = doc["world"]
    summary = {}
    for var, by_seed in benches.items():
        names = sorted({n for rows in by_seed.values() for n in rows})
        for row_name in names:
            key = f"{var} | {row_name}"
            vals = {k: [rows[row_name].get(k) for rows in by_seed.values() if row_name in rows] for k in KEYS}
            summary[key] = {"variant": var, "row": row_name, "seeds": sorted(by_seed),
                            "worlds": sorted({worlds[(var, sd)] for sd in by_seed}), "nfe": next(
                rows[row_name]["nfe"] for rows in by_seed.values() if row_name in rows)}
            for k, v in vals.items():
                v = [x for x in v if x is not None]
                if v:
                    summary[key][k] = seed_spread(v) if len(v) > 1 else {"mean": v[0], "values": v}
    # paired comparisons seed by seed (same prompts and noise): TMD rows vs DMD2-v rows
    pairs = []
    for tmd_var in [v for v in benches if v.startswith("tmd_w")]:
        for a, b in (("TMD outer 2 x inner 2", "DMD2-v 2-step"), ("TMD outer 1 x inner 2", "DMD2-v 1-step")):
            for seed in sorted(set(benches[tmd_var]) & set(benches.get("dmd2v", {}))):
                ra, rb = benches[tmd_var][seed].get(a), benches["dmd2v"][seed].get(b)
                if ra and rb and "per_clip" in ra and "per_clip" in rb:
                    pairs.append({"a": f"{tmd_var} s{seed} {a}", "b": f"dmd2v s{seed} {b}",
                                  "world": worlds[(tmd_var, seed)],
                                  **{k: compare(ra, rb, k).to_dict() for k in ("adherence", "quality", "diversity")}})
    for var, base in ABLATIONS:  # ablations against their baseline, seed by seed
        rows = ("DMD2-v 2-step", "DMD2-v 1-step") if base == "dmd2v" else ("TMD outer 2 x inner 2", "TMD outer 1 x inner 2")
        for row in rows:
            for seed in sorted(set(benches.get(var, {})) & set(benches.get(base, {}))):
                ra, rb = benches[var][seed].get(row), benches[base][seed].get(row)
                if ra and rb and "per_clip" in ra and "per_clip" in rb and worlds[(var, seed)] == worlds[(base, seed)]:
                    pairs.append({"a": f"{var} s{seed} {row}", "b": f"{base} s{seed} {row}", "world": worlds[(var, seed)],
                                  **{k: compare(ra, rb, k).to_dict() for k in ("adherence", "quality", "diversity")}})
    for f in sorted(kept.glob("*_paired.json")):  # worlds whose per-clip records are lost: their paired results
        old = json.loads(f.read_text())
        pairs += [{**p, "world": old["world"]} for p in old["paired"]]
    seeds = seed_differences(summary)
    doc = {"summary": summary, "paired": pairs, "across_seeds": seeds,
           "curves": {f"{d['variant']}_s{d['seed']}": d.get("curves", {}) for d in docs}}
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "toy_study.json").write_text(json.dumps(doc, indent=1, default=str))
    (res / "toy_study.md").write_text(format_summary(summary, pairs) + "\n" + format_seed_differences(seeds))
    plot_curves(doc["curves"], res / "toy_study_losses.png")
    plot_tradeoff(benches, res / "toy_study_tradeoff.png")
    print(format_summary(summary, pairs))
    print(format_seed_differences(seeds))
    print(f"wrote {res / 'toy_study.json'}, {res / 'toy_study.md'}, {res / 'toy_study_losses.png'}, "
          f"{res / 'toy_study_tradeoff.png'}")


# (variant, baseline), paired seed by seed: the paper's stage-1 ablations, a doubled stage 1, LoRA mode against full
# mode (same seed, same budget), and the DMD time shift of the toy's token count (γ 3) against Wan's (γ 5)
ABLATIONS = (("s1_tm", "s1_tmmf"), ("s1_concat", "s1_tmmf"), ("s1_tmmf_3k", "s1_tmmf"), ("tmd_w0.3_lora", "tmd_w0.3"),
             ("s1_tmmf_lora", "s1_tmmf"), ("tmd_w0.3_dmdshift3", "tmd_w0.3"), ("dmd2v_dmdshift3", "dmd2v"))
COMPARED = (("TMD outer 2 x inner 2", "dmd2v", "DMD2-v 2-step"), ("TMD outer 1 x inner 2", "dmd2v", "DMD2-v 1-step"))


def seed_differences(summary: dict) -> list[dict]:
    """Difference of seed means, TMD variant row minus DMD2-v row, with a Welch t-interval (95 %): a gap counts
    only when this interval excludes 0, i.e. beyond the run-to-run spread of the training seeds."""
    from tmd_core.toy.stats import t_quantile

    out = []
    for key, s in summary.items():
        for row, base_var, base_row in COMPARED:
            b = summary.get(f"{base_var} | {base_row}")
            if s["row"] != row or not s["variant"].startswith("tmd_w") or b is None:
                continue
            rec = {"a": key, "b": f"{base_var} | {base_row}"}
            for k in ("adherence", "quality", "diversity", "overall"):
                sa, sb = s.get(k), b.get(k)
                if not sa or not sb or sa.get("std") is None or sb.get("std") is None:
                    continue
                va, vb = sa["std"] ** 2 / sa["n"], sb["std"] ** 2 / sb["n"]
                se = (va + vb) ** 0.5
                df = max(1, round((va + vb) ** 2 / max(va**2 / (sa["n"] - 1) + vb**2 / (sb["n"] - 1), 1e-30)))
                d = sa["mean"] - sb["mean"]
                rec[k] = {"diff": d, "lo": d - t_quantile(df) * se, "hi": d + t_quantile(df) * se, "df": df}
            out.append(rec)
    return out


def format_seed_differences(diffs: list[dict]) -> str:
    if not diffs:
        return ""
    lines = ["| A (mean over seeds) | B | Δ adherence [95 % CI, Welch] | Δ quality | Δ diversity | Δ overall |",
             "|---|---|---|---|---|---|"]
    for r in diffs:
        cells = [f"{r[k]['diff']:+.3f} [{r[k]['lo']:+.3f}, {r[k]['hi']:+.3f}]" if k in r else "–"
                 for k in ("adherence", "quality", "diversity", "overall")]
        lines.append(f"| {r['a'].replace(' | ', ': ')} | {r['b'].replace(' | ', ': ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(stat) -> str:
    if not stat:
        return "–"
    if stat.get("std") is not None:
        return f"{stat['mean']:.3f} ± {stat['std']:.3f}"
    return f"{stat['mean']:.3f}"


def format_summary(summary: dict, pairs: list) -> str:
    head = ["variant", "row", "NFE", "seeds (worlds)", "adherence", "quality", "diversity", "speed err px", "inner/outer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary.values():
        lines.append("| " + " | ".join([s["variant"], s["row"], f"{s['nfe']:g}",
                                         ",".join(map(str, s["seeds"])) + f" ({','.join(s.get('worlds', []))})",
                                         _cell(s.get("adherence")), _cell(s.get("quality")), _cell(s.get("diversity")),
                                         _cell(s.get("speed_error_px")), _cell(s.get("inner_outer_ratio"))]) + " |")
    if pairs:
        lines += ["", "| world | A | B | Δ adherence [95 % CI] | Δ quality | Δ diversity |", "|---|---|---|---|---|---|"]
        for p in pairs:
            cells = [f"{p[k]['mean']:+.3f} [{p[k]['lo']:+.3f}, {p[k]['hi']:+.3f}]" for k in ("adherence", "quality", "diversity")]
            lines.append(f"| {p.get('world', '')} | {p['a']} | {p['b']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_tradeoff(benches: dict, path: Path, row: str = "TMD outer 2 x inner 2") -> None:
    """One point per TMD run at `row`: its inner-noise use (spread over y1 ÷ spread over the outer noise) against
    its diversity and adherence, next to every DMD2-v 2-step run (horizontal lines) — the
    trade-off the stage-2 TM-MF weight sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    marks = iter("osD^vP*Xh")
    for var in sorted(v for v in benches if v.startswith(("tmd_w", "s1_"))):
        pts = [(rows[row]["inner_outer_ratio"], rows[row]["diversity"], rows[row]["adherence"], seed)
               for seed, rows in benches[var].items() if row in rows and rows[row].get("inner_outer_ratio") is not None]
        if not pts:
            continue
        m = next(marks, "o")
        for ax, i in zip(axes, (1, 2)):
            ax.scatter([p[0] for p in pts], [p[i] for p in pts], marker=m, label=var, s=40)
    base = [rows["DMD2-v 2-step"] for rows in benches.get("dmd2v", {}).values() if "DMD2-v 2-step" in rows]
    for ax, key in zip(axes, ("diversity", "adherence")):
        for k, r in enumerate(base):
            ax.axhline(r[key], color="k", lw=0.8, ls="--", label="DMD2-v 2-step (one line per run)" if k == 0 else None)
        ax.axvline(0.3, color="r", lw=0.8, ls=":", label="inner/outer = 0.3" if key == "diversity" else None)
        ax.set_xlabel("inner-noise spread / outer-noise spread")
        ax.set_ylabel(key)
        ax.set_title(f"{row}: {key}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["stage1/loss", "stage1/mse_head", "stage2/dmd_loss", "stage2/fake_loss", "stage2/tmmf_loss", "stage2/d_accuracy"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, key in zip(axes.flat, keys):
        for run, c in curves.items():
            if key in c:
                xs, ys = zip(*c[key])
                k = max(1, len(ys) // 40)  # moving average over ~1/40 of the run
                sm = [sum(ys[max(0, i - k):i + 1]) / len(ys[max(0, i - k):i + 1]) for i in range(len(ys))]
                ax.plot(xs, sm, label=run, lw=1)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        if key.endswith("mse_head"):
            ax.set_yscale("log")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1:]:
        h, lab = ax.get_legend_handles_labels()
        handles += [x for x, y in zip(h, lab) if y not in labels]
        labels += [y for y in lab if y not in labels]
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=90)


# The study of docs/toy_world.md, in the order it was run: (variant, seeds). Stage-2 runs need their stage-1 run.
STUDY = [
    ("s1_tmmf", (0, 1)),
    ("tmd_w0", (0,)), ("tmd_w1", (0,)), ("tmd_w0.3", (0,)), ("dmd2v", (0,)),
    ("tmd_w0.1", (0,)), ("s1_tmmf", (2,)), ("dmd2v", (1,)), ("dmd2v", (2,)),
    ("tmd_w0.3", (1,)), ("tmd_w1", (1,)), ("tmd_w0", (1,)), ("tmd_w0.1", (1,)),
    ("s1_tm", (0,)), ("s1_concat", (0,)), ("s1_tmmf_3k", (0,)),
]


def _jobs(study) -> list[tuple[str, int, tuple[str, int] | None]]:
    jobs = []
    for name, seeds in study:
        for seed in seeds:
            start = variant(name)[1]
            jobs.append((name, seed, None if start is None else (start, seed)))
    return jobs


def cmd_all(args) -> None:
    """Run and bench every job of STUDY (plus `--extra` variants) not benched yet, `--jobs` at a time."""
    import subprocess
    import time

    out = Path(args.out)
    study = [(n, s) for n, s in STUDY if not args.only or n in args.only]
    study += [(v.split(":")[0], tuple(int(x) for x in v.split(":")[1].split(","))) for v in args.extra]
    todo = [j for j in _jobs(study) if not (run_dir(out, j[0], j[1]) / "bench.json").exists()]
    done = {(n, s) for n, s, _ in _jobs(study) if (run_dir(out, n, s) / "bench.json").exists()}
    running: dict = {}
    base = [sys.executable, __file__, "--world", args.world, "--out", args.out, "--threads", str(args.threads),
            "--iterations", str(args.iterations)]
    while todo or running:
        for key, proc in list(running.items()):
            if proc.poll() is not None:
                del running[key]
                if proc.returncode:
                    raise SystemExit(f"{key} failed (exit {proc.returncode}); see {run_dir(out, *key) / 'study.log'}")
                done.add(key)
        ready = [j for j in todo if j[2] is None or j[2] in done]
        while ready and len(running) < args.jobs:
            name, seed, _ = job = ready.pop(0)
            todo.remove(job)
            folder = run_dir(out, name, seed)
            folder.mkdir(parents=True, exist_ok=True)
            cmd = " && ".join(" ".join(base + [c, name, "--seed", str(seed)]) for c in ("run", "bench"))
            log = open(folder / "study.log", "a")
            running[(name, seed)] = subprocess.Popen(cmd, shell=True, stdout=log, stderr=subprocess.STDOUT)
            print(f"{time.strftime('%H:%M:%S')} started {name} seed {seed}", flush=True)
        if todo and not ready and not running:
            raise SystemExit(f"jobs wait for runs that are not in the study: {todo}")
        time.sleep(5)
    cmd_report(args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("run", "bench", "report", "all"))
    ap.add_argument("variant", nargs="?")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world", default="runs/toy", help="a `tmd toy train` folder with vae, teacher and data")
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--world-label", default="", help="name of the world in the kept records (default: --world's folder name)")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--quick", action="store_true", help="bench one seed per prompt")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=0, help="override the iterations of the stages (smoke runs)")
    ap.add_argument("--jobs", type=int, default=2, help="all: runs at a time")
    ap.add_argument("--extra", action="append", default=[], help="all: also run VARIANT:SEED[,SEED...]")
    ap.add_argument("--only", action="append", default=[], help="all: only these variants of the study")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command in ("run", "bench") and not args.variant:
        ap.error(f"{args.command} needs a variant")
    {"run": cmd_run, "bench": cmd_bench, "report": cmd_report, "all": cmd_all}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
