"""TMDApplyToModel's host-free parts: which MODELs it accepts (with messages naming both architectures) and the
weight patches a full student or a TMD patch becomes. The computation on ComfyUI's WanModel is tested on the real
host (tests/integration/test_native_model.py, test_native_patch.py); here the two host classes it checks are empty
stand-ins, and a patch's LoRA goes through the `comfy.lora` stand-in (host_fakes/comfy/lora.py)."""

import sys
from types import SimpleNamespace

import native_stand_ins
import pytest
import torch
from comfy_fakes import run_node
from helpers_wan import make_tiny_teacher
from native_stand_ins import WAN21, WanModel, fake_model

import tmd_core
from tmd_core.layouts import diffusers_key_to_original, diffusers_to_original_state_dict


@pytest.fixture
def wan_host(host):
    with native_stand_ins.wan_host():
        yield


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


# ---- TMD patches (docs/patches.md): LoRA + whole differences as ComfyUI's LoRA loader makes them, extras beside


def patch_file(tmp_path, teacher, rank, name="patch.safetensors", seed=1):
    """A TMD patch of a student whose every tensor moved (H = 1 of L = 4), fp32 factors; (path, Patch)."""
    from helpers_wan import moved_student

    from tmd_core.patch import extract_patch_from_models
    from tmd_core.patch_file import save_patch

    patch = extract_patch_from_models(moved_student(teacher, seed=seed), teacher, rank, dtype=torch.float32)
    return save_patch(patch, tmp_path / name), patch


def merged(weights, teacher):
    """The teacher's weights in ComfyUI's names with `weights.weight_patches` applied as ComfyUI applies them."""
    import comfy.lora

    sd = diffusers_to_original_state_dict(teacher.state_dict(), prefix="diffusion_model.")
    out = {}
    for k, w in sd.items():
        patch = weights.weight_patches.get(k)
        out[k] = w.clone() if patch is None else comfy.lora.calculate_weight([(1.0, patch, 1.0, None, None)],
                                                                             w.clone().float(), k)
    return out


def test_a_patch_becomes_lora_adapters_and_diff_patches_in_comfyui_names(wan_host, native, tmp_path):
    import copy

    import comfy.lora

    from tmd_core.patch import apply_patch

    teacher = make_tiny_teacher(0)
    path, patch = patch_file(tmp_path, teacher, rank=2)
    weights = native.patch_weights(path, fake_model(teacher))
    names = {"diffusion_model." + diffusers_key_to_original(k): k for k in [*patch.lora, *patch.full]}
    assert set(weights.weight_patches) == set(names) and len(patch.lora) > 0 and len(patch.full) > 0
    for target, dkey in names.items():
        p = weights.weight_patches[target]
        if dkey in patch.lora:  # up = B [out, r], down = A [r, in], alpha = r: ComfyUI's scale 1
            a, b = patch.lora[dkey]
            assert isinstance(p, comfy.lora.LoRAAdapter)
            assert torch.equal(p.weights[0], b) and torch.equal(p.weights[1], a) and p.weights[2] == a.shape[0]
        else:
            assert p[0] == "diff" and torch.equal(p[1][0], patch.full[dkey])
    assert "diffusion_model.blocks.0.modulation" in weights.weight_patches  # a modulation table, patched whole
    assert set(weights.extras) == {k for k in patch.extra} and all(k.startswith(("fusion.", "emb_gap."))
                                                                   for k in weights.extras)
    assert weights.tmd_config.to_dict() == patch.tmd_config.to_dict() and weights.source == "patch.safetensors"
    # ComfyUI's arithmetic on these patches gives apply_patch's merged transformer
    ours = diffusers_to_original_state_dict(apply_patch(copy.deepcopy(teacher), patch).transformer.state_dict(),
                                            prefix="diffusion_model.")
    got = merged(weights, teacher)
    assert max(float((got[k] - ours[k]).abs().max()) for k in ours) <= 1e-6


def test_a_full_rank_patch_patches_the_model_into_the_student(wan_host, native, tmp_path):
    """rank >= every matrix's smaller side: the MODEL + the patch's weight patches is the student (fp32)."""
    from helpers_wan import moved_student

    import tmd_core

    teacher = make_tiny_teacher(0)
    path, _ = patch_file(tmp_path, teacher, rank=1024)
    student = diffusers_to_original_state_dict(moved_student(teacher).transformer.state_dict(),
                                               prefix="diffusion_model.")
    got = merged(native.patch_weights(path, fake_model(teacher)), teacher)
    assert max(float((got[k] - student[k]).abs().max()) for k in student) <= 1e-5
    full = native.student_weights(tmd_core.save_tmd(moved_student(teacher), tmp_path / "s.safetensors"),
                                  fake_model(teacher))
    assert set(full.weight_patches) == set(native.patch_weights(path, fake_model(teacher)).weight_patches)


