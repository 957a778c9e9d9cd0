"""TMD patches (docs/patches.md): extraction by truncated SVD, the file, merging onto a teacher, refusals."""

import copy
import json

import pytest
import torch
from helpers_wan import make_tiny_teacher, moved_student, save_diffusers_single
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import tmd_core as tmd
from tmd_core.errors import CheckpointError
from tmd_core.layouts import diffusers_to_original_state_dict, shipped_config
from tmd_core.patch import apply_patch, check_same_architecture, extract_patch_from_models, report_ranks
from tmd_core.patch_file import load_patch, load_patched, read_patch_info, save_patch

FULL_RANK = 32  # the tiny Wan's largest min(out, in): it is 32 wide


@pytest.fixture(scope="module")
def pair():
    teacher = make_tiny_teacher(0)
    return teacher, moved_student(teacher)


def _sample(model):
    noise = tmd.make_noise((1, 4, 1, 8, 8), seed=3)
    ctx = torch.randn(1, 5, 24, generator=torch.Generator().manual_seed(4))
    return tmd.sample_tmd(model, noise, ctx, tmd.TMDSchedule(outer_steps=2, inner_steps=2))


def test_full_rank_patch_rebuilds_themoved_student(pair, tmp_path):
    teacher, student = pair
    patch = extract_patch_from_models(student, teacher, FULL_RANK, dtype=torch.float32)
    assert patch.errors[-1]["rank"] == "stored" and patch.errors[-1]["relative"] <= 1e-5
    path = save_patch(patch, tmp_path / "p.safetensors")
    rebuilt = apply_patch(copy.deepcopy(teacher), load_patch(path))
    want, got = student.state_dict(), rebuilt.state_dict()
    assert set(want) == set(got)
    assert max((want[k] - got[k]).abs().max().item() for k in want) <= 1e-5
    assert (_sample(rebuilt) - _sample(student)).abs().max().item() <= 1e-4


def test_file_round_trip_keeps_every_tensor_and_setting(pair, tmp_path):
    teacher, student = pair
    patch = extract_patch_from_models(student, teacher, 4, provenance={"teacher": "t.safetensors"})
    back = load_patch(save_patch(patch, tmp_path / "p.safetensors"))
    assert back.rank == 4 and back.tmd_config == patch.tmd_config and back.base_config == patch.base_config
    assert back.errors == patch.errors and back.provenance["teacher"] == "t.safetensors"
    assert set(back.lora) == set(patch.lora) and set(back.full) == set(patch.full) and set(back.extra) == set(patch.extra)
    for k, (a, b) in patch.lora.items():
        assert torch.equal(back.lora[k][0], a) and torch.equal(back.lora[k][1], b)
    for k, v in patch.full.items():
        assert torch.equal(back.full[k], v)
    for k, v in patch.extra.items():
        assert torch.equal(back.extra[k], v)


def test_error_falls_with_rank_and_is_what_the_factors_leave(pair):
    teacher, student = pair
    patch = extract_patch_from_models(student, teacher, FULL_RANK, dtype=torch.float32)
    rows = [e for e in patch.errors if e["rank"] != "stored"]
    assert [e["rank"] for e in rows] == report_ranks(FULL_RANK) == [8, 16, 32]
    errors = [e["relative"] for e in rows]
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 1e-6 < errors[0]
    # the reported rank-8 figure is the measured ‖ΔW − ΔW_8‖ / ‖ΔW‖ of a rank-8 extraction
    p8 = extract_patch_from_models(student, teacher, 8, dtype=torch.float32)
    sd_s, sd_t = student.state_dict(), teacher.state_dict()
    num = den = 0.0
    worst = 0.0
    for k in p8.lora:
        delta = (sd_s["transformer." + k] - sd_t[k]).flatten(1).double()
        res = (delta - p8.delta(k).double()).square().sum().item()
        num, den = num + res, den + delta.square().sum().item()
        worst = max(worst, (res / delta.square().sum().item()) ** 0.5)
    assert p8.errors[-1]["relative"] == pytest.approx((num / den) ** 0.5, rel=1e-4)
    assert rows[0]["relative"] == pytest.approx((num / den) ** 0.5, rel=1e-4)
    assert rows[0]["max_layer"] == pytest.approx(worst, rel=1e-4)


