"""A stand-in for what city96's ComfyUI-GGUF puts in a MODEL (its ops.py / dequant.py), for host-free tests.

`GGMLTensor`: a torch.Tensor subclass with `tensor_type` and `tensor_shape`; "packed" here means fp16 values
stored as raw bytes (uint8, GGML type 8), unpacked types (0 = F32, 1 = F16) hold their values. This module
also defines `dequantize_tensor(tensor, dtype, dequant_dtype)`, next to the tensor class as in ComfyUI-GGUF's
ops.py, and records its calls. The real formats and loader are tested in tests/integration/test_native_gguf.py.
"""

from __future__ import annotations

import torch

PACKED = 8  # GGML Q8_0's type number; the payload here is simply fp16 bytes
calls: list[dict] = []


class GGMLTensor(torch.Tensor):
    def __new__(cls, data, *, tensor_type, tensor_shape):
        return super().__new__(cls, data)

    def __init__(self, data, *, tensor_type, tensor_shape):
        super().__init__()
        self.tensor_type, self.tensor_shape = tensor_type, tensor_shape

    def to(self, *args, **kwargs):
        new = super().to(*args, **kwargs)
        new.tensor_type, new.tensor_shape = self.tensor_type, self.tensor_shape
        return new

    def detach(self, *args, **kwargs):  # as ComfyUI-GGUF's: nn.Parameter(GGMLTensor) keeps the attributes
        return self


def packed(values: torch.Tensor) -> GGMLTensor:
    """`values` rounded to fp16 and stored as bytes, as a packed GGMLTensor of their shape."""
    raw = values.detach().to(torch.float16).contiguous().view(torch.uint8).reshape(-1)
    return GGMLTensor(raw, tensor_type=PACKED, tensor_shape=torch.Size(values.shape))


def unpacked(values: torch.Tensor, tensor_type: int = 1) -> GGMLTensor:
    return GGMLTensor(values.detach().clone(), tensor_type=tensor_type, tensor_shape=torch.Size(values.shape))


def dequantize_tensor(tensor, dtype=None, dequant_dtype=None):
    calls.append({"dtype": dtype, "dequant_dtype": dequant_dtype})
    if tensor.tensor_type in (None, 0, 1):
        return tensor.to(dtype)
    values = tensor.as_subclass(torch.Tensor).view(torch.float16).reshape(tensor.tensor_shape)
    return GGMLTensor(values.to(dequant_dtype or dtype), tensor_type=None, tensor_shape=values.shape).to(dtype)


def module_of(state_dict: dict) -> torch.nn.Module:
    """An nn.Module whose parameters are `state_dict` under the same dotted names (GGMLTensors stay GGMLTensors)."""
    root = torch.nn.Module()
    for key, value in state_dict.items():
        owner = root
        *path, name = key.split(".")
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        owner.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))
    return root
