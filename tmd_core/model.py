"""The decoupled TMD student: backbone B(x_t, t, c) and flow head (docs/method.md §2, paper §3.2, App. A.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from einops import rearrange

from .errors import ConfigError
from .fusion import GapTimeEmbedding, make_fusion
from .schedule import TMDSchedule
from .transition import INNER_VELOCITY
from .validation import check_latent_and_context

SCHEDULE_FIELDS = ("outer_steps", "inner_steps", "outer_shift", "inner_shift", "t_max")


@dataclass
class TMDConfig:
    """What makes a TMD student besides its transformer (stored as `tmd_config` in checkpoints)."""

    num_layers: int  # L: blocks of the teacher
    head_blocks: int  # H: last blocks that form the flow head
    fusion: str = "gated"  # "gated" (default) or "concat"
    schedule: TMDSchedule = field(default_factory=TMDSchedule)  # M, N and grids trained for (a default, not a limit)
    inner_velocity: str = INNER_VELOCITY  # Eq. 14 parameterisation the head was trained with
    extra: dict = field(default_factory=dict)  # free-form notes (kept round-trip)

    def __post_init__(self):
        if self.inner_velocity != INNER_VELOCITY:
            raise ConfigError(
                f"this student was trained with the inner velocity u = {self.inner_velocity!r}; this version of "
                f"the pack samples and trains u = {INNER_VELOCITY} (docs/method.md §2). The two read the same head "
                "differently, so the weights cannot be converted: distill the student again (tmd distill)"
            )
        from .fusion import FUSION_KINDS

        for name in ("num_layers", "head_blocks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        if self.fusion not in FUSION_KINDS:
            raise ConfigError(f"fusion must be one of {', '.join(map(repr, FUSION_KINDS))}, got {self.fusion!r}")
        if not 0 < self.head_blocks < self.num_layers:
            raise ConfigError(
                f"head_blocks must be between 1 and {self.num_layers - 1} for a {self.num_layers}-block "
                f"teacher (the backbone needs at least one block), got {self.head_blocks}"
            )

    def to_dict(self) -> dict:
        """The file layout of `tmd_config`: flat, the schedule's fields at the top level."""
        out = {"num_layers": self.num_layers, "head_blocks": self.head_blocks, "fusion": self.fusion}
        out.update({k: getattr(self.schedule, k) for k in SCHEDULE_FIELDS})
        if self.schedule.outer_times_override is not None:
            out["outer_times"] = list(self.schedule.outer_times_override)
        out.update(inner_velocity=self.inner_velocity, extra=dict(self.extra))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> TMDConfig:
        """Inverse of `to_dict` (unknown keys raise TypeError)."""
        d = dict(d)
        sched = {k: d.pop(k) for k in SCHEDULE_FIELDS if k in d}
        if "outer_times" in d:
            sched["outer_times_override"] = tuple(d.pop("outer_times"))
        return cls(**d, schedule=TMDSchedule(**sched))


@dataclass
class BackboneOut:
    """What one backbone pass leaves for every inner step of the same transition."""

    m: torch.Tensor  # Tensor[B, T, D]: tokens after block L - H
    context: torch.Tensor  # Tensor[B, L_text, D]: projected text tokens (cross-attention input)
    rotary_emb: tuple  # (cos, sin), each Tensor[1, T, 1, head_dim]
    latent_shape: tuple  # (B, C, F, H, W) of x_t
    t: torch.Tensor  # Tensor[B]: the outer time t_i


def wan_timestep(t, batch: int, device) -> torch.Tensor:
    """Wan's model timestep is 1000 t (docs/method.md §1); t a float or Tensor[B] -> Tensor[B] float32."""
    t = torch.as_tensor(t, dtype=torch.float64, device="cpu").reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    return (t * 1000.0).to(device=device, dtype=torch.float32)


