"""Peak RSS of one stage-2 iteration at the exact Wan2.1 1.3B architecture: full mode vs LoRA mode (issue 11).

Each measurement runs in a fresh process: the teacher is built with random weights (the shipped 1.3B config,
`num_layers` optionally reduced), then the loop's own builders and stage-2 trainer (`training/builders.py`,
`training/steps.py`) make the student (from the teacher), fake score and discriminator, and one stage-2 iteration
runs at step 0, i.e. with a student update (DMD + GAN through the rollout) and a critic update (fake score +
discriminator): the iteration with the most state alive. Reported: the process's peak RSS (`getrusage` maxrss)
and its RSS after the imports, after building, and after the iteration.

Precision (`--precision`, the same for both modes): fp32 teacher, masters and compute (default; bf16 compute ran
several times slower on this CPU, which has no bf16 units), or bf16 everywhere (AdamW moments fp32 in both).
A full-mode 1.3B iteration needs ~49 GB in fp32 and ~37 GB in bf16 (the plan: three networks of 1.4 B parameters
and the AdamW moments of two), more than this machine's 24 GiB, so full mode is measured at the exact 1.3B block
architecture with fewer blocks (`--full-layers`, default 6 and 8) and extrapolated linearly in the number of
blocks to 30; LoRA mode is measured at the same reduced depths (to check the extrapolation against a measurement)
and at the real 30 blocks.

    python benchmarks/bench_lora_memory.py [--out benchmarks/results/lora_memory_1p3b.json] [--precision fp32]
        [--lora-layers 6,8,30] [--full-layers 6,8] [--frames 2 --size 16 --text-len 32] [--rank 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.child_result import child_result  # noqa: E402

GiB = 2**30


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_config(mode: str, rank: int, precision: str):
    """The run config measured: the 1.3B preset (H = 5, GAN on), batch 1, stage 2 from the teacher; teacher, masters
    and compute all fp32, or all bf16 (`precision`)."""
    from tmd_core.training.config import preset

    cfg = preset("wan21_1p3b")
    cfg.model.mode, cfg.model.lora_rank = mode, rank
    cfg.master_dtype = cfg.teacher_dtype = precision
    cfg.mixed_precision = "bf16" if precision == "bf16" else "no"
    cfg.device, cfg.batch_size, cfg.stages = "cpu", 1, ("stage2",)
    cfg.stage2.init_from_teacher = True
    cfg.stage2.disc_layers = None  # (L/2, 3L/4, L-1) of the measured depth
    return cfg


def child(args) -> dict:
    """One measurement (in its own process)."""
    import torch

    torch.set_num_threads(1)
    from tmd_core.training import steps
    from tmd_core.training.builders import build_fake_score, build_stage2_student, load_frozen_teacher
    from tmd_core.training.loop import make_accelerator
    from tmd_core.training.memory_plan import memory_plan, preset_architecture, settings_for
    from tmd_core.wan_build import build_empty_wan, rebuild_rope

    rss_import = _rss()
    tcfg = dict(preset_architecture("wan21_1p3b"), num_layers=args.layers)
    cfg = run_config(args.mode, args.rank, args.precision)
    torch.manual_seed(0)
    with torch.device("meta"):
        teacher = build_empty_wan(tcfg)
    teacher = teacher.to_empty(device="cpu").to(torch.bfloat16 if args.precision == "bf16" else torch.float32)
    rebuild_rope(teacher)
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_(0, 0.02)
    teacher = load_frozen_teacher(cfg, teacher, "cpu")
    acc = make_accelerator(cfg)
    student = build_stage2_student(cfg, teacher, "cpu", None)
    trainer = steps.make_trainer("stage2", cfg, student, teacher, acc, build_fake_score)
    rss_built = _rss()
    g = torch.Generator().manual_seed(0)
    shape = (1, tcfg["in_channels"], args.frames, args.size, args.size)
    batch = {"latents": torch.randn(shape, generator=g), "context": torch.randn(1, args.text_len, 4096, generator=g),
             "negative_context": torch.randn(1, args.text_len, 4096, generator=g)}
    t0 = time.perf_counter()
    logs = trainer.step(0, batch, g)  # step 0: the student's update and the critics'
    seconds = time.perf_counter() - t0
    plan = memory_plan(cfg, tcfg, settings_for(cfg, processes=1, sharding="full"))
    held = {name: {"params": sum(p.nbytes for p in m.parameters() if p.requires_grad),
                   "optimizer": sum(v.nbytes for st in opt.state.values() for k, v in st.items()
                                    if isinstance(v, torch.Tensor) and k != "step")}
            for name, (m, opt) in trainer.optimizers.items()}
    teacher_bytes = sum(p.nbytes for p in teacher.parameters())
    return {"mode": args.mode, "layers": args.layers, "peak_rss": _peak_rss(), "rss_after_import": rss_import,
            "rss_after_build": rss_built, "rss_after_iteration": _rss(), "seconds": round(seconds, 1),
            "teacher_bytes": teacher_bytes, "trained_bytes": held, "plan_bytes": plan["peak"],
            "losses": {k: float(v) for k, v in logs.items() if "loss" in k}}


def fit(points: list[tuple[int, float]], at: int) -> float:
    """Least-squares line through (layers, bytes), evaluated at `at`."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my + slope * (at - mx)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("full", "lora"))
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--lora-layers", default="6,8,30")
    ap.add_argument("--full-layers", default="6,8")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="teacher, masters and compute (bf16 is several times slower on CPUs without bf16 units)")
    ap.add_argument("--frames", type=int, default=2, help="latent frames (2 = 5 video frames)")
    ap.add_argument("--size", type=int, default=16, help="latent height = width (16 = 128 px)")
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lora_memory_1p3b.json"))
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    import torch

    runs = []
    todo = [("lora", int(x)) for x in args.lora_layers.split(",") if x] + \
           [("full", int(x)) for x in args.full_layers.split(",") if x]
    for mode, layers in todo:
        cmd = [sys.executable, __file__, "--child", "--mode", mode, "--layers", str(layers), "--rank", str(args.rank),
               "--precision", args.precision,
               "--frames", str(args.frames), "--size", str(args.size), "--text-len", str(args.text_len)]
        env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        t0 = time.time()
        r = child_result(cmd, env, "RESULT ", f"{mode} at {layers} layers")
        runs.append(r)
        print(f"{mode:>4} L={layers:>2}: peak RSS {r['peak_rss'] / GiB:6.2f} GiB (built {r['rss_after_build'] / GiB:.2f}, "
              f"imports {r['rss_after_import'] / GiB:.2f}), plan {r['plan_bytes'] / GiB:.2f} GiB, iteration "
              f"{r['seconds']:.0f} s, wall {time.time() - t0:.0f} s", flush=True)

    def series(mode):
        return [(r["layers"], r["peak_rss"]) for r in runs if r["mode"] == mode]

    summary = {}
    lora30 = [r for r in runs if r["mode"] == "lora" and r["layers"] == 30]
    lora_small = [p for p in series("lora") if p[0] != 30]
    full_small = series("full")
    if lora30 and len(full_small) >= 2:
        full30 = fit(full_small, 30)
        summary = {"lora_peak_rss_30_measured": lora30[0]["peak_rss"], "full_peak_rss_30_extrapolated": full30,
                   "ratio_lora_over_full_30": lora30[0]["peak_rss"] / full30}
        if len(lora_small) >= 2:
            summary["lora_peak_rss_30_extrapolated"] = fit(lora_small, 30)
            summary["lora_extrapolation_error"] = summary["lora_peak_rss_30_extrapolated"] / lora30[0]["peak_rss"] - 1
        same = {r["layers"] for r in runs if r["mode"] == "full"} & {r["layers"] for r in runs if r["mode"] == "lora"}
        summary["ratio_lora_over_full_measured"] = {
            str(n): next(r["peak_rss"] for r in runs if r["mode"] == "lora" and r["layers"] == n)
            / next(r["peak_rss"] for r in runs if r["mode"] == "full" and r["layers"] == n) for n in sorted(same)}
    result = {"benchmark": "lora_memory", "config": f"wan21_t2v_1.3b (random {args.precision} weights)",
              "precision": f"teacher, masters and compute {args.precision}; AdamW moments fp32",
              "iteration": "stage 2, step 0: student update (DMD + GAN, N=2 rollout, H=5) + critic update (fake score "
                           "+ discriminator); batch 1",
              "latent": [1, 16, args.frames, args.size, args.size], "text_len": args.text_len, "rank": args.rank,
              "threads": 1, "python": platform.python_version(), "torch": torch.__version__,
              "measured": time.strftime("%Y-%m-%d"), "runs": runs, "summary": summary}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