def test_large_matrices_transposed_and_randomized_svd_agree_with_the_exact_one(monkeypatch):
    """Past SVD_FP64_MAX elements: float32, a wide matrix decomposed as its transpose, randomized for small ranks."""
    import tmd_core.patch as patch_mod

    g = torch.Generator().manual_seed(0)
    mat = torch.randn(40, 6, generator=g) @ torch.randn(6, 100, generator=g) + 0.01 * torch.randn(40, 100, generator=g)
    exact = torch.linalg.svdvals(mat.double())
    monkeypatch.setattr(patch_mod, "SVD_FP64_MAX", 0)
    for rank in (4, 30):  # 4: randomized (4 * 4 < 40); 30: exact float32
        u, s, vh = patch_mod._svd(mat, rank)
        assert u.shape[0] == 40 and vh.shape[1] == 100 and s.dtype == torch.float32
        assert torch.allclose(s[:rank].double(), exact[:rank], rtol=1e-3)
        approx = (u[:, :rank] * s[:rank]) @ vh[:rank]
        best = exact[rank:].square().sum().sqrt()
        assert (mat - approx).norm() <= 1.01 * best + 1e-5


def test_what_is_lora_and_what_is_whole(pair):
    teacher, student = pair
    patch = extract_patch_from_models(student, teacher, 2)
    assert "blocks.0.attn1.to_q.weight" in patch.lora and "patch_embedding.weight" in patch.lora  # the conv, flattened
    assert {"blocks.0.attn1.to_q.bias", "blocks.0.norm2.weight", "blocks.0.scale_shift_table",
            "scale_shift_table"} <= set(patch.full)
    assert patch.lora["blocks.0.ffn.net.0.proj.weight"][0].shape == (2, 32)  # A [r, in]
    assert patch.lora["blocks.0.ffn.net.0.proj.weight"][1].shape == (64, 2)  # B [out, r]
    assert set(patch.extra) == {k for k in student.state_dict() if k.startswith(("fusion.", "emb_gap."))}


def test_unchanged_tensors_are_left_out(pair):
    teacher, _ = pair
    student = moved_student(teacher)
    with torch.no_grad():  # a student whose backbone blocks were frozen
        student.transformer.blocks[0].load_state_dict(teacher.blocks[0].state_dict())
    patch = extract_patch_from_models(student, teacher, FULL_RANK, dtype=torch.float32)
    assert not [k for k in [*patch.lora, *patch.full] if k.startswith("blocks.0.")]
    assert (_sample(apply_patch(copy.deepcopy(teacher), patch)) - _sample(student)).abs().max() <= 1e-4


def test_file_keys_are_comfyui_lora_keys_of_the_wan_model(pair, tmp_path):
    """Every tensor outside tmd.* names a weight of ComfyUI's WanModel (original keys under diffusion_model.) in a
    form ComfyUI's LoRA loader reads, and alpha / r = 1 with ΔW = lora_B @ lora_A."""
    teacher, student = pair
    path = save_patch(extract_patch_from_models(student, teacher, 4), tmp_path / "p.safetensors")
    comfy_keys = set(diffusers_to_original_state_dict(teacher.state_dict(), prefix="diffusion_model."))
    sd = load_file(str(path))
    for k in sd:
        if k.startswith("tmd."):
            assert k.startswith(("tmd.fusion.", "tmd.emb_gap.")), k
        elif k.endswith((".lora_A.weight", ".lora_B.weight", ".alpha")):
            module = k.rsplit(".lora_", 1)[0] if ".lora_" in k else k.removesuffix(".alpha")
            assert module + ".weight" in comfy_keys, k
        elif k.endswith(".diff_b"):
            assert k.removesuffix(".diff_b") + ".bias" in comfy_keys, k
        else:
            assert k.endswith(".diff") and ({k[:-5] + ".weight", k[:-5]} & comfy_keys), k
    q = "diffusion_model.blocks.0.self_attn.q"
    assert sd[q + ".alpha"].item() == sd[q + ".lora_A.weight"].shape[0] == 4
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "tmd/1" and meta["kind"] == "patch"
    assert json.loads(meta["base_architecture"])["num_layers"] == 4 and json.loads(meta["lora"])["rank"] == 4


def test_patch_file_through_teacher_file_and_header_readers(pair, tmp_path):
    teacher, student = pair
    t_path = save_diffusers_single(teacher, tmp_path / "teacher.safetensors", sidecar=True)
    path = save_patch(extract_patch_from_models(student, teacher, FULL_RANK, dtype=torch.float32),
                      tmp_path / "p.safetensors")
    assert tmd.detect_checkpoint_kind(path) == "tmd-patch"
    info = tmd.describe_checkpoint(path)
    assert info == read_patch_info(path) and info["head_blocks"] == 1 and info["lora"]["rank"] == FULL_RANK
    model = load_patched(path, t_path)
    assert (_sample(model) - _sample(student)).abs().max().item() <= 1e-4
    with pytest.raises(CheckpointError, match="is a TMD patch .* not a full student"):
        tmd.load_tmd(path)
    with pytest.raises(CheckpointError, match="is a TMD patch, not a plain Wan teacher"):
        tmd.load_teacher(path)


