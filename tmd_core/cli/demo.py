"""`tmd demo`: the README's main job on the embedded default, the toy world (`tmd toy demo`).

`--random` (or a package without the toy checkpoints) instead samples a small randomly
initialised Wan-architecture model: the numbers then show the sampler's cost, not video quality.
"""

from __future__ import annotations

import json
import time

import torch

from .toy import add_demo_arguments


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the TMD sampler end to end on the embedded default model",
                       description="The toy world's teacher (50 steps, CFG) against its TMD student, side by side, "
                       "and a quick ToyBench plot (= `tmd toy demo`); with --random, a randomly initialised "
                       "Wan-architecture model that shows the sampler's cost only.")
    add_demo_arguments(p)
    p.add_argument("--random", action="store_true", help="a random-weight model instead of the toy world")
    p.add_argument("--head-blocks", type=int, default=2, help="--random: flow-head blocks H (default %(default)s)")
    p.add_argument("--layers", type=int, default=12, help="--random: blocks L of the model (default %(default)s)")
    p.add_argument("--json", action="store_true", help="--random: print the result as JSON")
    p.set_defaults(func=run)


def _random_wan(layers: int, seed: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16, out_channels=16,
        text_dim=64, freq_dim=64, ffn_dim=512, num_layers=layers, rope_max_seq_len=256,
    ).eval()


def run(args) -> int:
    import sys

    from ..toy.demo import toy_world_problem

    problem = None if args.random else toy_world_problem()
    if not args.random and problem is None:
        from .toy import run_demo

        args.prompt, args.no_plot = None, False
        return run_demo(args)
    if problem:
        print(f"note: {problem}, so this is `tmd demo --random` (the sampler's cost on random weights); "
              "`tmd toy train --install` retrains the toy world", file=sys.stderr)
    return run_random(args)


def check_random(args) -> None:
    from ..validation import MAX_STEPS, check_int, check_seed

    check_int("--layers", args.layers, 2, 64)
    check_int("--head-blocks", args.head_blocks, 1, args.layers - 1,
              hint=f"the model has {args.layers} blocks and the backbone needs at least one")
    check_int("--outer-steps", args.outer_steps, 1, MAX_STEPS)
    check_int("--inner-steps", args.inner_steps, 1, MAX_STEPS)
    check_seed("--seed", args.seed, count=2)


def run_random(args) -> int:
    from ..model import TMDModel
    from ..noise import make_noise
    from ..sampler import sample_teacher, sample_tmd
    from ..schedule import TMDSchedule

    check_random(args)
    teacher = _random_wan(args.layers, args.seed)
    student = TMDModel.from_teacher(teacher, head_blocks=args.head_blocks)
    sched = TMDSchedule(outer_steps=args.outer_steps, inner_steps=args.inner_steps)
    context = make_noise((1, 16, 64), seed=args.seed + 1)
    noise = make_noise((1, 16, 4, 16, 16), seed=args.seed)
    sample_tmd(student, noise, context, TMDSchedule(1, 1))  # warm-up
    t0 = time.perf_counter()
    x = sample_tmd(student, noise, context, sched)
    t_tmd = time.perf_counter() - t0
    t0 = time.perf_counter()
    sample_teacher(teacher, noise, context, steps=4, guidance_scale=1.0)
    t_step = (time.perf_counter() - t0) / 4
    nfe = student.effective_nfe(sched.outer_steps, sched.inner_steps)
    res = {
        "model": f"random-init Wan DiT, {args.layers} blocks (dim 128), head H = {args.head_blocks}",
        "outer_steps": sched.outer_steps, "inner_steps": sched.inner_steps,
        "effective_nfe": round(nfe, 3), "seconds": round(t_tmd, 4),
        "seconds_per_transition": round(t_tmd / sched.outer_steps, 4),
        "seconds_per_teacher_step": round(t_step, 4),
        "measured_cost_in_teacher_steps": round(t_tmd / t_step, 3),
        "latent": list(x.shape), "finite": bool(torch.isfinite(x).all()),
    }
    if args.json:
        print(json.dumps(res))
    else:
        print("TMD demo (random weights: this shows the sampler's cost, not video quality)")
        for k, v in res.items():
            print(f"  {k:30s} {v}")
    return 0
