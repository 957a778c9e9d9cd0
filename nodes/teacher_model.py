"""TMDDistill's teacher from a native MODEL: the weights ComfyUI samples with, LoRAs included, as diffusers'
Wan transformer, without a second copy of the model (docs/host.md §13).

Every weight of the MODEL's `diffusion_model` is one of three kinds:

- unpatched, in a float dtype: the teacher holds an *alias* of ComfyUI's tensor, a new tensor object on the
  same storage (0 new bytes). ComfyUI loads models under `torch.inference_mode`, and an inference tensor cannot
  be saved for backward (stage 2 backpropagates through the frozen teacher), so the alias is made outside
  inference mode with `Tensor.set_` on the storage: a normal tensor, same memory.
- patched (a LoRA on the MODEL, any ComfyUI weight patch): computed as ComfyUI's own patcher does
  (`ModelPatcher.patch_weight_to_device`): the unpatched weight in fp32, `comfy.lora.calculate_weight` with
  every patch on the key, cast back to the weight's dtype (ComfyUI's rounding for fp32/fp16/bf16). New bytes:
  the patched weights only (a LoRA's targets).
- stored in fp8 (UNETLoader weight_dtype fp8_*, scaled-fp8 files): the teacher cannot compute in fp8, so these
  are upcast to bf16 copies (after the scaled-fp8 scale and any patch, which stays in bf16 rather than being
  re-quantised): 2 bytes per fp8 weight, i.e. an fp8 model costs twice its weight bytes again.

The MODEL itself is only read: no patch is applied to its modules, nothing is unpatched afterwards, and its
other uses in the graph see the same weights as before. `storage_report` measures what the teacher shares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..tmd_core.errors import InputError
from .native_gguf import is_gguf_model

log = logging.getLogger("tmd")

PREFIX = "diffusion_model."  # the Wan transformer inside a MODEL
FLOAT8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))
FP8_EXTRAS = (".scale_weight", ".scale_input")  # scaled-fp8 bookkeeping, folded into the weights here
FP8_MARKER = "scaled_fp8"


@dataclass
class TeacherWeights:
    """The teacher's state dict (original Wan keys, no prefix) and what each part cost."""

    state_dict: dict[str, torch.Tensor]
    shared: int = 0  # weights aliasing ComfyUI's tensors
    patched: int = 0  # weights computed with the MODEL's patches
    upcast: int = 0  # fp8 weights upcast to bf16 (and not patched)
    new_bytes: int = 0  # bytes of tensors made here (patched + upcast)


def alias(t: torch.Tensor) -> torch.Tensor:
    """A normal (not inference) tensor on `t`'s storage: same memory, its own tensor object and autograd state."""
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage(), t.storage_offset(), t.shape,
                                                                t.stride())


def _patched(key: str, weight: torch.Tensor, convert, patches, out_dtype: torch.dtype) -> torch.Tensor:
    """ComfyUI's patched weight: convert (e.g. scaled fp8) in fp32, apply the patches, round to `out_dtype`."""
    w = convert(weight.to(torch.float32, copy=True), inplace=True)
    if patches:
        import comfy.lora

        w = comfy.lora.calculate_weight(patches, w, key)
    # patch_weight_to_device rounds with comfy.float.stochastic_rounding, a plain cast for fp32/fp16/bf16
    return w.to(out_dtype)


def teacher_weights(model) -> TeacherWeights:
    """The MODEL's Wan weights as ComfyUI samples them (its patches applied), aliasing what is unchanged.

    Call outside inference mode (host.training_mode()). Args: model, a ComfyUI ModelPatcher of a Wan MODEL.
    """
    if not hasattr(model, "get_key_patches"):
        raise InputError("teacher must be a MODEL from a diffusion-model loader (UNETLoader with a Wan2.1 t2v file)")
    if is_gguf_model(model):  # its get_key_patches fails, and packed weights are bytes (native_gguf.py)
        raise InputError("the teacher MODEL was loaded by a GGUF loader (UnetLoaderGGUF): TMDDistill cannot distill "
                         "from GGUF weights; load the fp16/bf16 (or fp8) Wan2.1 file with UNETLoader (a GGUF MODEL "
                         "can run a TMD student: TMD Apply to MODEL)")
    out = TeacherWeights({})
    for key, (base, *patches) in model.get_key_patches(PREFIX).items():
        name = key[len(PREFIX):]
        weight, convert = base
        if name == FP8_MARKER or name.endswith(FP8_EXTRAS):
            continue
        if not (weight.is_floating_point() or weight.dtype in FLOAT8):
            raise InputError(f"the teacher MODEL stores {name} as {weight.dtype}: a quantised model (GGUF?) cannot "
                             "be distilled from; load the fp16/bf16 (or fp8) Wan file with UNETLoader")
        if weight.dtype in FLOAT8:
            t = _patched(key, weight, convert, patches, torch.bfloat16)
            out.patched += bool(patches)
            out.upcast += not patches
        elif patches:
            t = _patched(key, weight, convert, patches, weight.dtype)
            out.patched += 1
        else:
            out.state_dict[name] = alias(weight)
            out.shared += 1
            continue
        out.state_dict[name] = t
        out.new_bytes += t.nbytes
    return out


def teacher_from_model(model):
    """The MODEL's Wan transformer as diffusers' WanTransformer3DModel on the patched weights (see the module
    docstring); logs what it shares and what it made. Call inside host.training_mode()."""
    from ..tmd_core.loading import teacher_from_state_dict

    weights = teacher_weights(model)
    heads = getattr(getattr(model.model, "diffusion_model", None), "num_heads", None)  # ComfyUI's WanModel knows
    teacher = teacher_from_state_dict(weights.state_dict, config={"num_attention_heads": heads} if heads else None,
                                      source="the teacher MODEL")
    report = storage_report(teacher, model)
    log.info("TMD: teacher from the MODEL: %d weights share ComfyUI's memory (%.1f MB), %d patched (LoRAs), "
             "%d fp8 upcast; %.1f MB new", weights.shared, report["shared_bytes"] / 2**20, weights.patched,
             weights.upcast, report["new_bytes"] / 2**20)
    return teacher


def storage_report(teacher: torch.nn.Module, model) -> dict:
    """Bytes of the teacher's parameters that live in the MODEL's storage ("shared_bytes") or elsewhere ("new_bytes")."""
    theirs = {t.untyped_storage().data_ptr() for t in model.model_state_dict(PREFIX).values()}
    shared = new = 0
    for p in teacher.parameters():
        if p.untyped_storage().data_ptr() in theirs:
            shared += p.nbytes
        else:
            new += p.nbytes
    return {"shared_bytes": shared, "new_bytes": new}
