"""One optimisation step of each stage: which losses run, in which order, on which optimiser (docs/method.md §4–5)."""

from __future__ import annotations

import torch

from ..noise import make_noise

BUCKET_ELEMENTS = 1 << 24  # gradients are averaged across processes in buckets of this many elements


def _adamw(module: torch.nn.Module, lr: float, betas, weight_decay: float) -> torch.optim.AdamW:
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def broadcast_parameters(modules, world_size: int) -> None:
    """Start every process from rank 0's weights (as DDP does at wrap time)."""
    if world_size == 1:
        return
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                torch.distributed.broadcast(p.data, src=0)


def average_gradients(module: torch.nn.Module, world_size: int) -> None:
    """All-reduce-average the gradients of `module` (DDP semantics without wrapping the module, so the
    losses can call `backbone`/`head`/`logits` directly). A parameter that got no gradient on any
    process keeps `grad = None`, exactly as in a single-process run."""
    if world_size == 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    torch.distributed.all_reduce(has, op=torch.distributed.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist()) if h]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.nn.Parameter] = []
    for i, p in enumerate(live):
        bucket.append(p)
        if sum(q.numel() for q in bucket) >= BUCKET_ELEMENTS or i == len(live) - 1:
            grads = [q.grad for q in bucket]
            flat = torch._utils._flatten_dense_tensors(grads)
            torch.distributed.all_reduce(flat)
            flat /= world_size
            for g, new in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                g.copy_(new)
            bucket = []


class Stage1Trainer:
    """TM-MF (docs/method.md §4): one AdamW step of the whole student per iteration."""

    def __init__(self, cfg, student, accelerator):
        self.cfg, self.student, self.acc = cfg, student, accelerator
        c = cfg.stage1
        self.opt = _adamw(student, c.lr, c.betas, c.weight_decay)
        self.modules = {"student": student}
        self.optimizers = {"student": (student, self.opt)}
        self.student_updated = True

    def step(self, step: int, batch: dict, generator: torch.Generator) -> dict:
        from .stage1_tmmf import tmmf_loss

        with self.acc.autocast():
            loss, logs = tmmf_loss(self.student, batch, self.cfg.schedule, self.cfg.stage1, generator)
        loss.backward()
        average_gradients(self.student, self.acc.num_processes)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {**logs, "loss": loss.detach()}


class Stage2Trainer:
    """DMD2-v with rollout (docs/method.md §5): fake score + discriminator every iteration, the student every
    `student_every`-th (DMD2's order: the generator step first, then the critics on its detached x̂).
    The first `kd_warmup_iterations` steps (DMD2-v baseline only) regress the teacher's noise->data pairs."""

    def __init__(self, cfg, student, teacher, accelerator, build_fake_score):
        from .discriminator import Discriminator

        c = cfg.stage2
        self.cfg, self.student, self.teacher, self.acc = cfg, student, teacher, accelerator
        self.fake_score = build_fake_score(cfg, teacher, accelerator.device)
        self.disc = None
        if c.gan_weight > 0:
            self.disc = Discriminator.from_teacher(teacher, layers=c.disc_layers).to(accelerator.device).train()
        self.opts = {
            "student": (student, _adamw(student, c.lr_student, c.betas, c.weight_decay)),
            "fake_score": (self.fake_score, _adamw(self.fake_score, c.lr_fake, c.betas, c.weight_decay)),
        }
        if self.disc is not None:
            self.opts["discriminator"] = (self.disc, _adamw(self.disc, c.lr_disc, c.betas, c.weight_decay))
        self.modules = {name: m for name, (m, _) in self.opts.items()}
        self.optimizers = self.opts
        self.student_updated = False

    def _update(self, *names) -> None:
        for name in names:
            module, opt = self.opts[name]
            average_gradients(module, self.acc.num_processes)
            opt.step()
        for _, opt in self.opts.values():
            opt.zero_grad(set_to_none=True)

    def _kd_step(self, batch: dict) -> dict:
        from .stage2_dmd import kd_warmup_loss

        seeds = batch["seeds"].tolist()
        if min(seeds) < 0:
            from ..errors import ConfigError

            raise ConfigError("kd_warmup needs teacher-made data with recorded noise seeds (tmd make-data)")
        noise = torch.cat([make_noise((1, *batch["latents"].shape[1:]), s) for s in seeds]).to(self.acc.device)
        with self.acc.autocast():
            loss, logs = kd_warmup_loss(self.student, noise, batch["latents"], batch["context"],
                                        t=self.cfg.schedule.t_max)
        loss.backward()
        self._update("student")
        return logs

    def step(self, step: int, batch: dict, generator: torch.Generator) -> dict:
        from .stage2_dmd import critic_loss, generator_loss, generator_sample

        c, s = self.cfg.stage2, self.cfg.schedule
        self.student_updated = step < c.kd_warmup_iterations or (step - c.kd_warmup_iterations) % c.student_every == 0
        if step < c.kd_warmup_iterations:
            return self._kd_step(batch)
        logs = {}
        # 1. the student, every student_every-th iteration
        if self.student_updated:
            with self.acc.autocast():
                x_hat, _ = generator_sample(self.student, batch, s, c, generator)
                loss, logs = generator_loss(x_hat, self.teacher, self.fake_score, self.disc, batch, c, generator)
                if c.tmmf_weight > 0:  # stage-1 TM-MF on the real data keeps the transition stochastic
                    from .stage1_tmmf import tmmf_loss

                    tm, tm_logs = tmmf_loss(self.student, batch, s, self.cfg.stage1, generator)
                    loss = loss + c.tmmf_weight * tm
                    logs = {**logs, "tmmf_loss": tm_logs["loss"]}
            loss.backward()
            self._update("student")
            x_hat = x_hat.detach()
        else:
            with torch.no_grad(), self.acc.autocast():
                x_hat, _ = generator_sample(self.student, batch, s, c, generator)
        # 2. fake score and discriminator on sg(x̂), every iteration
        with self.acc.autocast():
            loss, critic_logs = critic_loss(x_hat, self.fake_score, self.disc, self.teacher, batch, c, generator)
        loss.backward()
        self._update(*[n for n in ("fake_score", "discriminator") if n in self.opts])
        return {**logs, **critic_logs}


def make_trainer(stage: str, cfg, student, teacher, accelerator, build_fake_score):
    if stage == "stage1":
        return Stage1Trainer(cfg, student, accelerator)
    return Stage2Trainer(cfg, student, teacher, accelerator, build_fake_score)