@pytest.mark.parametrize("arch, words", [
    ({"dim": 64}, ["width 32 x 4 blocks", "width 64 x 4 blocks"]),
    ({"num_layers": 6}, ["width 32 x 4 blocks", "width 32 x 6 blocks"]),
    ({"text_dim": 4096}, ["(ffn 64, text 24)", "(ffn 64, text 4096)"]),
])  # fmt: skip
def test_a_patch_for_another_architecture_is_refused_naming_both(wan_host, native, tmp_path, arch, words):
    teacher = make_tiny_teacher(0)
    path, _ = patch_file(tmp_path, teacher, rank=2)
    with pytest.raises(native.InputError) as e:
        native.patch_weights(path, fake_model(teacher, **arch))
    assert all(w in str(e.value) for w in words) and "patch.safetensors was made for" in str(e.value)


def test_the_architecture_is_checked_before_the_tensors_are_read(wan_host, native, tmp_path, monkeypatch):
    teacher = make_tiny_teacher(0)
    path, _ = patch_file(tmp_path, teacher, rank=2)
    patch_file_mod = sys.modules[native.__name__.replace("nodes.native_patch", "tmd_core.patch_file")]
    monkeypatch.setattr(patch_file_mod, "load_patch", lambda p: pytest.fail("the tensors were read"))
    with pytest.raises(native.InputError, match="width 32 x 6 blocks"):
        native.patch_weights(path, fake_model(teacher, num_layers=6))


