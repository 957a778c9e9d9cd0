"""Benchmark of a stage-2 iteration with flow-head rollout vs a DMD2-v iteration (docs/method.md §5), JSON out.

Performance contract (docs/design.md §13): a stage-2 iteration with rollout costs <= 1.25 x a DMD2-v iteration on
the same model and batch (the paper reports < 1.17). Both students start from the same Wan-architecture
teacher; the teacher, fake score and discriminator are shared. Two figures:

- generator: forward + backward of the generator loss (student sample, DMD with the CFG teacher and the
  fake score, λ·GAN through the teacher's features), no optimizer step;
- cycle: `student_every` iterations with the critic (fake score + discriminator) updated every iteration
  and the student on one of them, optimizer steps included (x̂ reused by the critic on that iteration).

    python benchmarks/bench_stage2.py [--layers 12 --head-blocks 2 --inner-steps 2 --dim 128 --repeats 7]
"""

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tmd_core.model import TMDModel  # noqa: E402
from tmd_core.schedule import TMDSchedule  # noqa: E402
from tmd_core.training.config import Stage2Config  # noqa: E402
from tmd_core.training.discriminator import Discriminator  # noqa: E402
from tmd_core.training.stage2_dmd import critic_loss, generator_loss, generator_sample  # noqa: E402


def build_teacher(args):
    from diffusers import WanTransformer3DModel

    heads = max(1, args.dim // 64)
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=args.dim // heads,
        in_channels=args.channels,
        out_channels=args.channels,
        text_dim=64,
        freq_dim=64,
        ffn_dim=4 * args.dim,
        num_layers=args.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    ).eval()


class Setup:
    """Student (TMD or plain), critic and their optimizers around a shared frozen teacher."""

    def __init__(self, kind, teacher, args):
        self.cfg = Stage2Config(student_kind=kind)
        self.sched = TMDSchedule(outer_steps=args.outer_steps, inner_steps=args.inner_steps)
        base = copy.deepcopy(teacher).requires_grad_(True)
        self.student = TMDModel.from_teacher(base, head_blocks=args.head_blocks) if kind == "tmd" else base
        self.teacher = teacher
        self.fake = copy.deepcopy(teacher).requires_grad_(True)
        self.disc = Discriminator.from_teacher(teacher)
        c = self.cfg
        self.opt_g = torch.optim.AdamW(self.student.parameters(), lr=c.lr_student, betas=c.betas)
        self.opt_c = torch.optim.AdamW(
            [*self.fake.parameters(), *self.disc.parameters()], lr=c.lr_fake, betas=c.betas
        )

    def generator_fb(self, batch, g):
        x_hat, _ = generator_sample(self.student, batch, self.sched, self.cfg, g)
        loss, _ = generator_loss(x_hat, self.teacher, self.fake, self.disc, batch, self.cfg, g)
        loss.backward()
        self.student.zero_grad(set_to_none=True)
        return x_hat.detach()

    def iteration(self, batch, g, train_student):
        if train_student:
            x_hat, _ = generator_sample(self.student, batch, self.sched, self.cfg, g)
            loss, _ = generator_loss(x_hat, self.teacher, self.fake, self.disc, batch, self.cfg, g)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
            x_hat = x_hat.detach()
        else:
            with torch.no_grad():
                x_hat, _ = generator_sample(self.student, batch, self.sched, self.cfg, g)
        loss, _ = critic_loss(x_hat, self.fake, self.disc, self.teacher, batch, self.cfg, g)
        self.opt_c.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_c.step()

    def cycle(self, batch, g):
        for k in range(self.cfg.student_every):
            self.iteration(batch, g, train_student=(k == 0))


def timed(fn, *a):
    t0 = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--head-blocks", type=int, default=2)
    p.add_argument("--inner-steps", type=int, default=2)
    p.add_argument("--outer-steps", type=int, default=2)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--size", type=int, default=16, help="latent height = width")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    teacher = build_teacher(args).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, args.frames, args.size, args.size)
    batch = {
        "latents": torch.randn(shape, generator=g),
        "context": torch.randn(args.batch, 16, 64, generator=g),
        "negative_context": torch.randn(1, 16, 64, generator=g),
    }
    setups = {k: Setup(k, teacher, args) for k in ("tmd", "dmd")}
    times = {f"{k}_{what}": [] for k in setups for what in ("generator", "cycle")}
    for s in setups.values():  # warm-up
        s.generator_fb(batch, g)
        s.cycle(batch, g)
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        for k, s in setups.items():
            times[f"{k}_generator"].append(timed(s.generator_fb, batch, g))
        for k, s in setups.items():
            times[f"{k}_cycle"].append(timed(s.cycle, batch, g))
    med = {k: statistics.median(v) for k, v in times.items()}
    L, H, N = args.layers, args.head_blocks, args.inner_steps
    result = {
        "benchmark": "stage2_rollout_vs_dmd2v",
        "model": {
            "layers": L,
            "head_blocks": H,
            "inner_steps": N,
            "outer_steps": args.outer_steps,
            "dim": args.dim,
            "latent": list(shape),
            "tokens": args.frames * (args.size // 2) ** 2,
        },
        "seconds_median": {k: round(v, 4) for k, v in med.items()},
        "ratio_generator": round(med["tmd_generator"] / med["dmd_generator"], 3),
        "ratio_cycle": round(med["tmd_cycle"] / med["dmd_cycle"], 3),
        "student_forward_ratio_eq16": round(1 + (N - 1) * H / L, 3),
        "target": 1.25,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    result["meets_target"] = result["ratio_cycle"] <= 1.25 and result["ratio_generator"] <= 1.25
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
