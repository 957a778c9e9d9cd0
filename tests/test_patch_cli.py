"""`tmd extract-lora`, and a patch through `tmd info` and `tmd generate PATCH --teacher T` (docs/patches.md)."""


import torch
from helpers_wan import make_tiny_teacher, moved_student, save_diffusers_single
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import tmd_core as tmd
from tmd_core.cli import main


def _files(tmp_path):
    teacher = make_tiny_teacher(0)
    student = moved_student(teacher)
    g = torch.Generator().manual_seed(2)
    t = save_diffusers_single(teacher, tmp_path / "teacher.safetensors", sidecar=True)
    s = tmd.save_tmd(student, tmp_path / "student.safetensors")
    ctx = tmp_path / "ctx.safetensors"
    save_file({"context": torch.randn(1, 5, 24, generator=g)}, str(ctx))
    return t, s, ctx


def test_extract_lora_prints_errors_per_rank_and_the_patch_samples_like_the_student(tmp_path, capsys):
    t, s, ctx = _files(tmp_path)
    assert main(["extract-lora", str(s), "--teacher", str(t), "--rank", "16"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("rank") and lines[1].startswith("8 ") and lines[2].startswith("16 ")
    assert lines[3].startswith("stored") and "float32" in lines[3] and "student.lora16.safetensors" in lines[4]
    e8, e16 = float(lines[1].split()[1]), float(lines[2].split()[1])
    assert 1 > e8 > e16 > 0
    patch = tmp_path / "student.lora16.safetensors"
    with safe_open(str(patch), "pt") as f:
        prov = f.metadata()["provenance"]
    assert tmd.teacher_sha256(t) in prov and "student.safetensors" in prov
    assert main(["info", str(patch)]) == 0
    assert "a TMD patch: LoRA rank 16" in capsys.readouterr().out

    # full rank (32 for this model): `tmd generate PATCH --teacher T` gives the student's latents
    full = tmp_path / "full.safetensors"
    assert main(["extract-lora", str(s), "--teacher", str(t), "--rank", "32", "--out", str(full)]) == 0
    common = ["--context", str(ctx), "--latent-shape", "4,1,8,8", "--seed", "5"]
    assert main(["generate", str(s), *common, "--out", str(tmp_path / "a.safetensors")]) == 0
    assert main(["generate", str(full), "--teacher", str(t), *common, "--out", str(tmp_path / "b.safetensors")]) == 0
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    key = next(iter(a))
    assert (a[key] - b[key]).abs().max().item() <= 1e-4


def test_a_dmd2v_student_is_not_a_patch_teacher(tmp_path, capsys):
    t, s, ctx = _files(tmp_path)
    from safetensors.torch import load_file as lf

    dmd = tmp_path / "dmd.safetensors"
    save_file(lf(str(t)), str(dmd), metadata={"format": "wan-dmd"})
    (tmp_path / "dmd.config.json").write_text((tmp_path / "teacher.config.json").read_text())
    assert main(["extract-lora", str(s), "--teacher", str(dmd), "--rank", "4"]) == 1
    assert "--teacher: dmd.safetensors is a DMD2-v student, not a Wan teacher" in capsys.readouterr().err


def test_extract_lora_bf16_factors_halve_the_file(tmp_path, capsys):
    t, s, _ = _files(tmp_path)
    for dtype in ("fp32", "bf16"):
        assert main(["extract-lora", str(s), "--teacher", str(t), "--rank", "8", "--dtype", dtype,
                     "--out", str(tmp_path / f"{dtype}.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "cast to bfloat16" in out
    with safe_open(str(tmp_path / "bf16.safetensors"), "pt") as f:
        assert f.get_tensor("diffusion_model.blocks.0.self_attn.q.lora_A.weight").dtype == torch.bfloat16
        assert f.get_tensor("diffusion_model.blocks.0.self_attn.q.diff_b").dtype == torch.float32  # whole: fp32
