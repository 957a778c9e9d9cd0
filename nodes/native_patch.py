"""TMD weights onto a native Wan2.1 MODEL: ComfyUI weight patches for the changed blocks, extras beside it.

The one interface (docs/host.md §12): `apply_tmd(model, TMDWeights)` returns a TMD_MODEL, a clone of the
MODEL whose weight patches carry the TMD change and whose attachment `tmd` holds the extras (fusion layer,
gap embedding) under their own ModelPatcher. A `TMDWeights` can come from any source:

- a full TMD student (`tmd/1`, `student_weights`): its transformer minus the MODEL's base weights, as
  `("diff", (tensor,))` patches of only the tensors that differ;
- a TMD patch file (`patch_weights`; fusion + gap embedding in full, changed blocks as LoRA, other changed
  tensors as whole differences): its LoRA and difference part converted with
  `comfy.lora.load_lora(lora_sd, comfy.lora.model_lora_keys_unet(model.model, {}))`, which gives exactly the
  `weight_patches` dict below (LoRA adapters and `("diff", (tensor,))` patches).

Patches are additive, so LoRAs already on the MODEL (LoraLoaderModelOnly before this node) stack with the
TMD change in any order: base + LoRA + (student - base) = student + LoRA.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..tmd_core.checkpoint import read_tmd_info
from ..tmd_core.errors import CheckpointError, InputError
from ..tmd_core.layouts import diffusers_key_to_original
from ..tmd_core.model import TMDConfig
from .native_gguf import base_float32, key_patches, weight_shapes

log = logging.getLogger("tmd")

PREFIX = "diffusion_model."  # ComfyUI's name of the Wan transformer inside a MODEL
ATTACHMENT = "tmd"  # ModelPatcher attachment holding NativeSpec
EXTRA_PARTS = ("fusion.", "emb_gap.")


@dataclass
class TMDWeights:
    """What a TMD source adds to a Wan2.1 MODEL.

    tmd_config: H, L, fusion kind, schedule defaults.
    arch: the Wan architecture it was made for: dim, num_layers, ffn_dim, in_dim, text_dim, freq_dim.
    extras: `fusion.*` and `emb_gap.*` tensors (tmd/1 names), in full.
    weight_patches: ComfyUI weight name (`diffusion_model.blocks.27.ffn.0.weight`) -> a ComfyUI patch,
        `("diff", (tensor,))` or a weight adapter as `comfy.lora.load_lora` returns them.
    source: file name, for messages.
    """

    tmd_config: TMDConfig
    arch: dict
    extras: dict[str, torch.Tensor]
    weight_patches: dict = field(default_factory=dict)
    source: str = "the TMD checkpoint"


@dataclass
class NativeSpec:
    """Attachment of a native TMD_MODEL: the TMD config and the ModelPatcher of its extras."""

    tmd_config: TMDConfig
    extras: object  # comfy.model_patcher.ModelPatcher of NativeExtras
    source: str


def model_arch(model) -> dict:
    """The Wan2.1 t2v architecture of a native MODEL; InputError naming what it is otherwise."""
    base = getattr(model, "model", None)
    wan = getattr(base, "diffusion_model", None)
    if wan is None or not hasattr(model, "get_key_patches"):
        raise InputError(f"model must be a MODEL from a diffusion-model loader (UNETLoader with a Wan2.1 "
                         f"text-to-video file), got {type(model).__name__}")
    import comfy.ldm.wan.model
    import comfy.model_base

    kind = f"{type(base).__name__} ({type(wan).__name__})"
    if type(base) is not comfy.model_base.WAN21 or type(wan) is not comfy.ldm.wan.model.WanModel \
            or wan.model_type != "t2v" or wan.in_dim != wan.out_dim:
        raise InputError(f"the MODEL is {kind}, model_type {getattr(wan, 'model_type', '?')}, "
                         f"{getattr(wan, 'in_dim', '?')} input channels; TMD runs on a Wan2.1 text-to-video MODEL "
                         "(WAN21 / WanModel, t2v, 16 channels): load wan2.1_t2v_*.safetensors with UNETLoader")
    return {"dim": wan.dim, "num_layers": wan.num_layers, "ffn_dim": wan.ffn_dim, "in_dim": wan.in_dim,
            "text_dim": wan.text_dim, "freq_dim": wan.freq_dim}


def _describe(arch: dict) -> str:
    return f"width {arch['dim']} x {arch['num_layers']} blocks (ffn {arch['ffn_dim']}, text {arch['text_dim']})"


def check_arch(model_arch_: dict, weights: TMDWeights) -> None:
    """InputError naming both architectures when the TMD weights were made for another Wan."""
    keys = ("dim", "num_layers", "ffn_dim", "in_dim", "text_dim", "freq_dim")
    if any(model_arch_[k] != weights.arch.get(k) for k in keys):
        raise InputError(f"{weights.source} was made for a Wan2.1 of {_describe(weights.arch)}, the MODEL is "
                         f"{_describe(model_arch_)}: connect the MODEL of the teacher it was distilled from")


def _arch_of_transformer_config(cfg: dict) -> dict:
    return {"dim": cfg["num_attention_heads"] * cfg["attention_head_dim"], "num_layers": cfg["num_layers"],
            "ffn_dim": cfg["ffn_dim"], "in_dim": cfg["in_channels"], "text_dim": cfg["text_dim"],
            "freq_dim": cfg["freq_dim"]}


def student_weights(path, model) -> TMDWeights:
    """TMDWeights of a full `tmd/1` student against `model`'s base weights: diffs of the changed tensors.

    The diff is taken against the MODEL's unpatched base (its LoRAs are not part of it), in float32, and
    stored in the student's dtype when that is a 16-bit float (fp32 otherwise): the change of a 16-bit
    student costs its own size, whatever the MODEL's weight dtype (fp8 included).
    """
    from safetensors import safe_open

    name = Path(path).name
    info = read_tmd_info(path)  # checked header: format, tmd_config, layer counts
    tmd_config = TMDConfig.from_dict(info["tmd_config"])  # ConfigError for an old inner-velocity reading
    arch = _arch_of_transformer_config(info["transformer_config"])
    check_arch(model_arch(model), TMDWeights(tmd_config, arch, {}, source=name))
    base = key_patches(model, PREFIX)  # [(unpatched weight, convert), patches...]; GGUF MODELs too (native_gguf)
    extras, patches, changed = {}, {}, 0
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            if key.startswith(EXTRA_PARTS):
                extras[key] = f.get_tensor(key)
                continue
            if not key.startswith("transformer."):
                raise CheckpointError(f"{name}: unexpected tensor {key!r} in a tmd/1 file")
            target = PREFIX + diffusers_key_to_original(key[len("transformer."):])
            if target not in base:
                raise InputError(f"{name}: {key} has no counterpart {target} in the MODEL: not a Wan2.1 t2v MODEL "
                                 "of the same family")
            weight, convert = base[target][0]
            new = f.get_tensor(key)
            old = base_float32(model, target, weight, convert)  # a GGUF weight dequantized (native_gguf)
            if tuple(old.shape) != tuple(new.shape):
                raise InputError(f"{name}: {key} has shape {tuple(new.shape)}, the MODEL's {target} "
                                 f"{tuple(old.shape)}: connect the teacher it was distilled from")
            diff = new.float() - old
            if bool((diff != 0).any()):
                keep = new.dtype if new.dtype in (torch.bfloat16, torch.float16) else torch.float32
                patches[target] = ("diff", (diff.to(keep),))
                changed += 1
    log.info("TMD: %s changes %d of %d weights of the MODEL", name, changed, len(base))
    return TMDWeights(tmd_config, arch, extras, patches, source=name)


def patch_weights(path, model) -> TMDWeights:
    """TMDWeights of a TMD patch file (docs/patches.md §2) for `model`: its LoRA factors and whole differences as
    the weight patches ComfyUI's own LoRA loader makes of them, its `tmd.fusion.*` / `tmd.emb_gap.*` as extras.

    The architecture is checked from the header before any tensor is read; `load_patch` then checks every key
    and shape against it (CheckpointError naming the file). The factors stay as stored (rank r, the file's dtype):
    ComfyUI merges B @ A when it loads the weights, as for any LoRA.
    """
    import comfy.lora

    from ..tmd_core.patch_file import load_patch, lora_state_dict, read_patch_info

    name = Path(path).name
    info = read_patch_info(path)  # header: format, kind, tmd_config, base_architecture
    arch = _arch_of_transformer_config(info["transformer_config"])
    check_arch(model_arch(model), TMDWeights(TMDConfig.from_dict(info["tmd_config"]), arch, {}, source=name))
    patch = load_patch(path)
    lora_sd = lora_state_dict(patch)
    patches = comfy.lora.load_lora(lora_sd, comfy.lora.model_lora_keys_unet(model.model, {}), log_missing=False)
    shapes = weight_shapes(model, PREFIX)  # as the layers compute with them (a GGUF MODEL's packed weights too)
    for dkey in [*patch.lora, *patch.full]:
        target = PREFIX + diffusers_key_to_original(dkey)
        if target not in patches or target not in shapes:
            raise InputError(f"{name}: {dkey} ({target}) is not a weight of the MODEL that ComfyUI's LoRA loader "
                             "can patch: connect the Wan2.1 t2v MODEL of the teacher the patch was made from")
        if dkey in patch.lora:
            a, b = patch.lora[dkey]
            fits = b.shape[0] == shapes[target][0] and b.shape[0] * a.shape[1] == torch.Size(shapes[target]).numel()
        else:
            fits = tuple(patch.full[dkey].shape) == shapes[target]
        if not fits:
            raise InputError(f"{name}: its change of {target} does not fit the MODEL's {shapes[target]}: connect the "
                             "MODEL of the teacher the patch was made from")
    log.info("TMD: %s patches %d weights of the MODEL (%d LoRA of rank <= %d, %d whole differences)", name,
             len(patches), len(patch.lora), patch.rank, len(patch.full))
    return TMDWeights(patch.tmd_config, arch, dict(patch.extra), patches, source=name)


def extras_dim(extras: dict) -> int:
    w = extras.get("emb_gap.time_embedder.linear_2.weight")
    if w is None:
        raise CheckpointError("the TMD weights hold no emb_gap.time_embedder.linear_2.weight: not a TMD checkpoint")
    return int(w.shape[0])


def apply_tmd(model, weights: TMDWeights):
    """A TMD_MODEL: a clone of `model` with `weights.weight_patches` added (after the MODEL's own patches)
    and the extras under their own ModelPatcher in the attachment `tmd` (NativeSpec)."""
    import comfy.model_patcher

    from .native_adapter import NativeExtras

    arch = model_arch(model)
    check_arch(arch, weights)
    if extras_dim(weights.extras) != arch["dim"]:
        raise InputError(f"{weights.source}: its fusion layer is {extras_dim(weights.extras)} wide, the MODEL "
                         f"{arch['dim']}: the file does not describe its weights")
    out = model.clone()
    added = out.add_patches(weights.weight_patches, strength_patch=1.0)
    missing = sorted(set(weights.weight_patches) - set(added))
    if missing:
        raise InputError(f"{weights.source}: {len(missing)} patched weights are not in the MODEL "
                         f"(first: {missing[0]}): connect the Wan2.1 t2v teacher it was made for")
    dtype = compute_dtype(model)
    extras = NativeExtras.from_state_dict(weights.extras, weights.tmd_config.fusion, arch["dim"], arch["freq_dim"],
                                          dtype)
    extras_patcher = comfy.model_patcher.ModelPatcher(extras, load_device=model.load_device,
                                                      offload_device=model.offload_device)
    out.set_attachments(ATTACHMENT, NativeSpec(weights.tmd_config, extras_patcher, weights.source))
    return out


def compute_dtype(model) -> torch.dtype:
    """The dtype ComfyUI's apply_model computes a MODEL in: its manual-cast dtype, else its weight dtype."""
    base = model.model
    return getattr(base, "manual_cast_dtype", None) or base.get_dtype()


def load_native(model, spec: NativeSpec, shape) -> torch.nn.Module:
    """Load a native TMD_MODEL for sampling a latent of `shape` and return its NativeTMD.

    One `load_models_gpu` call for the MODEL and its extras, with the activation memory of one forward,
    as ComfyUI's samplers do (no CFG, so one batch): ComfyUI decides full or partial loading (--lowvram),
    applies the weight patches (TMD change and LoRAs) and casts weights.
    """
    import comfy.model_management

    from .native_adapter import NativeTMD

    memory = model.memory_required(list(shape))
    comfy.model_management.load_models_gpu([model, spec.extras], memory_required=memory,
                                           minimum_memory_required=memory)
    return NativeTMD(model.model.diffusion_model, spec.extras.model, spec.tmd_config, compute_dtype(model),
                     device=model.load_device,
                     transformer_options=model.model_options.get("transformer_options", {}),
                     latent_format=getattr(model.model, "latent_format", None),
                     modulations=patched_modulations(model, model.load_device))


def patched_modulations(model, device) -> dict[str, torch.Tensor]:
    """The patched `modulation` tables of the Wan blocks and head: {"blocks.N" | "head": Tensor (fp32)}.

    ComfyUI 0.3.64 applies weight patches only to parameters of leaf modules (`ModelPatcher._load_list` skips
    "random weights in non leaf modules"), and a block's or the head's `modulation` sits beside child layers,
    so a patch of it would be dropped. A TMD student changes these tables, so they are computed here with
    ComfyUI's own `comfy.lora.calculate_weight` from every patch on the key (the TMD diff and any LoRA).
    """
    import comfy.lora
    import comfy.utils

    out = {}
    for key, patches in model.patches.items():
        if key.startswith(PREFIX) and key.endswith(".modulation"):
            base = comfy.utils.get_attr(model.model, key)
            weight = base.to(device=device, dtype=torch.float32, copy=True)
            out[key[len(PREFIX):-len(".modulation")]] = comfy.lora.calculate_weight(patches, weight, key)
    return out


def native_spec(model) -> NativeSpec | None:
    """The NativeSpec of a native TMD_MODEL, None for a TMDModelLoader one."""
    get = getattr(model, "get_attachment", None)
    return get(ATTACHMENT) if get is not None else None
