"""The native path on a MODEL of GGUF weights (nodes/native_gguf.py), host-free: ComfyUI-GGUF's tensors are the
stand-ins of gguf_fakes.py. The real loader, formats (Q8_0, F16, BF16) and sampling are tested on the real host
in tests/integration/test_native_gguf.py."""

import sys
import types

import gguf_fakes
import pytest
import torch
from helpers_wan import make_tiny_teacher

import tmd_core
from tmd_core.layouts import diffusers_to_original_state_dict

PACKED_KEY = "diffusion_model.blocks.3.ffn.0.weight"


def sub(module, dotted):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


class WAN21(torch.nn.Module):  # stand-in for comfy.model_base.WAN21 holding the GGUF-loaded transformer
    def __init__(self, wan):
        super().__init__()
        self.diffusion_model = wan
        self.manual_cast_dtype = None

    def get_dtype(self):
        return torch.float32


@pytest.fixture
def gguf_model(monkeypatch, host):
    """factory(teacher) -> a MODEL (the host stand-in's ModelPatcher) of `teacher`'s weights as ComfyUI-GGUF keeps
    them: blocks.3.ffn.0.weight packed, the other 2-D weights F16 GGMLTensors, the rest plain; and a Linear's fake
    `temp.weight` state-dict entry, as GGMLLayer._save_to_state_dict adds one for VRAM estimation."""
    import comfy
    from comfy.model_patcher import ModelPatcher

    def make(teacher, wan_cls_attrs=None):
        sd = diffusers_to_original_state_dict(teacher.state_dict())
        held = {}
        for k, v in sd.items():
            if "diffusion_model." + k == PACKED_KEY:
                held[k] = gguf_fakes.packed(v)
            elif v.ndim == 2:
                held[k] = gguf_fakes.unpacked(v.half(), tensor_type=1)
            else:
                held[k] = v.clone()
        wan = gguf_fakes.module_of(held)
        cfg = teacher.config
        wan.__dict__.update(dim=cfg.num_attention_heads * cfg.attention_head_dim, num_layers=cfg.num_layers,
                            ffn_dim=cfg.ffn_dim, in_dim=cfg.in_channels, out_dim=cfg.out_channels,
                            text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, model_type="t2v")
        layer = sub(wan, "blocks.3.ffn.0")

        def save(destination, prefix, keep_vars):  # GGMLLayer._save_to_state_dict of the largest layer
            destination[prefix + "weight"] = torch.zeros(layer.weight.tensor_shape, device="meta")
            destination[prefix + "bias"] = torch.zeros_like(layer.bias, device="meta")
            destination[prefix + "temp.weight"] = torch.zeros(layer.weight.tensor_shape, device="meta")

        layer._save_to_state_dict = save
        layer.dequant_dtype = torch.float16
        return ModelPatcher(WAN21(wan), torch.device("cpu"), torch.device("cpu"))

    ldm, wan_pkg = types.ModuleType("comfy.ldm"), types.ModuleType("comfy.ldm.wan")
    model_mod, base_mod = types.ModuleType("comfy.ldm.wan.model"), types.ModuleType("comfy.model_base")
    model_mod.WanModel, base_mod.WAN21 = torch.nn.Module, WAN21  # module_of builds plain nn.Modules
    ldm.wan, wan_pkg.model = wan_pkg, model_mod
    for name, mod in {"comfy.ldm": ldm, "comfy.ldm.wan": wan_pkg, "comfy.ldm.wan.model": model_mod,
                      "comfy.model_base": base_mod}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(comfy, "ldm", ldm, raising=False)
    monkeypatch.setattr(comfy, "model_base", base_mod, raising=False)
    gguf_fakes.calls.clear()
    return make


@pytest.fixture
def gguf(nodes):
    return sys.modules[nodes.__name__ + ".native_gguf"]


@pytest.fixture
def native(nodes):
    return sys.modules[nodes.__name__ + ".native_patch"]


def test_key_patches_of_a_gguf_model_skip_the_fake_vram_entry(gguf_model, gguf):
    teacher = make_tiny_teacher(0)
    model = gguf_model(teacher)
    assert gguf.is_gguf_model(model)
    assert "diffusion_model.blocks.3.ffn.0.temp.weight" in model.model_state_dict("diffusion_model.")
    model.patches[PACKED_KEY] = [(1.0, ("diff", (torch.ones(1),)), 1.0, None, None)]
    kp = gguf.key_patches(model, "diffusion_model.")
    assert set(kp) == {"diffusion_model." + k for k in diffusers_to_original_state_dict(teacher.state_dict())}
    (weight, convert), *patches = kp[PACKED_KEY]
    assert weight is sub(model.model.diffusion_model, "blocks.3.ffn.0").weight and len(patches) == 1
    assert convert(5) == 5


