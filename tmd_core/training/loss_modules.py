"""Each stage's losses as nn.Modules, so Accelerate can wrap them (DDP) as DMD2 wraps its guidance and generator.

The losses call the student's `backbone` and `head` and the critics directly, not a single `forward`:
wrapping the networks themselves would leave DDP's gradient hooks unarmed. A loss module registers only the
networks its backward trains (DDP averages exactly their gradients); the ones it reads without training
(the frozen teacher, and the critics in the generator's loss) are held outside the module registry.
"""

from __future__ import annotations

import torch


class Stage1Loss(torch.nn.Module):
    """TM-MF (docs/method.md §4) of the student: forward(batch, generator) -> (loss, logs)."""

    def __init__(self, student, cfg):
        super().__init__()
        self.student, self.cfg = student, cfg

    def forward(self, batch: dict, generator: torch.Generator):
        from .stage1_tmmf import tmmf_loss

        return tmmf_loss(self.student, batch, self.cfg.schedule, self.cfg.stage1, generator)


class GeneratorLoss(torch.nn.Module):
    """The student's loss in stage 2 (docs/method.md §5): DMD + λ GAN (+ the TM-MF term), or the DMD2-v
    baseline's KD warm-up. Trains the student only; teacher, fake score and discriminator are read."""

    def __init__(self, student, teacher, fake_score, discriminator, cfg):
        super().__init__()
        self.student, self.cfg = student, cfg
        self._read = (teacher, fake_score, discriminator)  # a tuple: not registered, not wrapped

    def forward(self, batch: dict, generator: torch.Generator, noise: torch.Tensor | None = None,
                sample_only: bool = False):
        from .stage1_tmmf import tmmf_loss
        from .stage2_dmd import generator_loss, generator_sample, kd_warmup_loss

        teacher, fake_score, disc = self._read
        c, s = self.cfg.stage2, self.cfg.schedule
        if noise is not None:  # KD warm-up of the DMD2-v baseline
            loss, logs = kd_warmup_loss(self.student, noise, batch["latents"], batch["context"], t=s.t_max)
            return loss, logs, None
        x_hat, _ = generator_sample(self.student, batch, s, c, generator)
        if sample_only:  # x̂ for the critics on iterations without a student update (called under no_grad)
            return x_hat
        loss, logs = generator_loss(x_hat, teacher, fake_score, disc, batch, c, generator)
        if c.tmmf_weight > 0:  # stage-1 TM-MF on the real data keeps the transition stochastic
            tm, tm_logs = tmmf_loss(self.student, batch, s, self.cfg.stage1, generator)
            loss = loss + c.tmmf_weight * tm
            logs = {**logs, "tmmf_loss": tm_logs["loss"]}
        return loss, logs, x_hat


class CriticLoss(torch.nn.Module):
    """Fake score + discriminator on sg(x̂) (docs/method.md §5): trains both, reads the teacher."""

    def __init__(self, fake_score, discriminator, teacher, cfg):
        super().__init__()
        self.fake_score, self.discriminator, self.cfg = fake_score, discriminator, cfg
        self._read = (teacher,)

    def forward(self, x_hat: torch.Tensor, batch: dict, generator: torch.Generator):
        from .stage2_dmd import critic_loss

        return critic_loss(x_hat, self.fake_score, self.discriminator, self._read[0], batch, self.cfg.stage2,
                           generator)
