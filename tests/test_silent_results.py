"""The inputs that used to give a wrong result silently (exit 0) now end in an error, and nothing is saved.

Each test here failed before the validation layer: a step count of 0 meant "the trained value", a head of 0 blocks
sampled the teacher, NaN weights/contexts/guidance were written as latents, `tmd info` printed a negative
backbone, seeds 2**63 and 2**64 drew seed 0's noise, and the installed toy student named another teacher file.
"""

import json
import math

import pytest
import torch
from helpers_wan import make_tiny_teacher, save_diffusers_single, tiny_inputs
from safetensors.torch import load_file, save_file

import tmd_core
from tmd_core.cli import main
from tmd_core.errors import InputError, NonFiniteError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("silent")
    teacher = make_tiny_teacher(0)
    student = tmd_core.TMDModel.from_teacher(teacher, head_blocks=1)
    paths = {"root": root, "teacher": save_diffusers_single(teacher, root / "teacher.safetensors", sidecar=True),
             "student": tmd_core.save_tmd(student, root / "student.safetensors")}
    _, ctx = tiny_inputs(teacher)
    save_file({"context": ctx, "negative_context": torch.zeros(1, 2, 24)}, str(root / "ctx.safetensors"))
    save_file({"context": torch.full_like(ctx, float("nan"))}, str(root / "nan_ctx.safetensors"))
    paths["ctx"], paths["nan_ctx"] = root / "ctx.safetensors", root / "nan_ctx.safetensors"
    return paths


def generate(files, ckpt, *extra, ctx="ctx"):
    out = files["root"] / "out.safetensors"
    out.unlink(missing_ok=True)
    rc = main(["generate", str(files[ckpt] if ckpt in files else ckpt), "--context", str(files[ctx]),
               "--latent-shape", "4,1,8,8", "--out", str(out), *extra])
    return rc, out


def test_zero_outer_or_inner_steps_is_an_error_not_the_trained_value(files, capsys):
    for flag in ("--outer-steps", "--inner-steps"):
        rc, out = generate(files, "student", flag, "0")
        assert rc == 1 and not out.exists()
        assert f"{flag} must be an integer from 1 to 1000, got 0" in capsys.readouterr().err


def test_zero_head_blocks_on_a_teacher_is_an_error_not_the_teacher(files, capsys):
    rc, out = generate(files, "teacher", "--head-blocks", "0")
    assert rc == 1 and not out.exists()
    assert "--head-blocks must be an integer from 1 to 3, got 0" in capsys.readouterr().err


def test_nan_weights_are_an_error_naming_the_transition_and_the_weight(files, capsys):
    student = tmd_core.load_tmd(files["student"])
    with torch.no_grad():
        student.transformer.blocks[3].ffn.net[2].weight[0, 0] = float("nan")
    path = tmd_core.save_tmd(student, files["root"] / "nan_student.safetensors")
    rc, out = generate(files, path)
    err = capsys.readouterr().err
    assert rc == 1 and not out.exists()
    assert "the sample became NaN/inf in transition 1 of 2" in err
    assert "the weight model.transformer.blocks.3.ffn.net.2.weight holds NaN/inf" in err and "Nothing was saved" in err
    with pytest.raises(NonFiniteError, match="in transition 1 of 1"):  # the library says the same
        tmd_core.sample_tmd(student, tmd_core.make_noise((1, 4, 1, 8, 8), 0), load_file(str(files["ctx"]))["context"],
                            tmd_core.TMDSchedule(1, 1))


def test_random_bytes_inside_a_weight_file_are_an_error_not_nan_latents(files, capsys):
    data = bytearray(files["teacher"].read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    g = torch.Generator().manual_seed(0)
    n = min(200_000, len(data) - header)  # 200 KB of random bytes in the tensor data
    data[header: header + n] = torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).numpy().tobytes()
    broken = files["root"] / "random_bytes.safetensors"
    broken.write_bytes(bytes(data))
    (files["root"] / "random_bytes.config.json").write_bytes((files["root"] / "teacher.config.json").read_bytes())
    rc, out = generate(files, broken, "--teacher-steps", "2", "--guidance", "1")
    err = capsys.readouterr().err
    assert rc == 1 and not out.exists()
    assert "the sample became NaN/inf at teacher step 1 of 2" in err and "holds NaN/inf" in err