@pytest.mark.parametrize("change", [{"num_layers": 3}, {"in_channels": 8, "out_channels": 8}, {"text_dim": 16}])
def test_a_patch_is_refused_by_a_teacher_of_another_architecture(pair, tmp_path, change):
    teacher, student = pair
    patch = load_patch(save_patch(extract_patch_from_models(student, teacher, 4), tmp_path / "p.safetensors"))
    other = make_tiny_teacher(5, **change)
    with pytest.raises(CheckpointError) as e:
        apply_patch(other, patch, source="p.safetensors", teacher_name="other.safetensors")
    msg = str(e.value)
    assert "p.safetensors was made for a Wan model (4 layers, width 32" in msg and "other.safetensors is a Wan model" in msg
    field = next(iter(change))
    assert f"{field} {patch.base_config[field]} vs {change[field]}" in msg
    t_path = save_diffusers_single(other, tmp_path / "other.safetensors", sidecar=True)
    with pytest.raises(CheckpointError, match="a patch only fits the architecture"):  # from the headers, before loading
        load_patched(tmp_path / "p.safetensors", t_path)


def test_a_14b_patch_on_a_1p3b_teacher_names_both():
    with pytest.raises(CheckpointError) as e:
        check_same_architecture(shipped_config("wan21_t2v_14b"), shipped_config("wan21_t2v_1.3b"),
                                "tmd_14b.lora64.safetensors", "wan2.1_t2v_1.3B_bf16.safetensors")
    msg = str(e.value)
    assert "tmd_14b.lora64.safetensors was made for Wan2.1 T2V 14B (40 layers, width 5120" in msg
    assert "wan2.1_t2v_1.3B_bf16.safetensors is Wan2.1 T2V 1.3B (30 layers, width 1536" in msg
    assert "num_layers 40 vs 30" in msg


def _rewrite(src, dst, drop=(), tensors=None, **meta_changes):
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    meta.update({k: v for k, v in meta_changes.items() if v is not None})
    for k in [k for k, v in meta_changes.items() if v is None]:
        meta.pop(k)
    sd = {k: v for k, v in load_file(str(src)).items() if k not in drop}
    sd.update(tensors or {})
    save_file(sd, str(dst), metadata=meta)
    return dst


@pytest.fixture(scope="module")
def patch_file(pair, tmp_path_factory):
    teacher, student = pair
    return save_patch(extract_patch_from_models(student, teacher, 4), tmp_path_factory.mktemp("p") / "p.safetensors")


Q = "diffusion_model.blocks.0.self_attn.q"
CORRUPT = {
    "truncated": (lambda src, dst: dst.write_bytes(src.read_bytes()[:-100]) and dst, "truncated or corrupt"),
    "no-lora_B": (lambda src, dst: _rewrite(src, dst, drop=(Q + ".lora_B.weight",)), "lacks lora_B"),
    "bad-A-shape": (lambda src, dst: _rewrite(src, dst, tensors={Q + ".lora_A.weight": torch.zeros(4, 31)}),
                    "needs A [r, 32] and B [32, r]"),
    "nan": (lambda src, dst: _rewrite(src, dst, tensors={Q + ".lora_A.weight": torch.full((4, 32), float("nan"))}),
            "holds NaN or inf"),
    "stray-key": (lambda src, dst: _rewrite(src, dst, tensors={"diffusion_model.blocks.9.self_attn.q.diff_b":
                                                               torch.zeros(32)}), "not part of a patch"),
    "bad-json": (lambda src, dst: _rewrite(src, dst, base_architecture='{"num_layers": 4,'), "not valid JSON"),
    "no-base": (lambda src, dst: _rewrite(src, dst, base_architecture=None), "has no base_architecture metadata"),
    "no-kind": (lambda src, dst: _rewrite(src, dst, kind=None), "is a full TMD student, not a TMD patch"),
    "layers": (lambda src, dst: _rewrite(src, dst, base_architecture=json.dumps(
        {**json.loads(safe_open(str(src), "pt").metadata()["base_architecture"]), "num_layers": 5})),
        "layer counts disagree"),
    "format-2": (lambda src, dst: _rewrite(src, dst, format="tmd/2"), "update the pack"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_a_corrupt_patch_is_refused_by_name(patch_file, tmp_path, case):
    make, fragment = CORRUPT[case]
    bad = make(patch_file, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_patch(bad)
    assert fragment in str(e.value) and "bad.safetensors" in str(e.value)


def test_a_student_or_a_teacher_is_not_a_patch(pair, tmp_path):
    teacher, student = pair
    s = tmd.save_tmd(student, tmp_path / "s.safetensors")
    with pytest.raises(CheckpointError, match="s.safetensors is a full TMD student, not a TMD patch"):
        load_patch(s)
    t = save_diffusers_single(teacher, tmp_path / "t.safetensors", sidecar=True)
    with pytest.raises(CheckpointError, match="t.safetensors is not a TMD patch"):
        load_patch(t)
