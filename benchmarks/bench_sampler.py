"""Sampler efficiency (docs/design.md §13, performance contract): sample_tmd wall time vs effective NFE x one teacher forward,
and the speed-up over the 50-step CFG teacher. Prints JSON; never a timed test.

    python benchmarks/bench_sampler.py [--layers 12 --head-blocks 2 --dim 128 --tokens-side 16 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    from diffusers import WanTransformer3DModel

    import tmd_core as tmd
    from tmd_core.sampler import teacher_velocity

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--head-blocks", type=int, default=2)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--side", type=int, default=16, help="latent height = width")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--teacher-steps", type=int, default=50)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    heads = max(1, args.dim // 64)
    teacher = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=args.dim // heads,
                                    in_channels=16, out_channels=16, text_dim=64, freq_dim=256, ffn_dim=4 * args.dim,
                                    num_layers=args.layers).eval()
    student = tmd.TMDModel.from_teacher(teacher, head_blocks=args.head_blocks)
    noise = tmd.make_noise((1, 16, args.frames, args.side, args.side), seed=0)
    ctx = tmd.make_noise((1, 32, 64), seed=1)
    neg = torch.zeros_like(ctx)
    with torch.no_grad():
        t_forward = timeit(lambda: teacher_velocity(teacher, noise, 0.5, ctx), args.repeats)
    out = {"config": vars(args), "threads": torch.get_num_threads(), "seconds_teacher_forward": t_forward, "rows": []}
    t_teacher50 = timeit(lambda: tmd.sample_teacher(teacher, noise, ctx, steps=args.teacher_steps, guidance_scale=5.0,
                                                   negative_context=neg), 1)
    out["seconds_teacher_50_cfg"] = t_teacher50
    for m, n in ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4), (3, 2)):
        sched = tmd.TMDSchedule(outer_steps=m, inner_steps=n)
        t = timeit(lambda s=sched: tmd.sample_tmd(student, noise, ctx, s), args.repeats)
        nfe = student.effective_nfe(m, n)
        out["rows"].append({"outer": m, "inner": n, "effective_nfe": round(nfe, 3), "seconds": round(t, 4),
                            "ratio_to_nfe_x_forward": round(t / (nfe * t_forward), 3),
                            "speedup_vs_teacher50cfg": round(t_teacher50 / t, 1),
                            "speedup_target": round(0.95 * 100 / nfe, 1)})
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
