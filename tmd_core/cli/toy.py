"""`tmd toy ...`: the toy world — demo, bench, train (docs/toy_world.md)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("toy", help="the toy world: demo, bench, train from scratch")
    verbs = p.add_subparsers(dest="toy_verb", metavar="TOY_VERB")
    d = verbs.add_parser("demo", help="teacher (50 steps, CFG) vs TMD side by side, as MP4 + GIF, and a plot")
    d.add_argument("--out", default="out/toy_demo")
    d.add_argument("--outer-steps", type=int, default=2)
    d.add_argument("--inner-steps", type=int, default=2)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--prompt", action="append", help="a toy prompt (repeatable), e.g. 'a red circle moving left fast'")
    d.add_argument("--no-plot", action="store_true", help="skip the quick ToyBench behind the plot")
    d.set_defaults(func=run_demo)
    b = verbs.add_parser("bench", help="ToyBench: every method on the fixed prompt x seed set; table + JSON")
    b.add_argument("--json", default="benchmarks/results/toybench.json", help="where to write the results")
    b.add_argument("--plot", default="benchmarks/results/toybench_quality_vs_nfe.png")
    b.add_argument("--quick", action="store_true", help="one seed per prompt instead of four")
    b.add_argument("--run-dir", help="bench the checkpoints of a `tmd toy train` run folder instead of the shipped ones")
    b.set_defaults(func=run_bench)
    t = verbs.add_parser("train", help="retrain teacher, data, TMD student and DMD2-v baseline from scratch")
    t.add_argument("--run-dir", default="runs/toy")
    t.add_argument("--install", action="store_true", help="copy the results into the package's shipped assets")
    t.set_defaults(func=run_train)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_demo(args) -> int:
    from ..toy.demo import DEMO_PROMPTS
    from ..toy.demo import run_demo as demo

    s = demo(args.out, tuple(args.prompt or DEMO_PROMPTS), args.outer_steps, args.inner_steps, args.seed, not args.no_plot)
    print(f"teacher 50 steps + CFG: {s['teacher_seconds']:.2f} s   TMD {args.outer_steps}x{args.inner_steps} "
          f"(effective NFE {s['tmd_effective_nfe']}): {s['tmd_seconds']:.3f} s   -> {s['speedup']}x faster")
    print("wrote " + ", ".join(s["files"] + ([s["plot"]] if "plot" in s else [])))
    if "table" in s:
        print(s["table"])
    return 0


def run_bench(args) -> int:
    import torch

    from ..checkpoint import load_tmd
    from ..loading import load_teacher
    from ..toy.bench import (
        bench_real,
        benchmark_set,
        compare,
        describe_benchmark,
        format_comparison,
        format_table,
        write_json,
    )
    from ..toy.evaluate import dmd_methods, run_bench, teacher_methods, tmd_methods
    from ..toy.probe import format_sensitivity, word_sensitivity
    from ..toy.retrain import run_outputs
    from ..toy.shipped import asset
    from ..toy.video_io import plot_quality_vs_nfe

    if args.run_dir:
        paths = run_outputs(args.run_dir)
    else:
        paths = {name: asset(name) for name in ("toy_teacher", "toy_tmd", "toy_dmd2v")}
    teacher = load_teacher(paths["toy_teacher"], dtype=torch.float32)
    student = load_tmd(paths["toy_tmd"], dtype=torch.float32)
    dmd = load_teacher(paths["toy_dmd2v"], dtype=torch.float32)
    pairs = [p for p in benchmark_set() if p[1] == 0] if args.quick else benchmark_set()
    real = bench_real()
    real.pop("per_clip", None)
    rows = [{"name": "real data (renderer)", **real}]
    rows += run_bench(teacher_methods(teacher) + dmd_methods(dmd) + tmd_methods(student), pairs)
    print(format_table(rows))
    by_name = {r["name"]: r for r in rows}
    comparisons = {}
    for a, b in (("TMD outer 2 x inner 2", "DMD2-v 2-step"), ("TMD outer 2 x inner 2", "teacher Euler 3 NFE")):
        if a in by_name and b in by_name:  # paired bootstrap over the same (prompt, seed) pairs
            print(format_comparison(by_name[a], by_name[b]))
            comparisons[f"{a} - {b}"] = {k: compare(by_name[a], by_name[b], k).to_dict()
                                         for k in ("adherence", "quality", "diversity", "overall")}
    sens = word_sensitivity(teacher)
    print("teacher word use (relative loss increase when the word is swapped):")
    print(format_sensitivity(sens, indent="  "))
    meta = {**describe_benchmark(), "quick": args.quick, "checkpoints": args.run_dir or "shipped assets",
            "teacher_word_sensitivity": sens, "paired_differences": comparisons}
    write_json(args.json, rows, meta=meta, per_clip=False)
    plot_quality_vs_nfe(rows, args.plot, metric="overall", title="ToyBench")
    print(f"wrote {args.json} and {args.plot}")
    return 0


def run_train(args) -> int:
    from ..toy.retrain import train_all

    print(json.dumps(train_all(args.run_dir, install=args.install), indent=1))
    return 0
