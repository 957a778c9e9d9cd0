"""The toy world's teacher: a Wan-architecture DiT trained from scratch with flow matching (Eq. 1-2).

Trains on freshly rendered clips every step (the world is procedural, so there is no fixed set to
overfit), with 10 % of the prompts dropped to the null condition so that classifier-free guidance
works, and an EMA of the weights, which is what gets saved.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..checkpoint import atomic_save_safetensors, atomic_write_text
from ..model import wan_timestep
from ..schedule import shift_time
from .codec import encode_clips
from .latent import suggested_transformer_config
from .text import ToyTextEncoder
from .world import training_batch

log = logging.getLogger(__name__)

# The toy teacher's sampler settings (Wan's defaults are shift 8 at 480p; the toy's 32 tokens want less).
TEACHER_SHIFT = 3.0
TEACHER_CFG = 4.0


@dataclass
class TeacherTrainConfig:
    iterations: int = 4000  # optimiser steps
    batch_size: int = 16
    lr: float = 5e-4  # AdamW, after a linear warm-up
    warmup: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # share of prompts trained as the null condition (CFG)
    t_shift: float = 3.0  # training times shift_γ(logit-normal): same γ as the sampling grid (see flow_matching_loss)
    num_layers: int = 12  # L
    dim: int = 128
    ffn_dim: int = 384
    seed: int = 0
    save_every: int = 250


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """lr_k = lr · min(1, (k + 1) / warmup) · (0.1 + 0.45 (1 + cos(π k / iterations))): a linear warm-up,
    then a cosine from lr down to 0.1 lr."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, iterations: int):
        self.warmup, self.iterations = warmup, iterations
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        k = self.last_epoch
        return [lr * min(1.0, (k + 1) / self.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * k / self.iterations)))
                for lr in self.base_lrs]


