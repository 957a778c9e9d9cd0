"""The toy teacher's training (tmd_core/toy/teacher.py): its LR schedule and an exact resume."""

import math

import torch
from safetensors.torch import load_file

from tmd_core.toy.autoencoder import ToyVAE, VAEConfig
from tmd_core.toy.teacher import TeacherTrainConfig, WarmupCosineLR, train_teacher

TINY = dict(iterations=4, batch_size=2, warmup=2, num_layers=1, dim=64, ffn_dim=64, save_every=100, ema_decay=0.5)


def test_the_schedule_is_warmup_then_cosine_to_a_tenth():
    cfg = TeacherTrainConfig()
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = WarmupCosineLR(opt, cfg.warmup, cfg.iterations)
    for k in range(cfg.iterations):
        # the formula the teacher was trained with, evaluated in this order: equal to the last bit
        assert opt.param_groups[0]["lr"] == cfg.lr * min(1.0, (k + 1) / cfg.warmup) * (
            0.1 + 0.45 * (1 + math.cos(math.pi * k / cfg.iterations)))
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == cfg.lr * 0.1


def test_a_stopped_run_resumes_to_the_same_teacher(tmp_path):
    vae = ToyVAE(VAEConfig(width=16)).eval().requires_grad_(False)
    whole = train_teacher(tmp_path / "a" / "teacher.safetensors", TeacherTrainConfig(**TINY), vae=vae, progress=False)
    steps = []

    def stop_after_two() -> bool:
        steps.append(1)
        return len(steps) == 2

    out = tmp_path / "b" / "teacher.safetensors"
    train_teacher(out, TeacherTrainConfig(**TINY), vae=vae, progress=False, should_stop=stop_after_two)
    assert load_file(str(out.with_name("teacher.trainstate.safetensors")))  # the stop saved a resumable state
    train_teacher(out, TeacherTrainConfig(**TINY), vae=vae, progress=False, should_stop=stop_after_two)
    assert len(steps) == 2 + 2  # the re-run continued at step 2
    a, b = load_file(str(whole)), load_file(str(out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the EMA weights, bit for bit
