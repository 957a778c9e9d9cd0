"""`tmd toy ...`: the toy world — demo, bench, train (docs/toy_world.md)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("toy", help="the toy world: demo, bench, train from scratch")
    verbs = p.add_subparsers(dest="toy_verb", metavar="TOY_VERB")
    d = verbs.add_parser("demo", help="teacher (50 steps, CFG) vs TMD side by side, as MP4 + GIF, and a plot")
    add_demo_arguments(d)
    d.add_argument("--prompt", action="append", help="a toy prompt (repeatable), e.g. 'a red circle moving left fast'")
    d.add_argument("--no-plot", action="store_true", help="skip the quick ToyBench behind the plot")
    d.set_defaults(func=run_demo)
    b = verbs.add_parser("bench", help="ToyBench: every method on the fixed prompt x seed set; table + JSON")
    b.add_argument("--json", default="benchmarks/results/toybench.json", help="where to write the results "
                   "(default %(default)s, replaced)")
    b.add_argument("--plot", default="benchmarks/results/toybench_quality_vs_nfe.png",
                   help="where to draw quality against effective NFE (default %(default)s, replaced)")
    b.add_argument("--quick", action="store_true", help="one seed per prompt instead of four")
    b.add_argument("--run-dir", help="bench the checkpoints of a `tmd toy train` run folder instead of the shipped ones")
    b.set_defaults(func=run_bench)
    t = verbs.add_parser("train", help="retrain teacher, data, TMD student and DMD2-v baseline from scratch")
    t.add_argument("--run-dir", default="runs/toy", help="run folder; re-running continues where it stopped "
                   "(default %(default)s)")
    t.add_argument("--install", action="store_true", help="copy the results into the package's shipped assets")
    t.set_defaults(func=run_train)
    q = verbs.add_parser("distill", help="a short TMD distillation of the toy teacher in one command (minutes on a CPU)",
                         description="Make a small data set with the toy teacher (toy prompts, its own text encoder) "
                         "and run stage 1 and stage 2 on it, in one run folder. A quick look at the whole method, far "
                         "below the shipped student's budget (tmd toy train). Re-run with --resume after a stop.")
    from ..toy.retrain import QuickPlan

    plan = QuickPlan()
    q.add_argument("--run-dir", default="runs/toy_quick", help="run folder: data, log, state, the student "
                   "toy_quick.safetensors (default %(default)s)")
    q.add_argument("--teacher", help="a toy-world teacher file (default: the shipped toy_teacher)")
    q.add_argument("--prompts", type=int, default=plan.prompts, help="training prompts, spread over the 192 of the "
                   "training split (default %(default)s)")
    q.add_argument("--samples-per-prompt", type=int, default=plan.samples_per_prompt,
                   help="teacher samples per prompt (default %(default)s)")
    q.add_argument("--teacher-steps", type=int, default=plan.teacher_steps,
                   help="the teacher's Euler steps (with CFG) per sample (default %(default)s)")
    q.add_argument("--stage1-iterations", type=int, default=plan.stage1_iterations,
                   help="stage-1 (TM-MF) iterations (default %(default)s)")
    q.add_argument("--stage2-iterations", type=int, default=plan.stage2_iterations,
                   help="stage-2 (DMD2-v with rollout) iterations (default %(default)s)")
    q.add_argument("--batch-size", type=int, default=plan.batch_size, help="samples per step (default %(default)s)")
    q.add_argument("--head-blocks", type=int, default=plan.head_blocks, help="blocks H of the flow head "
                   "(default %(default)s of the toy teacher's 12)")
    q.add_argument("--seed", type=int, default=0, help="seed of the data's noise and of training (default 0)")
    q.add_argument("--resume", action="store_true", help="continue a stopped run in --run-dir")
    q.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the toy models are too small "
                   "to gain from more, and extra threads slow down on shared cores)")
    q.set_defaults(func=run_distill)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def add_demo_arguments(p) -> None:
    """The flags `tmd demo` and `tmd toy demo` share."""
    p.add_argument("--out", default="out/toy_demo", help="folder for the videos, the plot and summary.json "
                   "(default %(default)s)")
    p.add_argument("--outer-steps", type=int, default=2, help="TMD transitions M (default %(default)s)")
    p.add_argument("--inner-steps", type=int, default=2, help="flow-head steps N per transition (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the first prompt; prompt i uses seed + i")
    p.add_argument("--force", action="store_true", help="replace the files of an earlier demo in --out")


DEMO_NAMES = {"out_dir": "--out", "prompts": "--prompt", "outer_steps": "--outer-steps",
              "inner_steps": "--inner-steps", "seed": "--seed", "force": "--force"}


def run_demo(args) -> int:
    from ..toy.demo import DEMO_PROMPTS
    from ..toy.demo import run_demo as demo

    s = demo(args.out, tuple(args.prompt or DEMO_PROMPTS), args.outer_steps, args.inner_steps, args.seed,
             not args.no_plot, force=args.force, names=DEMO_NAMES)
    print(f"teacher 50 steps + CFG: {s['teacher_seconds']:.2f} s   TMD {args.outer_steps}x{args.inner_steps} "
          f"(effective NFE {s['tmd_effective_nfe']}): {s['tmd_seconds']:.3f} s   -> {s['speedup']}x faster")
    print("wrote " + ", ".join(s["files"] + ([s["plot"]] if "plot" in s else [])))
    if "table" in s:
        print(s["table"])
    return 0


def run_bench(args) -> int:
    import dataclasses

    import torch

    from ..checkpoint import load_tmd
    from ..loading import load_teacher
    from ..toy.autoencoder import load_vae
    from ..toy.bench import (
        bench_real,
        benchmark_set,
        compare,
        describe_benchmark,
        format_comparison,
        format_table,
        write_json,
    )
    from ..toy.evaluate import (
        add_noise_spread,
        bench_vae_row,
        dmd_methods,
        run_bench,
        teacher_methods,
        tmd_methods,
    )
    from ..toy.probe import format_sensitivity, word_sensitivity
    from ..toy.retrain import run_outputs
    from ..toy.shipped import asset
    from ..toy.video_io import plot_quality_vs_nfe

    if args.run_dir:
        paths = run_outputs(args.run_dir)
    else:
        paths = {name: asset(name) for name in ("toy_vae", "toy_teacher", "toy_tmd", "toy_dmd2v")}
    vae = load_vae(paths["toy_vae"])
    teacher = load_teacher(paths["toy_teacher"], dtype=torch.float32)
    student = load_tmd(paths["toy_tmd"], dtype=torch.float32)
    dmd = load_teacher(paths["toy_dmd2v"], dtype=torch.float32)
    pairs = [p for p in benchmark_set() if p[1] == 0] if args.quick else benchmark_set()
    real = bench_real()
    real.pop("per_clip", None)
    rows = [{"name": "real data (renderer)", **real}, bench_vae_row(vae, pairs)]
    rows[-1].pop("per_clip", None)
    rows += run_bench(teacher_methods(teacher) + dmd_methods(dmd) + tmd_methods(student), pairs, vae=vae)
    for row in rows:  # does the flow head use its inner noise? (docs/toy_world.md, "inner-noise spread")
        if row["name"] in ("TMD outer 1 x inner 2", "TMD outer 2 x inner 2"):
            sched = dataclasses.replace(student.tmd_config.schedule, outer_steps=int(row["name"].split()[2]),
                                        inner_steps=2)
            add_noise_spread(row, student, sched, vae)
    print(format_table(rows))
    by_name = {r["name"]: r for r in rows}
    comparisons = {}
    for a, b in (("TMD outer 2 x inner 2", "DMD2-v 2-step"), ("TMD outer 1 x inner 2", "DMD2-v 1-step"),
                 ("TMD outer 2 x inner 2", "teacher Euler 3 NFE")):
        if a in by_name and b in by_name:  # paired bootstrap over the same (prompt, seed) pairs
            print(format_comparison(by_name[a], by_name[b]))
            comparisons[f"{a} - {b}"] = {k: compare(by_name[a], by_name[b], k).to_dict()
                                         for k in ("adherence", "quality", "diversity", "overall")}
    for r in rows:
        if "inner_outer_ratio" in r:
            print(f"{r['name']}: inner-noise spread {r['inner_spread']:.4f}, outer {r['outer_spread']:.4f}, "
                  f"inner/outer {r['inner_outer_ratio']:.2f} (real clips of a prompt: {r['real_spread']:.4f})")
    sens = word_sensitivity(teacher, vae=vae)
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


def run_distill(args) -> int:
    import time

    from ..toy.retrain import QuickPlan, quick_distill

    plan = QuickPlan(prompts=args.prompts, samples_per_prompt=args.samples_per_prompt, teacher_steps=args.teacher_steps,
                     stage1_iterations=args.stage1_iterations, stage2_iterations=args.stage2_iterations,
                     batch_size=args.batch_size, head_blocks=args.head_blocks)
    names = {"run_dir": "--run-dir", "teacher": "--teacher", "seed": "--seed", "prompts": "--prompts",
             "samples_per_prompt": "--samples-per-prompt", "teacher_steps": "--teacher-steps",
             "stage1_iterations": "--stage1-iterations", "stage2_iterations": "--stage2-iterations",
             "batch_size": "--batch-size", "head_blocks": "--head-blocks"}
    shown = {"data": -1}

    def progress(phase, done, total, logs):
        if phase == "data" and (done == total or done - shown["data"] >= max(1, total // 10)):
            shown["data"] = done
            print(f"teacher samples {done}/{total}", flush=True)

    import torch

    from ..validation import check_int
    from .distill import graceful_stop

    torch.set_num_threads(check_int("--threads", args.threads, 1, 256))
    t0 = time.perf_counter()
    with graceful_stop() as stop:
        result = quick_distill(args.run_dir, args.teacher, plan, seed=args.seed, resume=args.resume,
                               progress=progress, should_stop=stop, names=names)
    minutes = (time.perf_counter() - t0) / 60
    if not result.complete:
        print(f"stopped after {minutes:.1f} min; continue with the same command plus --resume")
        return 0
    print(f"toy distill: wrote {result.path} in {minutes:.1f} min")
    print(f"try it: tmd generate {result.path} --prompt 'a red circle moving left fast' --out out/toy_quick.safetensors"
          " (writes out/toy_quick.mp4 too)")
    return 0
