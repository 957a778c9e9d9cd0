"""The toy world's VAE: a small learned video autoencoder with Wan2.1's compression (4× time, 8× space, 16 channels).

Wan2.1's VAE turns 4 frames × 8×8 pixels × RGB (768 values) into one 16-channel latent pixel, and its
DiT then patches 2×2 latent pixels into a token of 64 values for a width of 1,536 (1.3B). The toy
keeps the same compression: an 8-frame 32×32 clip becomes a latent [16, 2, 4, 4]; with a (1, 1, 1)
patch the toy DiT sees 32 tokens of 16 values for a width of 128 — well inside what its output
projection can write (the first toy "VAE", a lossless space-to-depth, gave 768 values per token to a
width-128 model, and ~83 % of every sample's initial noise passed through untouched).

Like Wan's VAE, each group of 4 frames is encoded on its own; the encoder outputs a diagonal Gaussian
(mean, log-variance) trained with a small KL weight, and `encode` returns its mean. Normalisation
(per-channel mean/std, like Wan's `latents_mean`/`latents_std`) is measured on the world after training
and stored with the weights. Trained by `train_vae` (`tmd toy train` does it first).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F_nn
from einops import rearrange

from ..errors import CheckpointError, InputError

log = logging.getLogger(__name__)
FORMAT = "tmd-toy-vae/1"


@dataclass
class VAEConfig:
    """Shape of the toy VAE (the shipped one uses these defaults)."""

    latent_channels: int = 16  # C of the latent (Wan2.1: 16)
    temporal: int = 4  # frames per latent frame (Wan2.1: 4)
    spatial: int = 8  # pixels per latent pixel along H and W (Wan2.1: 8)
    width: int = 64  # feature channels of the convolutions
    unshuffle: int = 4  # lossless space-to-depth around the convolutions (the rest is stride-2 stages)


class _Res(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, width), nn.Conv2d(width, width, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(8, width), nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.c2(F_nn.silu(self.n2(self.c1(F_nn.silu(self.n1(x))))))


class ToyVAE(nn.Module):
    """Encoder/decoder over groups of `temporal` frames: a space-to-depth, then stride-2 stages down to 1/8."""

    def __init__(self, cfg: VAEConfig | None = None):
        super().__init__()
        cfg = cfg or VAEConfig()
        stages = round(math.log2(cfg.spatial // cfg.unshuffle))
        if cfg.spatial != cfg.unshuffle * 2**stages:
            raise InputError(f"spatial ({cfg.spatial}) must be unshuffle ({cfg.unshuffle}) times a power of two")
        self.cfg = cfg
        w, c_in = cfg.width, 3 * cfg.temporal * cfg.unshuffle**2  # RGB × frames of a group × pixels of a cell
        enc = [nn.Conv2d(c_in, w, 3, padding=1), _Res(w)]
        for _ in range(stages):
            enc += [nn.Conv2d(w, w, 3, stride=2, padding=1), _Res(w)]
        self.encoder = nn.Sequential(*enc, nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, 2 * cfg.latent_channels, 1))
        dec = [nn.Conv2d(cfg.latent_channels, w, 3, padding=1), _Res(w)]
        for _ in range(stages):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w, 3, padding=1), _Res(w)]
        self.decoder = nn.Sequential(*dec, nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, c_in, 3, padding=1))
        # per-channel statistics of the world's latents (set by `measure_normalisation`)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    def latent_shape(self, frames: int, size: int) -> tuple[int, int, int, int]:
        """(C, F', H', W') of the latent of a [3, frames, size, size] clip."""
        t, k = self.cfg.temporal, self.cfg.spatial
        if frames % t or size % k:
            raise InputError(f"a clip of {frames} frames of {size}×{size} pixels does not divide into latent cells "
                             f"of {t} frames × {k}×{k} pixels: use multiples")
        return (self.cfg.latent_channels, frames // t, size // k, size // k)

    def _groups(self, clips: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, F, H, W] -> Tensor[B·F/t, 3·t·u², H/u, W/u] (frames of a group stacked, u×u space-to-depth)."""
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise InputError(f"expected clips of shape [B, 3, F, H, W], got {list(clips.shape)}")
        b, _, f, h, w = clips.shape
        self.latent_shape(f, h)
        t = self.cfg.temporal
        x = rearrange(clips, "b c (g t) h w -> (b g) (c t) h w", t=t)  # g groups of t frames
        return F_nn.pixel_unshuffle(x, self.cfg.unshuffle)

    def encode_distribution(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (un-normalised) posterior mean and log-variance, each Tensor[B, C, F/t, H/8, W/8]."""
        z = self.encoder(self._groups(clips.to(self.encoder[0].weight.dtype)))
        z = rearrange(z, "(b g) c h w -> b c g h w", b=clips.shape[0])
        mean, logvar = z.chunk(2, dim=1)
        return mean, logvar.clamp(-20.0, 5.0)

    def _check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 5 or z.shape[1] != self.cfg.latent_channels:
            raise InputError(f"expected toy latents [B, {self.cfg.latent_channels}, F, H, W], got {list(z.shape)}")

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latent Tensor[B, C, F', H', W'] -> clips Tensor[B, 3, F'·t, 8H', 8W'] (not clamped)."""
        self._check_latent(z)
        x = self.decoder(rearrange(z, "b c f h w -> (b f) c h w").to(self.decoder[0].weight.dtype))
        x = F_nn.pixel_shuffle(x, self.cfg.unshuffle)  # (B·F', 3·t, 8H', 8W')
        return rearrange(x, "(b f) (c t) h w -> b c (f t) h w", b=z.shape[0], t=self.cfg.temporal).float()

    @torch.no_grad()
    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips Tensor[B, 3, F, H, W] in [-1, 1] -> normalised latent Tensor[B, 16, F/4, H/8, W/8] (posterior mean)."""
        mean, _ = self.encode_distribution(clips)
        return (mean - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latent -> clips Tensor[B, 3, F, H, W] clamped to [-1, 1]."""
        self._check_latent(latents)
        z = latents.float() * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)
        return self.decode_raw(z).clamp(-1, 1)


@dataclass
class VAETrainConfig:
    iterations: int = 6000
    batch_size: int = 32
    lr: float = 2e-3  # AdamW, linear warm-up then cosine to 10 %
    warmup: int = 100
    kl_weight: float = 1e-4  # β of the KL term, per latent element relative to the per-pixel loss
    gradient_weight: float = 1.0  # weight of the L1 of time/row/column differences (edges and motion)
    # step from which the difference term is on: the shipped VAE was trained 3k steps without it (objects came
    # out frozen inside each 4-frame group, their speed 0.34 px/frame low), then 3k steps with it
    gradient_start: int = 3000
    seed: int = 0
    save_every: int = 500


def _differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differences of Tensor[B, 3, F, H, W] along frames, rows and columns."""
    return x[:, :, 1:] - x[:, :, :-1], x[..., 1:, :] - x[..., :-1, :], x[..., 1:] - x[..., :-1]


def vae_loss(vae: ToyVAE, clips: torch.Tensor, generator: torch.Generator, kl_weight: float,
             gradient_weight: float = 1.0):
    """Reconstruction of a sample of the posterior + β KL(q(z | x) ‖ N(0, I)) (per-element means).

    Reconstruction: L1 + L2 of the pixels, plus L1 of their differences along time, rows and columns
    (weight `gradient_weight`): a plain pixel loss lets the decoder blur edges and freeze the object within
    a 4-frame group (the motion inside a group is a small share of the pixels); the difference terms are
    where edges and motion live.
    """
    mean, logvar = vae.encode_distribution(clips)
    z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator)
    rec = vae.decode_raw(z)
    l1 = (rec - clips).abs().mean()
    l2 = (rec - clips).square().mean()
    grad = sum((a - b).abs().mean() for a, b in zip(_differences(rec), _differences(clips)))
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
    loss = l1 + l2 + gradient_weight * grad + kl_weight * kl
    return loss, {"l1": l1.item(), "l2": l2.item(), "grad": grad.item(), "kl": kl.item()}


def train_vae(out: str | Path, cfg: VAETrainConfig | None = None, vae_cfg: VAEConfig | None = None, *,
              progress: bool = True) -> Path:
    """Train the toy VAE on freshly rendered training clips; writes weights + normalisation to `out`.

    Resumes from `<out stem>.trainstate.safetensors` when present.
    """
    from tqdm import tqdm

    from ..checkpoint import atomic_save_safetensors
    from .world import training_batch

    cfg, vae_cfg = cfg or VAETrainConfig(), vae_cfg or VAEConfig()
    out = Path(out)
    torch.manual_seed(cfg.seed)
    vae = ToyVAE(vae_cfg).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / cfg.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * k / cfg.iterations))))
    state = out.with_name(out.name.removesuffix(".safetensors") + ".trainstate.safetensors")
    start = 0
    if state.exists():
        start = _load_train_state(state, vae, opt, sched)
    bar = tqdm(total=cfg.iterations, initial=start, desc="toy VAE", disable=not progress)
    t0, hist = time.time(), []
    for step in range(start, cfg.iterations):
        clips, _ = training_batch(cfg.batch_size, seed=cfg.seed * 7919 + 10_000_019 + step, split="train")
        grad_weight = cfg.gradient_weight if step >= cfg.gradient_start else 0.0
        loss, logs = vae_loss(vae, clips, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step), cfg.kl_weight,
                              grad_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        hist.append(logs)
        bar.update(1)
        l1 = sum(h["l1"] for h in hist[-50:]) / len(hist[-50:])
        bar.set_postfix(l1=f"{l1:.4f}")
        if (step + 1) % 100 == 0:
            log.info("toy VAE step %d/%d: L1 %.4f (mean of 50), %.0f s", step + 1, cfg.iterations, l1, time.time() - t0)
        last = step + 1 == cfg.iterations
        if (step + 1) % cfg.save_every == 0 or last:
            _save_train_state(state, vae, opt, sched, step + 1, atomic_save_safetensors)
    bar.close()
    vae.eval()
    measure_normalisation(vae)
    prov = {"what": "toy VAE", "config": asdict(cfg), "vae_config": asdict(vae_cfg), "seconds": round(time.time() - t0, 1),
            "final_l1_mean50": sum(h["l1"] for h in hist[-50:]) / max(1, len(hist[-50:]))}
    save_vae(vae, out, prov)
    state.unlink(missing_ok=True)
    return out


