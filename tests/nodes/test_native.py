"""TMDApplyToModel's host-free parts: which MODELs it accepts (with messages naming both architectures) and the
weight patches a full student becomes. The computation on ComfyUI's WanModel is tested on the real host
(tests/integration/test_native_model.py); here the two host classes it checks are empty stand-ins."""

import sys
import types
from types import SimpleNamespace

import pytest
import torch
from comfy_fakes import run_node
from helpers_wan import make_tiny_teacher

import tmd_core
from tmd_core.layouts import diffusers_to_original_state_dict


class WAN21:  # stand-in for comfy.model_base.WAN21
    def __init__(self, wan):
        self.diffusion_model = wan
        self.manual_cast_dtype = None

    def get_dtype(self):
        return torch.float32


class WanModel:  # stand-in for comfy.ldm.wan.model.WanModel: the attributes the pack reads
    def __init__(self, dim=32, num_layers=4, ffn_dim=64, in_dim=4, out_dim=4, text_dim=24, freq_dim=32,
                 model_type="t2v"):
        self.__dict__.update(locals())


@pytest.fixture
def wan_host(monkeypatch, host):
    import comfy

    ldm, wan_pkg = types.ModuleType("comfy.ldm"), types.ModuleType("comfy.ldm.wan")
    model_mod, base_mod = types.ModuleType("comfy.ldm.wan.model"), types.ModuleType("comfy.model_base")
    model_mod.WanModel, base_mod.WAN21 = WanModel, WAN21
    ldm.wan, wan_pkg.model = wan_pkg, model_mod
    for name, mod in {"comfy.ldm": ldm, "comfy.ldm.wan": wan_pkg, "comfy.ldm.wan.model": model_mod,
                      "comfy.model_base": base_mod}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(comfy, "ldm", ldm, raising=False)
    monkeypatch.setattr(comfy, "model_base", base_mod, raising=False)


def fake_model(teacher, **arch):
    """A MODEL whose base weights are `teacher`'s in ComfyUI's names (get_key_patches as ModelPatcher has it)."""
    sd = diffusers_to_original_state_dict(teacher.state_dict(), prefix="diffusion_model.")

    def get_key_patches(prefix=None):
        return {k: [(v, lambda a, **kw: a)] for k, v in sd.items() if prefix is None or k.startswith(prefix)}

    return SimpleNamespace(model=WAN21(WanModel(**arch)), get_key_patches=get_key_patches)


@pytest.fixture
def native(nodes):
    return sys.modules[nodes.__name__ + ".native_patch"]


def student_file(tmp_path, teacher, dtype=None):
    student = tmd_core.TMDModel.from_teacher(make_tiny_teacher(0), head_blocks=2)
    with torch.no_grad():
        student.transformer.blocks[3].ffn.net[0].proj.weight.add_(0.25)
        student.fusion.alpha.fill_(0.5)
    if dtype is not None:
        student.to(dtype)
    return tmd_core.save_tmd(student, tmp_path / "student.safetensors")


def test_only_changed_weights_become_diff_patches_in_comfyui_names(wan_host, native, tmp_path):
    teacher = make_tiny_teacher(0)
    weights = native.student_weights(student_file(tmp_path, teacher), fake_model(teacher))
    assert list(weights.weight_patches) == ["diffusion_model.blocks.3.ffn.0.weight"]
    kind, (diff,) = weights.weight_patches["diffusion_model.blocks.3.ffn.0.weight"]
    assert kind == "diff" and diff.dtype == torch.float32
    torch.testing.assert_close(diff, torch.full_like(diff, 0.25), rtol=0, atol=1e-6)
    assert set(weights.extras) == {k for k in tmd_core.load_tmd(tmp_path / "student.safetensors").state_dict()
                                   if k.startswith(("fusion.", "emb_gap."))}
    assert (weights.tmd_config.head_blocks, weights.tmd_config.num_layers) == (2, 4)


def test_a_bf16_student_keeps_its_diffs_in_bf16(wan_host, native, tmp_path):
    teacher = make_tiny_teacher(0)
    weights = native.student_weights(student_file(tmp_path, teacher, torch.bfloat16), fake_model(teacher))
    assert weights.weight_patches  # a bf16 student differs from the fp32 teacher almost everywhere
    assert {p[1][0].dtype for p in weights.weight_patches.values()} == {torch.bfloat16}


@pytest.mark.parametrize("arch, words", [
    ({"dim": 64}, ["width 32 x 4 blocks", "width 64 x 4 blocks"]),
    ({"num_layers": 6}, ["width 32 x 4 blocks", "width 32 x 6 blocks"]),
])  # fmt: skip
def test_a_model_of_another_size_is_refused_naming_both(wan_host, native, tmp_path, arch, words):
    teacher = make_tiny_teacher(0)
    with pytest.raises(native.InputError) as e:
        native.student_weights(student_file(tmp_path, teacher), fake_model(teacher, **arch))
    assert all(w in str(e.value) for w in words) and "student.safetensors" in str(e.value)


def test_not_a_wan_t2v_model_is_refused(wan_host, native):
    with pytest.raises(native.InputError, match="MODEL from a diffusion-model loader"):
        native.model_arch(object())
    i2v = SimpleNamespace(model=WAN21(WanModel(in_dim=36, model_type="i2v")), get_key_patches=dict)
    with pytest.raises(native.InputError, match="Wan2.1 text-to-video MODEL") as e:
        native.model_arch(i2v)
    assert "i2v" in str(e.value) and "36 input channels" in str(e.value)
    other = SimpleNamespace(model=SimpleNamespace(diffusion_model=WanModel()), get_key_patches=dict)
    with pytest.raises(native.InputError, match="SimpleNamespace"):
        native.model_arch(other)


def test_the_node_refuses_a_teacher_file(wan_host, nodes, native, host, tmp_path):
    from helpers_wan import save_original_layout

    save_original_layout(make_tiny_teacher(0), host.models_dir / "tmd" / "plain.safetensors", sidecar=True)
    with pytest.raises(native.InputError, match="not a TMD checkpoint"):
        run_node(nodes.TMDApplyToModel, model=None, tmd_name="plain.safetensors")
