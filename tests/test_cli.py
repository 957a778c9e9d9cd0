"""The `tmd` command line: info, generate (also in Wan2.1 VAE space), demo, its verbs and its error reporting."""

import json

import pytest
import torch
from helpers_wan import make_tiny_teacher, save_original_layout, tiny_inputs
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tmd_core import TMDModel, TMDSchedule, load_tmd, make_noise, sample_teacher, sample_tmd, save_tmd
from tmd_core.cli import main
from tmd_core.worlds import WAN21_LATENT_MEAN, WAN21_LATENT_STD


def test_info_prints_split_and_provenance(tmp_path, capsys):
    student = TMDModel.from_teacher(make_tiny_teacher(seed=1), head_blocks=1, outer_steps=1, inner_steps=4)
    path = save_tmd(student, tmp_path / "s.safetensors", provenance={"stages": "stage1+stage2"})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tmd/1" in out and "flow head H = 1" in out and "outer_steps 1 x inner_steps 4" in out
    assert "stages=stage1+stage2" in out
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["head_blocks"] == 1


def test_generate_with_a_tmd_checkpoint_equals_the_library(tmp_path, capsys):
    teacher = make_tiny_teacher(seed=2)
    student = TMDModel.from_teacher(teacher, head_blocks=2)
    with torch.no_grad():
        for p in student.fusion.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = save_tmd(student, tmp_path / "s.safetensors")
    _, ctx = tiny_inputs(teacher)
    save_file({"context": ctx}, str(tmp_path / "ctx.safetensors"))
    out = tmp_path / "lat.safetensors"
    rc = main(["generate", str(ckpt), "--context", str(tmp_path / "ctx.safetensors"), "--latent-shape", "4,3,8,8",
               "--seed", "3", "--outer-steps", "2", "--inner-steps", "3", "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["effective_nfe"] == round(student.effective_nfe(2, 3), 4)
    expected = sample_tmd(student, make_noise((1, 4, 3, 8, 8), seed=3), ctx, TMDSchedule(2, 3))
    assert torch.equal(load_file(str(out))["latents"], expected)


def test_generate_with_a_comfyui_teacher_file(tmp_path, capsys):
    teacher = make_tiny_teacher(seed=4)
    path = save_original_layout(teacher, tmp_path / "wan.safetensors", prefix="model.diffusion_model.", sidecar=True)
    _, ctx = tiny_inputs(teacher, seed=1)
    _, neg = tiny_inputs(teacher, seed=2)
    save_file({"context": ctx, "negative_context": neg}, str(tmp_path / "ctx.safetensors"))
    out = tmp_path / "lat.safetensors"
    assert main(["generate", str(path), "--context", str(tmp_path / "ctx.safetensors"), "--latent-shape", "4,3,8,8",
                 "--teacher-steps", "3", "--guidance", "2.0", "--out", str(out)]) == 0
    assert "teacher 3 steps, CFG 2" in capsys.readouterr().out
    expected = sample_teacher(teacher, make_noise((1, 4, 3, 8, 8), seed=0), ctx, steps=3, guidance_scale=2.0,
                              negative_context=neg)
    assert (load_file(str(out))["latents"] - expected).abs().max() <= 1e-5


def test_generate_writes_wan21_latents_in_vae_space(tmp_path, capsys):
    teacher = make_tiny_teacher(seed=5, in_channels=16, out_channels=16)  # Wan2.1's 16 channels, 24-wide text
    ckpt = save_tmd(TMDModel.from_teacher(teacher, head_blocks=1), tmp_path / "s.safetensors")
    _, ctx = tiny_inputs(teacher)
    save_file({"context": ctx}, str(tmp_path / "ctx.safetensors"))
    args = ["generate", str(ckpt), "--context", str(tmp_path / "ctx.safetensors"), "--latent-shape", "16,3,8,8",
            "--outer-steps", "1", "--inner-steps", "1", "--json"]
    assert main([*args, "--out", str(tmp_path / "x.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["latent_space"] == "normalised"
    assert main([*args, "--vae-space", "--out", str(tmp_path / "z.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["latent_space"] == "wan2.1-vae"
    x, z = (load_file(str(tmp_path / f"{n}.safetensors"))["latents"] for n in "xz")
    mean = torch.tensor(WAN21_LATENT_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21_LATENT_STD).view(1, 16, 1, 1, 1)
    assert torch.equal(z, x * std + mean)
    with safe_open(str(tmp_path / "z.safetensors"), framework="pt") as f:
        assert f.metadata() == {"latent_space": "wan2.1-vae"}


def test_vae_space_is_refused_for_a_model_that_is_not_wan21(tmp_path, capsys):
    teacher = make_tiny_teacher(seed=2)  # 4 latent channels
    ckpt = save_tmd(TMDModel.from_teacher(teacher, head_blocks=1), tmp_path / "s.safetensors")
    _, ctx = tiny_inputs(teacher)
    save_file({"context": ctx}, str(tmp_path / "ctx.safetensors"))
    assert main(["generate", str(ckpt), "--context", str(tmp_path / "ctx.safetensors"), "--latent-shape", "4,3,8,8",
                 "--vae-space", "--out", str(tmp_path / "z.safetensors")]) == 1
    assert "--vae-space de-normalises Wan2.1 latents; this model has 4 latent channels" in capsys.readouterr().err
    assert not (tmp_path / "z.safetensors").exists()


def test_errors_are_reported_not_raised(tmp_path, capsys):
    save_file({"ctx": torch.zeros(1, 2, 3)}, str(tmp_path / "ctx.safetensors"))
    assert main(["generate", str(tmp_path / "nope.safetensors"), "--context", str(tmp_path / "ctx.safetensors")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    ckpt = save_tmd(TMDModel.from_teacher(make_tiny_teacher(seed=1), head_blocks=1), tmp_path / "s.safetensors")
    assert main(["generate", str(ckpt), "--context", str(tmp_path / "ctx.safetensors")]) == 1
    assert "no 'context' tensor" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope.safetensors")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_every_listed_verb_exists(capsys):
    from tmd_core.cli import build_parser

    verbs = build_parser()._subparsers._group_actions[0].choices
    assert sorted(verbs) == ["comfy-run", "demo", "distill", "eval", "extract-lora", "generate", "info", "make-data", "toy"]
    for verb in verbs:
        with pytest.raises(SystemExit) as stop:
            main([verb, "--help"])
        assert stop.value.code == 0 and f"usage: tmd {verb}" in capsys.readouterr().out


def test_random_demo_reports_effective_nfe(capsys):
    assert main(["demo", "--random", "--layers", "4", "--head-blocks", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["effective_nfe"] == round(2 * (1 + 1 / 4), 3) and res["finite"]


def _toy_world(tmp_path):
    from tmd_core.toy.autoencoder import ToyVAE, VAEConfig, save_vae

    teacher = make_tiny_teacher(3, in_channels=16, out_channels=16, text_dim=32, num_layers=2, patch_size=[1, 1, 1])
    student = save_tmd(TMDModel.from_teacher(teacher, head_blocks=1), tmp_path / "toy_student.safetensors")
    torch.manual_seed(0)
    vae = save_vae(ToyVAE(VAEConfig(width=16)).eval(), tmp_path / "toy_vae.safetensors")
    return teacher, student, vae


def test_generate_on_a_toy_student_takes_a_prompt_and_writes_a_video(tmp_path, capsys):
    import imageio.v2 as imageio

    from tmd_core.toy.text import ToyTextEncoder

    _, student, vae = _toy_world(tmp_path)
    out = tmp_path / "new" / "folder" / "clip.safetensors"  # missing folders are created
    args = ["generate", str(student), "--prompt", "a red circle moving left fast", "--prompt", "a blue square",
            "--vae", str(vae), "--seed", "5", "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == [str(out), str(out.with_suffix(".mp4"))]
    assert set(summary) >= {"load_seconds", "sample_seconds"} and "seconds" not in summary
    ctx = ToyTextEncoder().encode(["a red circle moving left fast", "a blue square"])
    expected = sample_tmd(load_tmd(student), make_noise((2, 16, 2, 4, 4), seed=5), ctx, TMDSchedule(2, 2))
    assert torch.equal(load_file(str(out))["latents"], expected)
    frames = imageio.mimread(str(out.with_suffix(".mp4")), format="FFMPEG")
    assert len(frames) == 8 and frames[0].ndim == 3  # one 8-frame grid video, viewable
    assert main(args) == 1  # the files exist now
    assert "--out:" in (err := capsys.readouterr().err) and "already exists: pass --force" in err
    assert main([*args, "--force"]) == 0


def test_generate_dry_run_checks_without_loading(tmp_path, capsys, monkeypatch):
    import tmd_core.checkpoint as ck

    _, student, vae = _toy_world(tmp_path)
    monkeypatch.setattr(ck, "load_tmd", lambda *a, **k: pytest.fail("--dry-run loaded the model"))
    out = tmp_path / "x.safetensors"
    assert main(["generate", str(student), "--prompt", "a red circle", "--vae", str(vae), "--out", str(out),
                 "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "plan: TMD student" in text and "# inputs ok" in text and not out.exists()


def test_every_option_of_every_verb_has_help():
    import argparse

    from tmd_core.cli import build_parser

    def parsers(p, name="tmd"):
        yield name, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    missing = [f"{name} {a.option_strings[-1]}" for name, p in parsers(build_parser()) for a in p._actions
               if a.option_strings and not a.help]
    assert not missing, missing


def test_comfy_run_help_names_workflows_that_exist(capsys):
    from pathlib import Path

    from tmd_core.cli.comfy_run import EPILOG

    repo = Path(__file__).resolve().parents[1]
    named = [w for w in EPILOG.split() if w.startswith("workflows/")]
    assert named and all((repo / w).is_file() for w in named), named


@pytest.mark.slow
def test_toy_distill_is_one_command(tmp_path, capsys):
    from helpers_wan import save_diffusers_single

    teacher, _, _ = _toy_world(tmp_path)
    path = save_diffusers_single(teacher, tmp_path / "toy_teacher.safetensors", sidecar=True)
    run = tmp_path / "quick"
    args = ["toy", "distill", "--teacher", str(path), "--run-dir", str(run), "--prompts", "2", "--samples-per-prompt",
            "1", "--teacher-steps", "2", "--stage1-iterations", "2", "--stage2-iterations", "2", "--batch-size", "2",
            "--head-blocks", "1"]
    assert main(args) == 0
    assert f"toy distill: wrote {run / 'toy_quick.safetensors'}" in capsys.readouterr().out
    info = load_tmd(run / "toy_quick.safetensors").tmd_config
    assert info.head_blocks == 1 and info.schedule.outer_shift == 3.0  # the toy preset's settings
    assert main(args) == 1 and "already holds a run" in capsys.readouterr().err


def test_info_describes_teachers_and_dmd2v_students(tmp_path, capsys):
    from helpers_wan import save_diffusers_single

    teacher = make_tiny_teacher(seed=1)
    comfy = save_original_layout(teacher, tmp_path / "wan.safetensors", prefix="model.diffusion_model.", sidecar=True)
    assert main(["info", str(comfy)]) == 0
    out = capsys.readouterr().out
    assert "kind        a Wan teacher (wan-original layout)" in out and "dim 32, 4 layers, text_dim 24" in out
    dmd = save_diffusers_single(teacher, tmp_path / "dmd.safetensors", sidecar=True,
                                metadata={"format": "wan-dmd", "provenance": json.dumps({"stages": ["stage2"]})})
    assert main(["info", str(dmd), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "wan-dmd" and info["num_layers"] == 4 and info["provenance"] == {"stages": ["stage2"]}
    assert main(["info", str(dmd)]) == 0
    assert "a DMD2-v student" in capsys.readouterr().out


def test_load_tmd_takes_dtype_names(tmp_path):
    path = save_tmd(TMDModel.from_teacher(make_tiny_teacher(seed=1), head_blocks=1), tmp_path / "s.safetensors")
    assert next(load_tmd(path, dtype="bf16").parameters()).dtype == torch.bfloat16
