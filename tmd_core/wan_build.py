"""Build a diffusers Wan transformer without allocating weights, then fill it in place (DESIGN.md "Memory")."""

from __future__ import annotations

import torch
from torch import nn

from .errors import CheckpointError


def transformer_config_dict(transformer) -> dict:
    """The diffusers config as plain JSON-able data (private `_` keys dropped, tuples as lists)."""
    out = {}
    for k, v in dict(transformer.config).items():
        if k.startswith("_"):
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def build_empty_wan(config: dict):
    """A WanTransformer3DModel from `config`; call under `torch.device("meta")` for no allocation."""
    from diffusers import WanTransformer3DModel

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    if "patch_size" in cfg:
        cfg["patch_size"] = tuple(cfg["patch_size"])
    try:
        return WanTransformer3DModel(**cfg)
    except TypeError as e:
        raise CheckpointError(f"transformer config does not fit diffusers' WanTransformer3DModel: {e}") from e


def _rebuild_rope(transformer) -> None:
    """Rope tables are non-persistent buffers (not in files): recompute them for real on the CPU."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    c = transformer.config
    with torch.device("cpu"):
        transformer.rope = WanRotaryPosEmbed(c.attention_head_dim, tuple(c.patch_size), c.rope_max_seq_len)


def load_in_place(module: nn.Module, state_dict: dict, what: str = "checkpoint") -> None:
    """Load `state_dict` into a meta-built `module` by assignment (no second copy); strict, clear errors."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: tensors do not match the model (missing {len(missing)}: {missing[:4]}, "
            f"unexpected {len(unexpected)}: {unexpected[:4]}); is it a checkpoint of this architecture?"
        )
    for k, v in state_dict.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{what}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    module.load_state_dict(state_dict, strict=True, assign=True)
    for sub in module.modules():
        if type(sub).__name__ == "WanTransformer3DModel":
            _rebuild_rope(sub)
    leftovers = [n for n, b in module.named_buffers() if b.is_meta]
    if leftovers:
        raise CheckpointError(f"{what}: buffers left unmaterialised after loading: {leftovers[:4]}")
