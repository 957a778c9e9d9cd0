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


class MasterAdamW(torch.optim.Optimizer):
    """AdamW for weights kept in bf16 (`master_dtype: bf16`) with its two moments in fp32.

    torch's AdamW keeps the moments in the parameter's dtype; this one keeps them in fp32, computes the
    update in fp32 (decoupled weight decay, bias correction, as torch.optim.AdamW) and rounds the new weight
    to bf16 (to nearest: an update smaller than half a bf16 step of the weight is lost, the price of 2-byte
    masters). Works on FSDP2's sharded parameters (DTensors) through their local shards."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        def local(t):
            return t.to_local() if hasattr(t, "to_local") else t

        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                st["step"] += 1
                n = float(st["step"])
                g = local(p.grad).float()
                m, v = local(st["exp_avg"]), local(st["exp_avg_sq"])
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                w = local(p).float().mul_(1 - lr * wd)
                denom = (v.sqrt() / (1 - b2**n) ** 0.5).add_(eps)
                w.addcdiv_(m, denom, value=-lr / (1 - b1**n))
                local(p).copy_(w)

    def load_state_dict(self, state_dict):
        """torch's Optimizer casts loaded moments to the parameter's dtype: put the saved fp32 ones back."""
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for idx, st in saved.items():
            p = params[int(idx)]
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    self.state[p][key] = st[key].to(device=p.device, dtype=torch.float32)


def make_optimizer(params, lr: float, betas, weight_decay: float, master_dtype: str = "fp32"):
    """The run's AdamW over `params`: torch's for fp32 master weights, MasterAdamW (fp32 moments) for bf16."""
    params = list(params)
    if master_dtype == "bf16":
        return MasterAdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def _adamw(module: torch.nn.Module, lr: float, betas, weight_decay: float, master_dtype: str = "fp32"):
    return make_optimizer([p for p in module.parameters() if p.requires_grad], lr, betas, weight_decay, master_dtype)


class Stage1Trainer:
    """TM-MF (docs/method.md §4): one AdamW step of the whole student per iteration."""

    def __init__(self, cfg, student, accelerator, mode: str = "single"):
        self.cfg, self.student, self.acc = cfg, student, accelerator
        c = cfg.stage1
        self.loss = wrap_loss(Stage1Loss(student, cfg), accelerator, mode, master_dtype=cfg.master_dtype)  # DDP or FSDP2 with several processes
        self.opt = _adamw(student, c.lr, c.betas, c.weight_decay, cfg.master_dtype)
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
            from .builders import MASTER_DTYPE, cast_parameters

            disc = Discriminator.from_teacher(teacher, layers=c.disc_layers).to(accelerator.device).train()
            self.disc = cast_parameters(disc, MASTER_DTYPE[cfg.master_dtype])
        self.student_updated = False
        # FSDP2: the critics are units of their own (the student's loss reads them), the student's unit is its loss
        self.critic_loss = wrap_loss(CriticLoss(self.fake_score, self.disc, teacher, cfg), accelerator, mode,
                                     units=(self.fake_score, self.disc), master_dtype=cfg.master_dtype)
        self.gen_loss = wrap_loss(GeneratorLoss(student, teacher, self.fake_score, self.disc, cfg), accelerator, mode,
                                  master_dtype=cfg.master_dtype)
        self.opts = {  # after sharding: the optimisers hold the sharded parameters
            "student": (student, _adamw(student, c.lr_student, c.betas, c.weight_decay, cfg.master_dtype)),
            "fake_score": (self.fake_score, _adamw(self.fake_score, c.lr_fake, c.betas, c.weight_decay,
                                                   cfg.master_dtype)),
        }
        if self.disc is not None:
            self.opts["discriminator"] = (self.disc, _adamw(self.disc, c.lr_disc, c.betas, c.weight_decay,
                                                            cfg.master_dtype))
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
