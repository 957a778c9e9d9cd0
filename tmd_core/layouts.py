"""Wan2.1 checkpoint layouts: original/ComfyUI <-> diffusers key names, and the model config.

The teacher is always diffusers' `WanTransformer3DModel` (docs/design.md §3). Files come in two
key layouts: the original Wan release (also ComfyUI's, optionally under `model.diffusion_model.`)
and diffusers'. Original keys convert with diffusers' own `convert_wan_transformer_to_diffusers`;
the reverse map lives here (diffusers has none) so tests can synthesise ComfyUI-layout files and
the ComfyUI node can hand over a native MODEL's weights. The config is read from the tensor shapes.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import CheckpointError, InputError

log = logging.getLogger(__name__)

# Prefixes ComfyUI puts in front of the diffusion model's keys (full checkpoints, MODEL.state_dict()).
COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")

# Every argument of `WanTransformer3DModel.__init__` (the diffusers config fields).
CONFIG_FIELDS = (
    "patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
    "text_dim", "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm", "qk_norm", "eps",
    "image_dim", "added_kv_proj_dim", "rope_max_seq_len", "pos_embed_seq_len",
)
# The fields that fix every tensor shape: a config holding all of them needs no inference.
SHAPE_FIELDS = (
    "patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
    "text_dim", "freq_dim", "ffn_dim", "num_layers",
)
# Wan's attention heads are 128 wide in every released size; ComfyUI's detection assumes the same.
WAN_HEAD_DIM = 128

SHIPPED_CONFIGS = ("wan21_t2v_1.3b", "wan21_t2v_14b")

ORIGINAL_MARKERS = ("head.modulation", "blocks.0.self_attn.q.weight")
DIFFUSERS_MARKERS = ("condition_embedder.time_embedder.linear_1.weight", "blocks.0.attn1.to_q.weight")
# Wan family members with extra modules a plain WanTransformer3DModel cannot hold.
UNSUPPORTED_VARIANTS = {
    "vace_": "VACE", "control_adapter.": "Fun-Control/camera", "casual_audio_encoder.": "S2V",
    "audio_proj.": "HuMo", "face_adapter.": "Animate", "motion_encoder.": "Animate",
    "ref_conv.": "Fun-reference",
}

# diffusers -> original names. Top level: prefix (or exact) replacements.
_TOP_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
    ("condition_embedder.image_embedder.pos_embed", "img_emb.emb_pos"),
    ("patch_embedding.", "patch_embedding."),
    ("proj_out.", "head.head."),
    ("scale_shift_table", "head.modulation"),
)
# Inside `blocks.N.`: note diffusers' norm2 (the affine cross-attention norm) is the original norm3.
_BLOCK_TO_ORIGINAL = (
    ("attn1.to_out.0.", "self_attn.o."), ("attn2.to_out.0.", "cross_attn.o."),
    ("attn1.to_", "self_attn."), ("attn2.to_", "cross_attn."),
    ("attn1.norm_", "self_attn.norm_"),
    ("attn2.add_k_proj.", "cross_attn.k_img."), ("attn2.add_v_proj.", "cross_attn.v_img."),
    ("attn2.norm_added_k.", "cross_attn.norm_k_img."), ("attn2.norm_", "cross_attn.norm_"),
    ("norm2.", "norm3."), ("ffn.net.0.proj.", "ffn.0."), ("ffn.net.2.", "ffn.2."),
    ("scale_shift_table", "modulation"),
)
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def strip_comfy_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ComfyUI's `model.diffusion_model.` / `diffusion_model.` prefix.

    When any key carries a prefix, only the prefixed keys are kept: an all-in-one ComfyUI
    checkpoint also holds the VAE (`first_stage_model.`) and text encoder, which are not ours.
    """
    for prefix in COMFY_PREFIXES:
        if any(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return dict(state_dict)


def detect_layout(keys: Iterable[str]) -> str | None:
    """Return "original", "diffusers", "tmd" or None (not a Wan transformer) for a key set."""
    keys = set(keys)
    if any(k.startswith("fusion.") for k in keys) and any(k.startswith("transformer.") for k in keys):
        return "tmd"
    stripped = set(strip_comfy_prefix(dict.fromkeys(keys)))
    if any(m in stripped for m in ORIGINAL_MARKERS):
        return "original"
    if any(m in stripped for m in DIFFUSERS_MARKERS) and "scale_shift_table" in stripped:
        return "diffusers"
    return None


def not_wan_message(source: str, keys: Iterable[str]) -> str:
    sample = sorted(keys)[:4]
    return (
        f"not a Wan2.1 transformer checkpoint: {source} has keys like {sample}; expected keys like "
        f"'blocks.0.self_attn.q.weight', 'head.modulation' (original/ComfyUI layout, optionally under "
        f"'model.diffusion_model.') or 'blocks.0.attn1.to_q.weight', 'condition_embedder.time_embedder."
        f"linear_1.weight' (diffusers layout). Pick a Wan2.1/2.2 diffusion-model file "
        f"(ComfyUI: models/diffusion_models), not a VAE, text encoder, LoRA or another model family."
    )


def check_supported_variant(keys: Iterable[str], source: str) -> None:
    """Raise for Wan family members (VACE, S2V, Animate, ...) that need modules we do not build."""
    for k in keys:
        for marker, variant in UNSUPPORTED_VARIANTS.items():
            if k.startswith(marker):
                raise CheckpointError(
                    f"{source} is a Wan {variant} checkpoint (key {k!r}); load_teacher supports the plain "
                    f"Wan2.1/2.2 text-to-video and image-to-video transformers only: use a T2V file."
                )


def original_to_diffusers_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename original/ComfyUI Wan keys to diffusers' (values untouched, input not modified).

    Args:
        state_dict: original-layout keys (`blocks.0.self_attn.q.weight`, `head.modulation`, ...),
            optionally under `model.diffusion_model.` or `diffusion_model.`; values may be tensors,
            shapes or anything else (only keys are rewritten).
    Returns:
        A new dict with diffusers keys (`blocks.0.attn1.to_q.weight`, `scale_shift_table`, ...).
    """
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    sd = strip_comfy_prefix(state_dict)
    check_supported_variant(sd, "the state dict")
    # The converter pops from its argument, so it gets our copy.
    converted = convert_wan_transformer_to_diffusers(sd)
    # FLF2V's image position embedding is not in diffusers' rename table.
    if "img_emb.emb_pos" in converted:
        converted["condition_embedder.image_embedder.pos_embed"] = converted.pop("img_emb.emb_pos")
    return converted


def diffusers_key_to_original(key: str) -> str:
    """Map one diffusers Wan key to its original/ComfyUI name (no prefix)."""
    m = _BLOCK_KEY.match(key)
    if m:
        index, rest = m.groups()
        for new, old in _BLOCK_TO_ORIGINAL:
            if rest.startswith(new):
                return f"blocks.{index}.{old}{rest[len(new):]}"
    else:
        for new, old in _TOP_TO_ORIGINAL:
            if key.startswith(new):
                return old + key[len(new):]
    raise InputError(
        f"cannot map diffusers key {key!r} to the original Wan layout: it is not part of a Wan2.1 "
        f"transformer (expected keys like 'blocks.0.attn1.to_q.weight'); pass a WanTransformer3DModel state dict."
    )


def diffusers_to_original_state_dict(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Rename diffusers Wan keys to the original/ComfyUI layout, optionally under `prefix`.

    Args:
        state_dict: a `WanTransformer3DModel` state dict (values untouched).
        prefix: e.g. "model.diffusion_model." to write what ComfyUI's full checkpoints hold.
    Returns:
        A new dict; `original_to_diffusers_state_dict` maps it back exactly.
    """
    return {prefix + diffusers_key_to_original(k): v for k, v in state_dict.items()}


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def count_blocks(keys: Iterable[str]) -> int:
    indices = {int(m.group(1)) for k in keys if (m := _BLOCK_KEY.match(k))}
    return max(indices) + 1 if indices else 0


def infer_wan_config(state_dict_or_shapes: Mapping[str, Any], num_attention_heads: int | None = None) -> dict:
    """Infer a `WanTransformer3DModel` config from tensor shapes (any layout, any prefix).

    Args:
        state_dict_or_shapes: key -> tensor (real or meta) or shape tuple.
        num_attention_heads: overrides Wan's rule heads = dim // 128 (needed for tiny test models).
    Returns:
        A config dict with every field of `CONFIG_FIELDS` (patch_size as a list, JSON-ready); a
        shipped preset (tmd_core/configs/) when the shapes match one.
    """
    shapes = {k: _shape(v) for k, v in state_dict_or_shapes.items()}
    layout = detect_layout(shapes)
    if layout not in ("original", "diffusers"):
        raise CheckpointError(not_wan_message("the state dict", shapes))
    shapes = original_to_diffusers_state_dict(shapes) if layout == "original" else strip_comfy_prefix(shapes)

    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(
                f"cannot infer the Wan config: weight {key!r} is missing; the checkpoint is incomplete "
                f"or not a Wan2.1 transformer. Re-download it, or pass the full config."
            )
        return shapes[key]

    patch = need("patch_embedding.weight")  # (dim, in_channels, pt, ph, pw)
    dim, in_channels, patch_size = patch[0], patch[1], list(patch[2:])
    inferred_heads = num_attention_heads is None
    if num_attention_heads is None:
        if dim % WAN_HEAD_DIM:
            raise CheckpointError(
                f"cannot infer the attention head count of a {dim}-wide Wan model: Wan uses "
                f"{WAN_HEAD_DIM}-wide heads and {dim} is not a multiple of {WAN_HEAD_DIM}. Pass "
                f"config={{'num_attention_heads': N}} to load_teacher, or put a '<name>.config.json' "
                f"with it next to the checkpoint."
            )
        num_attention_heads = dim // WAN_HEAD_DIM
    if num_attention_heads <= 0 or dim % num_attention_heads:
        raise CheckpointError(
            f"num_attention_heads={num_attention_heads} does not divide the model width {dim}: "
            f"choose a head count that divides {dim}."
        )
    config = {
        "patch_size": patch_size,
        "num_attention_heads": num_attention_heads,
        "attention_head_dim": dim // num_attention_heads,
        "in_channels": in_channels,
        "out_channels": need("proj_out.weight")[0] // math.prod(patch_size),
        "text_dim": need("condition_embedder.text_embedder.linear_1.weight")[1],
        "freq_dim": need("condition_embedder.time_embedder.linear_1.weight")[1],
        "ffn_dim": need("blocks.0.ffn.net.0.proj.weight")[0],
        "num_layers": count_blocks(shapes),
        # Original layout: norm3 is the affine cross-attention LayerNorm (diffusers' norm2).
        "cross_attn_norm": "blocks.0.norm2.weight" in shapes,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": None,
    }
    if "condition_embedder.image_embedder.norm1.weight" in shapes:  # I2V / FLF2V
        config["image_dim"] = shapes["condition_embedder.image_embedder.norm1.weight"][0]
    if "blocks.0.attn2.add_k_proj.weight" in shapes:
        config["added_kv_proj_dim"] = shapes["blocks.0.attn2.add_k_proj.weight"][1]
    if "condition_embedder.image_embedder.pos_embed" in shapes:
        config["pos_embed_seq_len"] = shapes["condition_embedder.image_embedder.pos_embed"][1]
    name = match_shipped_config(config)
    if name:
        return shipped_config(name)
    if inferred_heads:  # not a shipped Wan size: the head count is Wan's rule, which a custom model may not follow
        log.warning("Wan config inferred from shapes without a config: %d-wide model, %d heads by Wan's rule "
                    "(width / %d). A model trained with another head count gives wrong outputs without any error: "
                    "put '<name>.config.json' next to the checkpoint.", dim, num_attention_heads, WAN_HEAD_DIM)
    return config


def shipped_config(name: str) -> dict:
    """The shipped diffusers config `name` (one of SHIPPED_CONFIGS), read from tmd_core/configs/."""
    if name not in SHIPPED_CONFIGS:
        raise InputError(f"unknown Wan config {name!r}: choose one of {list(SHIPPED_CONFIGS)}.")
    text = (Path(__file__).parent / "configs" / f"{name}.json").read_text()
    return normalize_config(json.loads(text), source=f"configs/{name}.json")


def match_shipped_config(config: Mapping[str, Any]) -> str | None:
    """Name of the shipped config equal to `config` (after normalisation), else None."""
    config = normalize_config(config)
    for name in SHIPPED_CONFIGS:
        if shipped_config(name) == config:
            return name
    return None


def normalize_config(config: Mapping[str, Any], source: str = "config") -> dict:
    """Drop diffusers' bookkeeping fields (`_class_name`, ...), reject unknown ones, list patch_size.

    Raises CheckpointError naming `source` for a field `WanTransformer3DModel` does not take.
    """
    unknown = sorted(k for k in config if not k.startswith("_") and k not in CONFIG_FIELDS)
    if unknown:
        raise CheckpointError(
            f"{source} has fields {unknown} that WanTransformer3DModel does not take; expected only "
            f"{list(CONFIG_FIELDS)}. Remove them (or upgrade diffusers if they are new)."
        )
    out = {k: v for k, v in config.items() if not k.startswith("_")}
    if "patch_size" in out:
        out["patch_size"] = list(out["patch_size"])
    return out