def embed_inputs(transformer, x_t: torch.Tensor, t, context: torch.Tensor):
    """Rope, patches, text and time embeddings, exactly as WanTransformer3DModel.forward computes them.

    Args:
        x_t (Tensor[B, C, F, H, W]), t (float or Tensor[B] in [0, 1]), context (Tensor[B or 1, L, text_dim]).
    Returns:
        h (Tensor[B, T, D]) patch tokens, ctx (Tensor[B, L, D]) projected text,
        tproj (Tensor[B, 6, D]) block modulation, rotary (cos, sin).
    """
    B = x_t.shape[0]
    dtype = transformer.patch_embedding.weight.dtype
    x_t = x_t.to(dtype)
    if context.shape[0] != B:
        context = context.expand(B, -1, -1)
    rotary = transformer.rope(x_t)
    h = transformer.patch_embedding(x_t).flatten(2).transpose(1, 2).contiguous()  # (B, T, D)
    _, tproj, ctx, _ = transformer.condition_embedder(wan_timestep(t, B, x_t.device), context.to(dtype))
    return h, ctx, tproj.unflatten(1, (6, -1)), rotary


class TMDModel(nn.Module):
    """A Wan DiT split into backbone (blocks[:L-H]) and flow head (blocks[L-H:] + output layer)."""

    def __init__(self, transformer: nn.Module, tmd_config: TMDConfig):
        super().__init__()
        if tmd_config.num_layers != len(transformer.blocks):
            raise ConfigError(
                f"tmd_config says {tmd_config.num_layers} layers, the transformer has {len(transformer.blocks)}"
            )
        self.transformer = transformer
        self.tmd_config = tmd_config
        dim = transformer.patch_embedding.out_channels
        self.fusion = make_fusion(tmd_config.fusion, dim)
        self.emb_gap = GapTimeEmbedding(transformer.condition_embedder.time_embedder)
        p = next(transformer.parameters())
        self.fusion.to(device=p.device, dtype=p.dtype)

    @classmethod
    def from_teacher(cls, teacher: nn.Module, head_blocks: int = 5, fusion: str = "gated", **config) -> TMDModel:
        """An untrained student around `teacher` (shared, not copied: pass a deepcopy to train it).

        `config`: other TMDConfig fields; `schedule=TMDSchedule(...)` or its fields (outer_shift=3.0, ...).

        At init it equals the teacher: head(backbone(x_t, t), y_s, s=t, r) == teacher(x_t, t) (docs/method.md §2.3).
        """
        sched = config.pop("schedule", None) or TMDSchedule(**{k: config.pop(k) for k in SCHEDULE_FIELDS if k in config})
        cfg = TMDConfig(num_layers=len(teacher.blocks), head_blocks=int(head_blocks), fusion=fusion, schedule=sched,
                        **config)
        return cls(teacher, cfg)

    @property
    def head_blocks(self) -> int:
        return self.tmd_config.head_blocks

    @property
    def num_layers(self) -> int:
        return self.tmd_config.num_layers

    @property
    def config(self):
        """The transformer's (diffusers) config."""
        return self.transformer.config

    def _time_embed(self, t, batch: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """emb(t): the teacher's own time embedding; returns (sinusoid Tensor[B, freq], temb Tensor[B, D])."""
        ce = self.transformer.condition_embedder
        proj = ce.timesteps_proj(wan_timestep(t, batch, device))
        w = next(ce.time_embedder.parameters())
        temb = ce.time_embedder(proj.to(w.dtype)).to(dtype)  # same casts as the teacher's embedder
        return proj, temb

    def _blocks(self, blocks, h, context, tproj, rotary):
        tr = self.transformer
        if torch.is_grad_enabled() and tr.gradient_checkpointing:
            for block in blocks:
                h = tr._gradient_checkpointing_func(block, h, context, tproj, rotary)
        else:
            for block in blocks:
                h = block(h, context, tproj, rotary)
        return h

    def backbone(self, x_t: torch.Tensor, t, context: torch.Tensor) -> BackboneOut:
        """m = B(x_t, t, c): embeddings and the first L - H blocks, run once per outer step.

        Args:
            x_t (Tensor[B, C, F, H, W]): noisy latent at outer time t.
            t: float or Tensor[B] in [0, 1] (1 = noise).
            context (Tensor[B or 1, L_text, text_dim]): text embeddings (e.g. umt5, zero-padded).
        Returns:
            BackboneOut with m (Tensor[B, T, D]) and the rope/text state reused by every inner step.
        """
        tr = self.transformer
        check_latent_and_context(tr.config, x_t, context)
        B = x_t.shape[0]
        h, ctx, tproj, rotary = embed_inputs(tr, x_t, t, context)
        # the backbone blocks
        L, H = self.num_layers, self.head_blocks
        h = self._blocks(tr.blocks[: L - H], h, ctx, tproj, rotary)
        t_vec = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(B)
        return BackboneOut(m=h, context=ctx, rotary_emb=rotary, latent_shape=tuple(x_t.shape), t=t_vec)

    def fuse(self, out: BackboneOut, y_s: torch.Tensor, s) -> torch.Tensor:
        """h = fusion(m, PE(y_s), emb(s)) (docs/method.md §2.2): the head's input tokens, Tensor[B, T, D]."""
        tr = self.transformer
        B = out.m.shape[0]
        if tuple(y_s.shape) != tuple(out.latent_shape):
            from .errors import InputError

            raise InputError(f"y_s has shape {tuple(y_s.shape)}, the backbone ran on {out.latent_shape}")
        pe = tr.patch_embedding(y_s.to(tr.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        _, temb_s = self._time_embed(s, B, out.m.device, out.m.dtype)
        return self.fusion(out.m, pe, temb_s)

    def head(self, out: BackboneOut, y_s: torch.Tensor, s, r) -> torch.Tensor:
        """head_θ(fuse(m, y_s, s), s, r): the last H blocks + Wan's output layer (Eq. 14: u = (y_s - head) / s).

        Args:
            out: the BackboneOut of this transition.
            y_s (Tensor[B, C, F, H, W]): inner state at inner time s.
            s, r: floats or Tensor[B], 0 <= r <= s <= 1.
        Returns:
            Tensor[B, C, F, H, W] (float32): the head's prediction of y = x1 - x (E[y | y_s] at r = s).
        """
        tr = self.transformer
        B, _, F, Hh, W = out.latent_shape
        dtype = out.m.dtype
        h = self.fuse(out, y_s, s)
        # App. A.1: the head is conditioned on emb(s) + emb_gap(s - r)
        _, temb = self._time_embed(s, B, h.device, dtype)
        s_t = torch.as_tensor(s, dtype=torch.float64).reshape(-1)
        r_t = torch.as_tensor(r, dtype=torch.float64).reshape(-1)
        gap_proj = tr.condition_embedder.timesteps_proj(wan_timestep(s_t - r_t, B, h.device))
        temb = temb + self.emb_gap(gap_proj).to(dtype)
        ce = tr.condition_embedder
        tproj = ce.time_proj(ce.act_fn(temb)).unflatten(1, (6, -1))
        L, H = self.num_layers, self.head_blocks
        h = self._blocks(tr.blocks[L - H :], h, out.context, tproj, out.rotary_emb)
        # output norm, modulation, projection and unpatchify, as in WanTransformer3DModel.forward
        shift, scale = (tr.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        h = (tr.norm_out(h.float()) * (1 + scale) + shift).type_as(h)
        h = tr.proj_out(h)
        p_t, p_h, p_w = tr.config.patch_size
        h = rearrange(h, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)",
                      f=F // p_t, h=Hh // p_h, w=W // p_w, pt=p_t, ph=p_h, pw=p_w)  # tokens -> Tensor[B, C, F, H, W]
        return h.float()

    def effective_nfe(self, outer_steps: int, inner_steps: int) -> float:
        from .schedule import effective_nfe

        return effective_nfe(outer_steps, inner_steps, self.head_blocks, self.num_layers)
