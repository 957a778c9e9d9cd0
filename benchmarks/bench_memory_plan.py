"""The memory plan (`tmd distill --plan`) against measured tensor bytes at the exact Wan2.1 1.3B architecture.

Every network of a 1.3B run (teacher, TMD student, fake score, discriminator) is built on the CPU with
random weights, one at a time (peak ~6 GB), and its bytes are counted from the real tensors
(`memory_plan.measure_bytes`: parameters, zero gradients, the loop's AdamW moments after one step, the loop's
EMA), for the two master dtypes the loop trains (`master_dtype`): fp32 weights with torch's AdamW (fp32
moments) and bf16 weights with the loop's MasterAdamW (fp32 moments). The plan's figures for the same
settings are printed beside them.

    python benchmarks/bench_memory_plan.py [--out benchmarks/results/memory_plan_1p3b.json] [--precisions fp32,bf16]

`--precisions bf16` measures only that master dtype and keeps the other entries of an existing --out file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_model(name: str, tcfg: dict, cfg):
    """One network of the run on the CPU with random weights (the same modules as memory_plan.build_models,
    without the copies it makes: the teacher is built once and wrapped)."""
    import torch

    from tmd_core.model import TMDModel
    from tmd_core.training.discriminator import Discriminator
    from tmd_core.wan_build import build_empty_wan, rebuild_rope

    torch.manual_seed(0)
    with torch.device("meta"):
        teacher = build_empty_wan(tcfg)
    teacher = teacher.to_empty(device="cpu")
    rebuild_rope(teacher)
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_(0, 0.02)
    if name == "student":
        return TMDModel.from_teacher(teacher, head_blocks=cfg.model.head_blocks, fusion=cfg.model.fusion,
                                     schedule=cfg.schedule)
    if name == "discriminator":
        return Discriminator.from_teacher(teacher, layers=cfg.stage2.disc_layers)
    return teacher


def main() -> None:
    import torch

    from tmd_core.training.config import preset
    from tmd_core.training.memory_plan import (
        PlanSettings,
        build_models,
        count_params,
        measure_bytes,
        plan_rows,
        preset_architecture,
    )

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory_plan_1p3b.json"))
    ap.add_argument("--precisions", default="fp32,bf16", help="master dtypes to measure (comma-separated)")
    args = ap.parse_args()
    wanted = [p.strip() for p in args.precisions.split(",") if p.strip()]
    torch.set_num_threads(1)
    cfg = preset("wan21_1p3b")
    cfg.ema_decay = 0.99  # measure the EMA too
    tcfg = preset_architecture("wan21_1p3b")
    counts = {k: count_params(m) for k, m in build_models(tcfg, cfg).items()}
    result = {"benchmark": "memory_plan", "config": "wan21_t2v_1.3b", "python": platform.python_version(),
              "torch": torch.__version__, "ema_decay": cfg.ema_decay, "counts_meta": counts, "precisions": {}}
    if Path(args.out).is_file() and set(wanted) != {"fp32", "bf16"}:  # keep what is not re-measured
        old = json.loads(Path(args.out).read_text())
        if old.get("counts_meta") == counts:
            result["precisions"] = {k: v for k, v in old["precisions"].items() if k not in wanted}
            result["seconds_kept"] = old.get("seconds")
    t0 = time.perf_counter()
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype_name not in wanted:
            continue
        measured = {}
        for name in ("teacher", "student", "fake_score", "discriminator"):
            module = one_model(name, tcfg, cfg)
            if name == "teacher":
                module = module.to(torch.bfloat16).requires_grad_(False)
                m = measure_bytes(module, optim_step=False)
            else:
                module = module.to(dtype)
                m = measure_bytes(module, ema=name == "student", chunk_elements=50_000_000)
            m["params"] = count_params(module)
            measured[name] = m
            del module
            print(dtype_name, name, m, f"{time.perf_counter() - t0:.0f}s", flush=True)
        settings = PlanSettings(processes=1, sharding="full", master_dtype=dtype_name)
        rows = {r.name: r for r in plan_rows(counts, cfg, settings, "stage2")}
        planned = {n: dict(r.bytes) for n, r in rows.items()}
        total_m = sum(v for m in measured.values() for k, v in m.items() if k != "params")
        total_p = sum(r.total for r in rows.values())
        result["precisions"][dtype_name] = {
            "measured": measured, "planned": planned, "measured_total_bytes": total_m,
            "planned_total_bytes": total_p, "planned_over_measured": total_p / total_m}
        print(dtype_name, "planned/measured", total_p / total_m, flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