@torch.no_grad()
def measure_normalisation(vae: ToyVAE, clips: int = 1024, seed: int = 99) -> None:
    """Set latent_mean/std to the per-channel statistics of the posterior means of rendered training clips."""
    from .world import training_batch

    vae.latent_mean.zero_()
    vae.latent_std.fill_(1.0)
    zs = torch.cat([vae.encode_distribution(training_batch(128, seed=seed + i, split="train")[0])[0]
                    for i in range(clips // 128)])
    vae.latent_mean.copy_(zs.transpose(0, 1).flatten(1).mean(1))
    vae.latent_std.copy_(zs.transpose(0, 1).flatten(1).std(1).clamp(min=1e-3))


def save_vae(vae: ToyVAE, path, provenance: dict | None = None) -> Path:
    from ..checkpoint import atomic_save_safetensors

    meta = {"format": FORMAT, "vae_config": json.dumps(asdict(vae.cfg)), "provenance": json.dumps(provenance or {})}
    atomic_save_safetensors(vae.state_dict(), path, meta)
    return Path(path)


def load_vae(path, dtype: torch.dtype = torch.float32) -> ToyVAE:
    """Load a toy VAE written by `save_vae` (refuses other files with a clear message)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no toy VAE at {path}: run `tmd toy train` (its first step trains the VAE)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a toy VAE (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        vae = ToyVAE(VAEConfig(**json.loads(meta["vae_config"])))
    except (KeyError, TypeError, ValueError, InputError) as e:
        raise CheckpointError(f"{path.name}: its vae_config does not describe a VAE this version builds ({e})") from e
    vae.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()})
    return vae.to(dtype).eval().requires_grad_(False)


def _save_train_state(path: Path, vae, opt, sched, step: int, writer) -> None:
    tensors = {f"model.{k}": v for k, v in vae.state_dict().items()}
    for i, p in enumerate(vae.parameters()):
        st = opt.state.get(p)
        if st:
            tensors[f"opt.{i}.exp_avg"], tensors[f"opt.{i}.exp_avg_sq"] = st["exp_avg"], st["exp_avg_sq"]
            tensors[f"opt.{i}.step"] = torch.as_tensor(st["step"]).reshape(1).float()
    writer(tensors, path, {"step": str(step), "scheduler": json.dumps(sched.state_dict())})


def _load_train_state(path: Path, vae, opt, sched) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        vae.load_state_dict({k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")})
        for i, p in enumerate(vae.parameters()):
            if f"opt.{i}.exp_avg" in f.keys():
                opt.state[p] = {"exp_avg": f.get_tensor(f"opt.{i}.exp_avg"), "exp_avg_sq": f.get_tensor(f"opt.{i}.exp_avg_sq"),
                                "step": f.get_tensor(f"opt.{i}.step").reshape(())}
        sched.load_state_dict(json.loads(meta["scheduler"]))
    for group, lr in zip(opt.param_groups, sched.get_last_lr()):  # loading a scheduler does not set the lr
        group["lr"] = lr
    log.info("resuming toy VAE training at step %s", meta["step"])
    return int(meta["step"])