def test_a_nan_context_is_refused_before_loading(files, capsys):
    rc, out = generate(files, "student", ctx="nan_ctx")
    assert rc == 1 and not out.exists()
    assert "--context: 'context' holds 168 NaN/inf values of 168" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_guidance_is_refused(files, capsys, value):
    rc, out = generate(files, "teacher", f"--guidance={value}", "--teacher-steps", "2")
    assert rc == 1 and not out.exists()
    assert "--guidance must be a finite number" in capsys.readouterr().err
    with pytest.raises(InputError, match="guidance_scale must be a finite number"):
        tmd_core.sample_teacher(tmd_core.load_teacher(files["teacher"]), tmd_core.make_noise((1, 4, 1, 8, 8), 0),
                                load_file(str(files["ctx"]))["context"], steps=2, guidance_scale=float(value),
                                negative_context=torch.zeros(1, 2, 24))


def test_info_refuses_a_head_larger_than_the_model_instead_of_a_negative_backbone(files, capsys):
    from safetensors import safe_open

    with safe_open(str(files["student"]), "pt") as f:
        meta = dict(f.metadata())
    cfg = json.loads(meta["tmd_config"])
    meta["tmd_config"] = json.dumps({**cfg, "head_blocks": 99})
    path = files["root"] / "head99.safetensors"
    save_file(load_file(str(files["student"])), str(path), metadata=meta)
    assert main(["info", str(path)]) == 1
    captured = capsys.readouterr()
    assert "backbone -" not in captured.out
    assert "its tmd_config metadata is impossible" in captured.err and "head_blocks must be between 1 and 3" in captured.err


@pytest.mark.parametrize("seed", [2**63, 2**64, 2**32])
def test_seeds_that_would_repeat_seed_0s_noise_are_refused(files, capsys, seed):
    rc, out = generate(files, "student", "--seed", str(seed))
    assert rc == 1 and not out.exists()
    assert "--seed must be an integer from 0 to 4294967295" in capsys.readouterr().err


def test_make_noise_refuses_seeds_it_would_alias():
    with pytest.raises(InputError, match="seed must be an integer from 0 to 2\\*\\*64-1"):
        tmd_core.make_noise((2,), seed=2**64)
    with pytest.raises(InputError):
        tmd_core.make_noise((2,), seed=-1)
    assert torch.equal(tmd_core.make_noise((4,), 2**32 - 1), tmd_core.make_noise((4,), 2**32 - 1))


def test_installed_student_names_the_installed_teacher(tmp_path, monkeypatch):
    """install_assets casts the teacher to bf16: the student's teacher_sha256 must be that file's digest."""
    from tmd_core.toy import retrain
    from tmd_core.toy.autoencoder import ToyVAE, VAEConfig, save_vae

    monkeypatch.setattr(retrain, "ASSETS", tmp_path / "assets")  # never the package's own assets

    teacher = make_tiny_teacher(0, in_channels=16, out_channels=16, text_dim=32, num_layers=2, patch_size=[1, 1, 1])
    run = tmp_path / "run"
    paths = {"toy_vae": save_vae(ToyVAE(VAEConfig(width=16)).eval(), run / "vae.safetensors"),
             "toy_teacher": save_diffusers_single(teacher, run / "teacher.safetensors", sidecar=True)}
    fp32_sha = tmd_core.teacher_sha256(paths["toy_teacher"])
    student = tmd_core.TMDModel.from_teacher(teacher, head_blocks=1)
    paths["toy_tmd"] = tmd_core.save_tmd(student, run / "tmd.safetensors",
                                         provenance={"teacher": "teacher.safetensors", "teacher_sha256": fp32_sha})
    retrain.install_assets(paths)
    installed = {name: tmp_path / "assets" / f"{name}.safetensors" for name in paths}
    prov = tmd_core.read_tmd_info(installed["toy_tmd"])["provenance"]
    installed_sha = tmd_core.teacher_sha256(installed["toy_teacher"])
    assert installed_sha != fp32_sha  # the shipped teacher is the bf16 copy
    assert prov["teacher_sha256"] == installed_sha and prov["teacher"] == "toy_teacher.safetensors"
    assert prov["training_teacher_sha256"] == fp32_sha and "bf16" in prov["teacher_sha256_of"]
    assert load_file(str(installed["toy_teacher"]))["patch_embedding.weight"].dtype == torch.bfloat16
    assert math.isclose(tmd_core.describe_checkpoint(installed["toy_teacher"])["num_layers"], 2)