def test_a_packed_base_is_dequantized_with_the_loaders_own_function(gguf_model, gguf):
    teacher = make_tiny_teacher(0)
    model = gguf_model(teacher)
    layer = sub(model.model.diffusion_model, "blocks.3.ffn.0")
    base = gguf.base_float32(model, PACKED_KEY, layer.weight, lambda a, **kw: a)
    expected = diffusers_to_original_state_dict(teacher.state_dict())["blocks.3.ffn.0.weight"].half().float()
    assert type(base) is torch.Tensor and base.dtype == torch.float32
    torch.testing.assert_close(base, expected, rtol=0, atol=0)
    assert gguf_fakes.calls == [{"dtype": torch.float32, "dequant_dtype": torch.float16}]  # the layer's setting
    f16 = sub(model.model.diffusion_model, "blocks.0.ffn.0").weight  # unpacked: read as values
    assert type(gguf.base_float32(model, "x", f16, lambda a, **kw: a)) is torch.Tensor


def test_a_full_student_on_a_gguf_model_diffs_against_the_dequantized_base(gguf_model, native, tmp_path):
    """student - dequant(base): the layer's dequantized weight plus the diff is the student's weight exactly,
    so the quantisation error of every weight the student holds is carried out by its diff."""
    teacher = make_tiny_teacher(0)
    student = tmd_core.TMDModel.from_teacher(make_tiny_teacher(0), head_blocks=2)
    with torch.no_grad():
        student.transformer.blocks[3].ffn.net[0].proj.weight.add_(0.25)
    path = tmd_core.save_tmd(student, tmp_path / "student.safetensors")
    weights = native.student_weights(path, gguf_model(teacher))
    new = diffusers_to_original_state_dict(student.transformer.state_dict())
    kind, (diff,) = weights.weight_patches[PACKED_KEY]
    base = diffusers_to_original_state_dict(teacher.state_dict())["blocks.3.ffn.0.weight"].half().float()
    torch.testing.assert_close(base + diff, new["blocks.3.ffn.0.weight"], rtol=0, atol=1e-6)
    # every F16 2-D weight differs from the fp32 student by its rounding; plain (fp32) tensors equal it: unpatched
    two_d = {"diffusion_model." + k for k, v in new.items() if v.ndim == 2}
    assert set(weights.weight_patches) == two_d


def test_a_packed_tensor_without_a_dequantizer_is_refused_naming_its_loader(gguf_model, gguf, nodes):
    other = types.ModuleType("other_gguf_loader")
    cls = type("GGMLTensor", (gguf_fakes.GGMLTensor,), {"__module__": "other_gguf_loader"})
    other.GGMLTensor = cls
    sys.modules["other_gguf_loader"] = other
    try:
        w = cls(torch.zeros(8, dtype=torch.uint8), tensor_type=12, tensor_shape=torch.Size((2, 2)))
        with pytest.raises(gguf.InputError, match="other_gguf_loader"):
            gguf.base_float32(gguf_model(make_tiny_teacher(0)), "diffusion_model.x.weight", w, None)
    finally:
        del sys.modules["other_gguf_loader"]



def test_weight_shapes_are_the_shapes_the_layers_compute_with(gguf_model, gguf):
    """A packed weight's storage is bytes of another shape (Q8_0 [128, 128] is stored [128, 136]): the patch
    check reads the module's own tensor_shape (a real ComfyUI-GGUF state dict holds the packed view)."""
    teacher = make_tiny_teacher(0)
    model = gguf_model(teacher)
    layer = sub(model.model.diffusion_model, "blocks.3.ffn.0")
    shapes = gguf.weight_shapes(model, "diffusion_model.")
    assert shapes[PACKED_KEY] == tuple(layer.weight.tensor_shape)
    assert tuple(layer.weight.shape) != shapes[PACKED_KEY]
    expected = diffusers_to_original_state_dict(teacher.state_dict())
    assert all(shapes["diffusion_model." + k] == tuple(v.shape) for k, v in expected.items())
