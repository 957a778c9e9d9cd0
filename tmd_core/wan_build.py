"""Build a diffusers Wan transformer without allocating weights, then fill it in place (docs/design.md §3)."""

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


def rebuild_rope(model, device="cpu") -> None:
    """Recompute the rotary tables: non-persistent buffers built on meta hold no values."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    cfg = model.config
    with torch.device("cpu"):  # also when called under a caller's meta-device context
        rope = WanRotaryPosEmbed(cfg.attention_head_dim, tuple(cfg.patch_size), cfg.rope_max_seq_len)
    model.rope = rope.to(device)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a diffusers version with new buffers would land here rather than fail mid-forward
        raise CheckpointError(
            f"internal: tensors {left[:4]} are still on the meta device after loading; this diffusers "
            "version is not supported by tmd_core — report it with your diffusers version."
        )


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
            rebuild_rope(sub)