def test_corrupt_or_wrong_kind_files_are_refused_by_the_patch_readers(wan_host, native, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    errors = sys.modules[native.__name__.replace("nodes.native_patch", "tmd_core.errors")]
    teacher = make_tiny_teacher(0)
    path, _ = patch_file(tmp_path, teacher, rank=2)
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    b_key = next(k for k in tensors if k.endswith(".lora_B.weight"))
    save_file({k: v for k, v in tensors.items() if k != b_key}, str(tmp_path / "cut.safetensors"), metadata=meta)
    with pytest.raises(errors.CheckpointError, match="cut.safetensors: the LoRA of .* lacks lora_B"):
        native.patch_weights(tmp_path / "cut.safetensors", fake_model(teacher))
    (tmp_path / "garbage.safetensors").write_bytes(b"\x07" * 64)
    with pytest.raises(errors.CheckpointError, match="garbage.safetensors"):
        native.patch_weights(tmp_path / "garbage.safetensors", fake_model(teacher))
    with pytest.raises(errors.CheckpointError, match="student.safetensors is a full TMD student, not a TMD patch"):
        native.patch_weights(student_file(tmp_path, teacher), fake_model(teacher))


def test_the_node_takes_a_student_or_a_patch_and_says_which(wan_host, nodes, native, host, tmp_path, monkeypatch):
    import shutil

    teacher = make_tiny_teacher(0)
    path, patch = patch_file(tmp_path, teacher, rank=2)
    (host.models_dir / "tmd").mkdir(parents=True, exist_ok=True)
    shutil.copy(path, host.models_dir / "tmd" / "patch.safetensors")
    shutil.copy(student_file(tmp_path, teacher), host.models_dir / "tmd" / "student.safetensors")
    native_node = sys.modules[nodes.__name__ + ".native"]
    assert {"patch.safetensors", "student.safetensors"} <= set(native_node.tmd_choices())
    applied = []
    monkeypatch.setattr(native_node, "apply_tmd", lambda model, weights: applied.append(weights) or "tmd_model")
    out = run_node(nodes.TMDApplyToModel, model=fake_model(teacher), tmd_name="patch.safetensors")
    info = out.ui["tmd_info"][0]
    assert out.result == ("tmd_model",) and applied[0].source == "patch.safetensors"
    assert (info["source"], info["lora_rank"], info["kind"]) == ("patch", 2, "native")
    assert info["patched_weights"] == len(patch.lora) + len(patch.full) and info["head_blocks"] == 1
    info = run_node(nodes.TMDApplyToModel, model=fake_model(teacher), tmd_name="student.safetensors").ui["tmd_info"][0]
    assert info["source"] == "student" and "lora_rank" not in info and info["head_blocks"] == 2


def test_the_node_refuses_a_patch_for_another_architecture(wan_host, nodes, native, host, tmp_path):
    import shutil

    teacher = make_tiny_teacher(0)
    path, _ = patch_file(tmp_path, teacher, rank=2)
    (host.models_dir / "tmd").mkdir(parents=True, exist_ok=True)
    shutil.copy(path, host.models_dir / "tmd" / "patch.safetensors")
    with pytest.raises(native.InputError, match="patch.safetensors was made for a Wan2.1 of width 32 x 4 blocks .*"
                                                 "the MODEL is width 64 x 4 blocks"):
        run_node(nodes.TMDApplyToModel, model=fake_model(teacher, dim=64), tmd_name="patch.safetensors")


def test_a_patched_weight_the_model_lacks_or_shapes_otherwise_is_refused(wan_host, native, tmp_path):
    teacher = make_tiny_teacher(0)
    path, _ = patch_file(tmp_path, teacher, rank=2)
    model = fake_model(teacher)
    del model.model._sd["diffusion_model.blocks.0.self_attn.q.weight"]
    with pytest.raises(native.InputError, match=r"patch.safetensors: blocks.0.attn1.to_q.weight "
                                                r"\(diffusion_model.blocks.0.self_attn.q.weight\) is not a weight"):
        native.patch_weights(path, model)
    model = fake_model(teacher)
    model.model._sd["diffusion_model.blocks.0.norm3.weight"] = torch.zeros(7)
    with pytest.raises(native.InputError, match=r"its change of diffusion_model.blocks.0.norm3.weight does not fit "
                                                r"the MODEL's \(7,\)"):
        native.patch_weights(path, model)


def test_a_lora_only_patch_with_alpha_other_than_rank_is_merged_at_its_scale(wan_host, native, tmp_path):
    """As LoRA-mode distillation writes them (no whole differences), and rescaled by another tool (alpha = 2r): the
    weight patches merge W + (alpha / r) B @ A."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    teacher = make_tiny_teacher(0)
    path, patch = patch_file(tmp_path, teacher, rank=2)
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    kept = {k: (2 * v if k.endswith(".alpha") else v) for k, v in tensors.items()
            if not k.endswith((".diff", ".diff_b"))}
    save_file(kept, str(tmp_path / "lora_only.safetensors"), metadata=meta)
    weights = native.patch_weights(tmp_path / "lora_only.safetensors", fake_model(teacher))
    assert len(weights.weight_patches) == len(patch.lora)
    got = merged(weights, teacher)
    base = diffusers_to_original_state_dict(teacher.state_dict(), prefix="diffusion_model.")
    for dkey in patch.lora:
        k = "diffusion_model." + diffusers_key_to_original(dkey)
        want = base[k] + 2 * patch.delta(dkey).reshape(base[k].shape)
        torch.testing.assert_close(got[k], want, rtol=0, atol=1e-6)


def test_a_14b_patch_on_a_1_3b_model_is_refused_from_the_header(wan_host, native, tmp_path):
    """Issue 11's example, from the header alone: a patch whose base architecture is Wan2.1 14B (a tiny file with the
    14B header: nothing past the header is read) on a MODEL with Wan2.1 1.3B's sizes."""
    import json

    from bad_inputs import _rewrite_metadata

    from tmd_core.layouts import shipped_config

    teacher = make_tiny_teacher(0)
    path, patch = patch_file(tmp_path, teacher, rank=2)
    cfg = {**patch.tmd_config.to_dict(), "num_layers": 40, "head_blocks": 5}
    big = _rewrite_metadata(path, tmp_path / "tmd_14b.lora64.safetensors", tmd_config=json.dumps(cfg),
                            base_architecture=json.dumps(shipped_config("wan21_t2v_14b")))
    model = fake_model(teacher, dim=1536, num_layers=30, ffn_dim=8960, in_dim=16, out_dim=16, text_dim=4096,
                       freq_dim=256)
    with pytest.raises(native.InputError) as e:
        native.patch_weights(big, model)
    assert str(e.value) == ("tmd_14b.lora64.safetensors was made for a Wan2.1 of width 5120 x 40 blocks (ffn 13824, "
                            "text 4096), the MODEL is width 1536 x 30 blocks (ffn 8960, text 4096): connect the MODEL "
                            "of the teacher it was distilled from")
