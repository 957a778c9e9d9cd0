"""Tiny Wan2.1 teachers and synthesised checkpoint files for tests (shared by every test module).

Everything runs on CPU in milliseconds. Weights are random but non-trivial (every parameter,
including norms and modulation tables, is drawn from a seeded generator), so equality tests mean
something. Files are written in the real layouts: original/ComfyUI keys, diffusers single files,
and diffusers folders written by diffusers' own `save_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tmd_core.layouts import diffusers_to_original_state_dict
from tmd_core.loading import sidecar_config_path


def tiny_wan_config(**overrides) -> dict:
    """A 4-layer, 32-wide Wan config (2 heads x 16) that runs a forward in milliseconds.

    Heads are 16 wide, so loading one of its files needs config={"num_attention_heads": 2} or a
    sidecar (`save_*(..., sidecar=True)`): Wan's own rule is 128-wide heads. Pass
    `num_attention_heads=1, attention_head_dim=128` for a model ComfyUI itself can detect.
    """
    config = {
        "patch_size": [1, 2, 2],
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 4,
        "out_channels": 4,
        "text_dim": 24,
        "freq_dim": 32,
        "ffn_dim": 64,
        "num_layers": 4,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": None,
    }
    unknown = set(overrides) - set(config)
    if unknown:
        raise KeyError(f"unknown Wan config fields {sorted(unknown)}")
    config.update(overrides)
    return config


def make_tiny_teacher(seed: int = 0, **config):
    """A fp32 `WanTransformer3DModel` (eval mode) with seeded random weights in every parameter.

    Args:
        seed: seeds a private generator; the global RNG is left untouched.
        **config: overrides of `tiny_wan_config`.
    """
    from diffusers import WanTransformer3DModel

    with torch.random.fork_rng():  # construction draws from the global RNG; keep tests independent
        model = WanTransformer3DModel(**tiny_wan_config(**config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "scale_shift_table" in name:
                p.copy_(0.3 * noise)  # modulation: shift/scale/gate all clearly non-zero
            elif "norm" in name and p.ndim == 1:
                p.copy_(1.0 + 0.2 * noise)  # affine norm weights/biases around identity
            elif p.ndim == 1:
                p.copy_(0.1 * noise)  # biases
            else:
                fan_in = p[0].numel()
                p.copy_(noise / fan_in**0.5)
    return model.eval()


def _config_of(model) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.items() if not k.startswith("_")}


def _write(tensors: dict, path: Path, dtype, metadata, sidecar_config) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype is not None else v).detach().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)
    if sidecar_config is not None:
        sidecar_config_path(path).write_text(json.dumps(sidecar_config, indent=2))
    return path


def save_original_layout(model, path, prefix: str = "", dtype=None, sidecar: bool = False, metadata=None) -> Path:
    """Write `model` as an original/ComfyUI Wan file (`blocks.0.self_attn.q.weight`, `head.modulation`).

    Args:
        prefix: e.g. "model.diffusion_model." as in ComfyUI full checkpoints.
        dtype: storage dtype (default: the model's).
        sidecar: also write `<stem>.config.json` with the model config (so no config argument is needed).
    """
    tensors = diffusers_to_original_state_dict(model.state_dict(), prefix=prefix)
    return _write(tensors, path, dtype, metadata, _config_of(model) if sidecar else None)


def save_diffusers_single(model, path, dtype=None, sidecar: bool = False, metadata=None) -> Path:
    """Write `model` as one diffusers-layout `.safetensors` file (`blocks.0.attn1.to_q.weight`)."""
    return _write(model.state_dict(), path, dtype, metadata, _config_of(model) if sidecar else None)


def save_diffusers_folder(model, directory, max_shard_size: str | None = None) -> Path:
    """Write a diffusers folder with diffusers' own `save_pretrained` (config.json + safetensors).

    `max_shard_size` (e.g. "20KB") shards the weights and writes the index json.
    """
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(directory), safe_serialization=True, **kwargs)
    return Path(directory)


def tiny_inputs(model, batch: int = 1, frames: int = 3, h: int = 8, w: int = 8, text_len: int = 7, seed: int = 0):
    """Seeded fp32 inputs that fit `model`.

    Returns:
        latent (Tensor[B, in_channels, F, H, W]), context (Tensor[B, text_len, text_dim]).
    """
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    latent = torch.randn(batch, cfg.in_channels, frames, h, w, generator=g)
    context = torch.randn(batch, text_len, cfg.text_dim, generator=g)
    return latent, context


def run_teacher(model, latent, context, timestep: float = 500.0) -> torch.Tensor:
    """One teacher forward in the model's dtype (timestep on Wan's 0..1000 scale), returned as fp32."""
    dtype = next(model.parameters()).dtype
    t = torch.full((latent.shape[0],), float(timestep))
    with torch.no_grad():
        out = model(
            hidden_states=latent.to(dtype), timestep=t, encoder_hidden_states=context.to(dtype), return_dict=False
        )[0]
    return out.float()


def moved_student(teacher, seed: int = 1, head_blocks: int = 1):
    """A TMD student of `teacher` whose every tensor moved away from the teacher's (as training moves them)."""
    import copy

    from tmd_core.model import TMDModel

    model = TMDModel.from_teacher(copy.deepcopy(teacher), head_blocks=head_blocks)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_training_world(root, samples: int) -> dict:
    """A tiny teacher file and `samples` training samples (latents 4x1x8x8, 3-5 text tokens, a negative prompt)
    in shards of 4, for the training-loop tests: {"root", "teacher_path", "data"}."""
    from tmd_core.training.make_data import write_latents

    teacher_path = save_diffusers_single(make_tiny_teacher(0), root / "teacher.safetensors", sidecar=True)
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randn(3 + i % 3, 24, generator=g) for i in range(samples)]
    write_latents(root / "data", torch.randn(samples, 4, 1, 8, 8, generator=g), contexts,
                  [f"p{i}" for i in range(samples)], negative_context=torch.randn(2, 24, generator=g), shard_size=4)
    return {"root": root, "teacher_path": teacher_path, "data": root / "data"}
