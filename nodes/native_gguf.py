"""Reading the base weights of a MODEL loaded by city96's ComfyUI-GGUF (`UnetLoaderGGUF`), docs/host.md §15.

ComfyUI-GGUF builds the stock WAN21 / WanModel with its `GGMLOps` layers. Every Linear weight (and each bias)
is a `GGMLTensor`, a torch.Tensor subclass carrying `tensor_type` (the GGML type) and `tensor_shape`; F32/F16
ones hold the values, every other type (Q8_0, BF16, K-quants, ...) holds the packed bytes (dtype uint8) and is
dequantized per call by the layer. Weight patches (LoRAs, TMD's diffs) on packed weights are not merged at load:
they ride on the tensor and the layer adds them after dequantizing, in the compute dtype.

Two host facts the native path needs around that (and nothing else of the pack's reads weights directly):
- `ModelPatcher.get_key_patches` fails on such a MODEL: a GGML layer's `state_dict()` holds a fake
  `<layer>.temp.weight` for VRAM estimation, which names no tensor (city96/ComfyUI-GGUF#193,
  Comfy-Org/ComfyUI#6537). `key_patches` gives the same dict without those entries.
- A packed weight read as floats is its bytes: `base_float32` dequantizes it with ComfyUI-GGUF's own
  `dequantize_tensor` (found beside the tensor's class; ComfyUI-GGUF gives no `convert_weight` for
  `get_key_patches` to return), with the layer's `dequant_dtype`, as the layer does when it computes.
"""

from __future__ import annotations

import sys

import torch

from ..tmd_core.errors import InputError

UNPACKED = (None, 0, 1)  # GGML types ComfyUI-GGUF keeps as torch values: none, F32 (0), F16 (1) (IntEnum values)


def is_ggml(t) -> bool:
    """A ComfyUI-GGUF GGMLTensor (packed or not)."""
    return isinstance(t, torch.Tensor) and hasattr(t, "tensor_type") and hasattr(t, "tensor_shape")


def is_packed(t) -> bool:
    """A GGMLTensor whose storage is packed bytes (every GGML type but F32/F16), as ComfyUI-GGUF's is_quantized."""
    return is_ggml(t) and t.tensor_type not in UNPACKED


def logical_shape(t: torch.Tensor) -> tuple:
    """The weight's shape as the layer computes with it: a packed GGMLTensor's storage is bytes (a Q8_0 [128, 128]
    weight is stored [128, 136]); ComfyUI-GGUF keeps the real shape in `tensor_shape`."""
    return tuple(t.tensor_shape) if is_ggml(t) else tuple(t.shape)


def weight_shapes(model, prefix: str) -> dict:
    """{state-dict key: logical shape} of the MODEL's tensors under `prefix`. The state dict of a GGUF MODEL holds
    plain views of the packed bytes, so the shape is read from the module's own tensor where there is one."""
    out = {}
    for key, value in model.model.state_dict().items():
        if key.startswith(prefix):
            own = _attr(model.model, key)
            out[key] = logical_shape(own if isinstance(own, torch.Tensor) else value)
    return out


def is_gguf_model(model) -> bool:
    """A MODEL whose Wan transformer holds GGMLTensors (loaded by ComfyUI-GGUF)."""
    wan = getattr(getattr(model, "model", None), "diffusion_model", None)
    return isinstance(wan, torch.nn.Module) and any(is_ggml(p) for p in wan.parameters())


def _attr(obj, dotted: str):
    """obj.a.b.c for "a.b.c", None where a name is missing."""
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def _identity(a, **kwargs):
    return a


def key_patches(model, prefix: str) -> dict:
    """`model.get_key_patches(prefix)`: {key: [(unpatched weight, convert), patch, ...]}, also for a GGUF MODEL.

    For a GGUF MODEL the same entries are built as ComfyUI 0.3.64's get_key_patches builds them (backup, hook
    backup, the layer's convert function), over the state-dict keys that name a tensor of the module."""
    if not is_gguf_model(model):
        return model.get_key_patches(prefix)
    import comfy.model_patcher

    out = {}
    for key in model.model_state_dict(filter_prefix=prefix):
        if not isinstance(_attr(model.model, key), torch.Tensor):
            continue  # ComfyUI-GGUF's `<layer>.temp.weight`: a VRAM estimate, no tensor
        weight, _, convert = comfy.model_patcher.get_key_weight(model.model, key)
        backup, hook_backup = getattr(model, "backup", {}).get(key), getattr(model, "hook_backup", {}).get(key)
        if backup is not None:
            weight = backup.weight
        if hook_backup is not None:
            weight = hook_backup[0]
        out[key] = [(weight, convert or _identity)] + list(model.patches.get(key, []))
    return out


def base_float32(model, key: str, weight: torch.Tensor, convert) -> torch.Tensor:
    """The unpatched base weight `key` of `model` as a plain float32 CPU tensor.

    A packed GGMLTensor is dequantized by ComfyUI-GGUF as its layer dequantizes it when computing (its
    `dequant_dtype`; Q8_0 multiplies in fp16 by default), so base + (student - base) is the student when the
    layer adds the diff. Anything else: `convert(weight in float32)`, as ComfyUI's patch_weight_to_device does.
    """
    if not is_packed(weight):
        out = convert(weight.to(device="cpu", dtype=torch.float32, copy=True), inplace=True)
        return out.as_subclass(torch.Tensor) if is_ggml(out) else out
    dequantize = getattr(sys.modules.get(type(weight).__module__), "dequantize_tensor", None)
    if dequantize is None:
        raise InputError(f"the MODEL's {key} is a {type(weight).__name__} of GGML type {weight.tensor_type!r} whose "
                         f"loader ({type(weight).__module__}) has no dequantize_tensor: load the Wan2.1 file with "
                         "ComfyUI-GGUF's UnetLoaderGGUF (city96) or UNETLoader")
    dequant_dtype = getattr(_attr(model.model, key.rpartition(".")[0]), "dequant_dtype", None)
    if dequant_dtype == "target":
        dequant_dtype = torch.float32
    out = dequantize(weight.to("cpu"), torch.float32, dequant_dtype)
    return out.as_subclass(torch.Tensor).float()
