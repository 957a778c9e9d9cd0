"""One optimisation step of each stage: which losses run, in which order, on which optimiser (docs/method.md §4–5).

The losses go through `accelerator.prepare` (as nn.Modules, loss_modules.py) and `accelerator.backward`:
with several processes Accelerate wraps them in DDP, which averages the gradients of the networks they train."""

from __future__ import annotations

import torch

from ..noise import make_noise
from .loss_modules import CriticLoss, GeneratorLoss, Stage1Loss
from .sharding import wrap_loss


def autocast(acc, cfg):
    """bf16 autocast when the run config says `mixed_precision: bf16` (the run's setting, not accelerate's
    global state, so one host process can run distillations of different precisions one after another)."""
    return torch.autocast(device_type=acc.device.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16")


def _adamw(module: torch.nn.Module, lr: float, betas, weight_decay: float) -> torch.optim.AdamW:
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


class Stage1Trainer:
    """TM-MF (docs/method.md §4): one AdamW step of the whole student per iteration."""

    def __init__(self, cfg, student, accelerator, mode: str = "single"):
        self.cfg, self.student, self.acc = cfg, student, accelerator
        c = cfg.stage1
        self.loss = wrap_loss(Stage1Loss(student, cfg), accelerator, mode)  # DDP or FSDP2 with several processes
        self.opt = _adamw(student, c.lr, c.betas, c.weight_decay)
        self.modules = {"student": student}
        self.optimizers = {"student": (student, self.opt)}
        self.student_updated = True

    def step(self, step: int, batch: dict, generator: torch.Generator) -> dict:
        with autocast(self.acc, self.cfg):
            loss, logs = self.loss(batch, generator)
        self.acc.backward(loss)  # gradients averaged over the processes by DDP
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {**logs, "loss": loss.detach()}


class Stage2Trainer:
    """DMD2-v with rollout (docs/method.md §5): fake score + discriminator every iteration, the student every
    `student_every`-th (DMD2's order: the generator step first, then the critics on its detached x̂).
    The first `kd_warmup_iterations` steps (DMD2-v baseline only) regress the teacher's noise->data pairs."""

    def __init__(self, cfg, student, teacher, accelerator, build_fake_score, mode: str = "single"):
        from .discriminator import Discriminator

        c = cfg.stage2
        self.cfg, self.student, self.teacher, self.acc = cfg, student, teacher, accelerator
        self.fake_score = build_fake_score(cfg, teacher, accelerator.device)
        self.disc = None
        if c.gan_weight > 0:
            self.disc = Discriminator.from_teacher(teacher, layers=c.disc_layers).to(accelerator.device).train()
        self.student_updated = False
        # FSDP2: the critics are units of their own (the student's loss reads them), the student's unit is its loss
        self.critic_loss = wrap_loss(CriticLoss(self.fake_score, self.disc, teacher, cfg), accelerator, mode,
                                     units=(self.fake_score, self.disc))
        self.gen_loss = wrap_loss(GeneratorLoss(student, teacher, self.fake_score, self.disc, cfg), accelerator, mode)
        self.opts = {  # after sharding: the optimisers hold the sharded parameters
            "student": (student, _adamw(student, c.lr_student, c.betas, c.weight_decay)),
            "fake_score": (self.fake_score, _adamw(self.fake_score, c.lr_fake, c.betas, c.weight_decay)),
        }
        if self.disc is not None:
            self.opts["discriminator"] = (self.disc, _adamw(self.disc, c.lr_disc, c.betas, c.weight_decay))
        self.optimizers = self.opts
        self.modules = {name: m for name, (m, _) in self.opts.items()}

    def _update(self, *names) -> None:
        for name in names:
            self.opts[name][1].step()
        for _, opt in self.opts.values():
            opt.zero_grad(set_to_none=True)

    def _kd_step(self, batch: dict) -> dict:
        seeds = batch["seeds"].tolist()
        if min(seeds) < 0:
            from ..errors import ConfigError

            raise ConfigError("kd_warmup needs teacher-made data with recorded noise seeds (tmd make-data)")
        noise = torch.cat([make_noise((1, *batch["latents"].shape[1:]), s) for s in seeds]).to(self.acc.device)
        with autocast(self.acc, self.cfg):
            loss, logs, _ = self.gen_loss(batch, None, noise=noise)
        self.acc.backward(loss)
        self._update("student")
        return logs

    def step(self, step: int, batch: dict, generator: torch.Generator) -> dict:
        c = self.cfg.stage2
        self.student_updated = step < c.kd_warmup_iterations or (step - c.kd_warmup_iterations) % c.student_every == 0
        if step < c.kd_warmup_iterations:
            return self._kd_step(batch)
        logs = {}
        # 1. the student, every student_every-th iteration
        if self.student_updated:
            with autocast(self.acc, self.cfg):
                loss, logs, x_hat = self.gen_loss(batch, generator)
            self.acc.backward(loss)
            self._update("student")
            x_hat = x_hat.detach()
        else:
            with torch.no_grad(), autocast(self.acc, self.cfg):
                x_hat = self.gen_loss(batch, generator, sample_only=True)
        # 2. fake score and discriminator on sg(x̂), every iteration
        with autocast(self.acc, self.cfg):
            loss, critic_logs = self.critic_loss(x_hat, batch, generator)
        self.acc.backward(loss)
        self._update(*[n for n in ("fake_score", "discriminator") if n in self.opts])
        return {**logs, **critic_logs}


def make_trainer(stage: str, cfg, student, teacher, accelerator, build_fake_score, mode: str = "single"):
    if stage == "stage1":
        return Stage1Trainer(cfg, student, accelerator, mode)
    return Stage2Trainer(cfg, student, teacher, accelerator, build_fake_score, mode)