def build_teacher(cfg: TeacherTrainConfig):
    """A fresh toy DiT (diffusers WanTransformer3DModel) in the toy latent and text formats."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(cfg.seed)
    return WanTransformer3DModel(**suggested_transformer_config(num_layers=cfg.num_layers, dim=cfg.dim, ffn_dim=cfg.ffn_dim))


def flow_matching_loss(model, x: torch.Tensor, context: torch.Tensor, generator: torch.Generator,
                       t_shift: float = 1.0) -> torch.Tensor:
    """‖v_θ(x_t, t, c) - (x1 - x)‖², x_t = (1 - t) x + t x1 (Eq. 1-2), t = shift_γ(logit-normal(0, 1)).

    The shift (SD3's timestep shift, docs/method.md §1's shift_γ) moves training towards high noise. The
    toy's clips are one small object on black, so their layout is decided at high noise, which plain
    logit-normal(0, 1) draws rarely (t > 0.9: 1.4 % of the time; shift_3 of it: 14 %).
    """
    B = x.shape[0]
    t = shift_time(torch.sigmoid(torch.randn(B, generator=generator)), t_shift)
    x1 = torch.randn(x.shape, generator=generator)
    tb = t.view(B, 1, 1, 1, 1)
    x_t = (1 - tb) * x + tb * x1
    v = model(x_t, timestep=wan_timestep(t, B, x.device), encoder_hidden_states=context, return_dict=False)[0]
    return (v.float() - (x1 - x)).square().mean()


def _state_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".safetensors") + ".trainstate.safetensors")


def save_teacher(model, path: Path, provenance: dict) -> None:
    """diffusers-layout single file plus a `<stem>.config.json` sidecar (what load_teacher reads)."""
    from ..wan_build import transformer_config_dict

    atomic_save_safetensors(model.state_dict(), path, {"provenance": json.dumps(provenance)})
    side = path.with_name(path.name.removesuffix(".safetensors") + ".config.json")
    atomic_write_text(side, json.dumps(transformer_config_dict(model), indent=1))


def train_teacher(out: str | Path, cfg: TeacherTrainConfig | None = None, *, vae=None, progress: bool = True,
                  should_stop=None) -> Path:
    """Train (or resume training) the toy teacher; writes the EMA weights to `out`.

    Args:
        vae: the toy VAE that makes the latents (a ToyVAE or its path; None: the shipped one).
    Resumes from `<out stem>.trainstate.safetensors` when present (same cfg): re-run to continue.
    """
    from tqdm import tqdm

    from ..training.state import EMA

    cfg = cfg or TeacherTrainConfig()
    out = Path(out)
    model = build_teacher(cfg).train()
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = WarmupCosineLR(opt, cfg.warmup, cfg.iterations)
    encoder = ToyTextEncoder()
    start = 0
    state = _state_path(out)
    if state.exists():
        start = _load_state(state, model, ema, opt, sched)
        log.info("resuming toy teacher training at step %d", start)
    names = [n for n, _ in model.named_parameters()]
    bar = tqdm(total=cfg.iterations, initial=start, desc="toy teacher", disable=not progress)
    t0, losses = time.time(), []
    for step in range(start, cfg.iterations):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        clips, prompts = training_batch(cfg.batch_size, seed=cfg.seed * 7919 + step, split="train")
        texts = [p.text if torch.rand((), generator=g) >= cfg.cond_dropout else "" for p in prompts]
        x = encode_clips(clips, vae)
        loss = flow_matching_loss(model, x, encoder.encode(texts), g, cfg.t_shift)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(model)
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if (step + 1) % 250 == 0:
            log.info("toy teacher step %d/%d: loss %.4f (mean of 50), %.0f s", step + 1, cfg.iterations,
                     sum(losses[-50:]) / len(losses[-50:]), time.time() - t0)
        last = step + 1 == cfg.iterations
        stop = should_stop is not None and should_stop()
        if (step + 1) % cfg.save_every == 0 or last or stop:
            _save_state(state, model, ema, opt, sched, step + 1, names)
            prov = {"what": "toy teacher", "iterations": step + 1, "config": asdict(cfg), "vae": str(vae or "shipped"),
                    "final_loss_ema50": sum(losses[-50:]) / len(losses[-50:]), "seconds": round(time.time() - t0, 1)}
            ema.swap(model)  # the EMA weights are the teacher
            save_teacher(model, out, prov)
            ema.swap(model)
        if stop:
            break
    bar.close()
    return out


def _save_state(path: Path, model, ema, opt, sched, step: int, names: list[str]) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.shadow.items()})
    for name, p in zip(names, model.parameters()):
        st = opt.state.get(p)
        if st:
            tensors[f"opt.exp_avg.{name}"] = st["exp_avg"]
            tensors[f"opt.exp_avg_sq.{name}"] = st["exp_avg_sq"]
            tensors[f"opt.step.{name}"] = torch.as_tensor(st["step"]).reshape(1).float()
    atomic_save_safetensors(tensors, path, {"step": str(step), "scheduler": json.dumps(sched.state_dict())})


def _load_state(path: Path, model, ema, opt, sched) -> int:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        step = int(meta["step"])
        model.load_state_dict({k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")})
        for name, shadow in ema.shadow.items():
            shadow.copy_(f.get_tensor(f"ema.{name}"))
        for name, p in model.named_parameters():
            if f"opt.exp_avg.{name}" in f.keys():
                opt.state[p] = {"exp_avg": f.get_tensor(f"opt.exp_avg.{name}"),
                                "exp_avg_sq": f.get_tensor(f"opt.exp_avg_sq.{name}"),
                                "step": f.get_tensor(f"opt.step.{name}").reshape(())}
    if "scheduler" in meta:
        sched.load_state_dict(json.loads(meta["scheduler"]))
    else:  # a state written before the scheduler's was saved: the schedule's position is the step
        sched.last_epoch = step
        sched._last_lr = sched.get_lr()
    for group, lr in zip(opt.param_groups, sched.get_last_lr()):  # loading a scheduler does not set the lr
        group["lr"] = lr
    return step
