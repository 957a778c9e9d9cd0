"""`tmd eval --toy`: the toy world in the same report format, scored by ToyBench through tmd_core/toy/evaluate.py."""

import json

import pytest
import torch
from helpers_wan import make_tiny_teacher, save_diffusers_single

from tmd_core import TMDModel, load_teacher, load_tmd, save_tmd, teacher_sha256
from tmd_core.cli import main
from tmd_core.eval.settings import parse_dmd, parse_teacher, parse_tmd
from tmd_core.eval.toy import DEFAULT_DMD, DEFAULT_TEACHER, DEFAULT_TMD, methods
from tmd_core.toy.autoencoder import ToyVAE, VAEConfig, save_vae
from tmd_core.toy.bench import benchmark_prompts
from tmd_core.toy.evaluate import dmd_methods, run_bench, teacher_methods, tmd_methods


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny random toy world: teacher (16 latent channels, 32-wide toy text), TMD and DMD2-v students, toy VAE."""
    d = tmp_path_factory.mktemp("toy")
    teacher = make_tiny_teacher(seed=3, in_channels=16, out_channels=16, text_dim=32)
    t = save_diffusers_single(teacher, d / "teacher.safetensors", sidecar=True)
    prov = {"teacher": t.name, "teacher_sha256": teacher_sha256(t)}
    tmd = save_tmd(TMDModel.from_teacher(teacher, head_blocks=2), d / "toy_tmd.safetensors", provenance=prov)
    dmd = save_diffusers_single(make_tiny_teacher(seed=4, in_channels=16, out_channels=16, text_dim=32),
                                d / "toy_dmd2v.safetensors", sidecar=True,
                                metadata={"format": "wan-dmd", "provenance": json.dumps(prov)})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = save_vae(ToyVAE(VAEConfig(width=8)).eval(), d / "vae.safetensors")
    return {"teacher": t, "tmd": tmd, "dmd": dmd, "vae": vae}


def test_default_rows_are_tmd_toy_bench_rows(toy):
    """With its defaults `tmd eval --toy` runs exactly the methods of `tmd toy bench` (names, NFE, order)."""
    teacher, student, dmd = load_teacher(toy["teacher"]), load_tmd(toy["tmd"]), load_teacher(toy["dmd"])
    ours = methods(teacher, [("toy_tmd", "tmd", student), ("toy_dmd2v", "plain", dmd)], parse_teacher(DEFAULT_TEACHER),
                   parse_tmd(DEFAULT_TMD), parse_dmd(DEFAULT_DMD))
    bench = teacher_methods(teacher) + tmd_methods(student) + dmd_methods(dmd)
    key = sorted((m.name, m.family, m.nfe) for m in bench)
    assert sorted((m.name, m.family, m.nfe) for m in ours) == key


def test_toy_report_equals_run_bench_and_resumes(toy, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["eval", "--toy", "--teacher", str(toy["teacher"]), "--student", str(toy["tmd"]), "--student",
            str(toy["dmd"]), "--vae", str(toy["vae"]), "--max-prompts", "2", "--seeds", "2",
            "--teacher-settings", "2x4,1x1", "--tmd-settings", "1x2", "--dmd-steps", "1", "--out", str(out)]
    assert main(args) == 0
    assert "4 generated, 0 already there" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["scorer"] == "ToyBench" and report["columns"][:2] == ["overall", "adherence"]
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows)[:2] == ["real data (renderer)", "real data through the VAE"]
    # the same numbers as toy.evaluate.run_bench on the same (prompt, seed) pairs
    pairs = [(p, s) for p in benchmark_prompts()[:2] for s in (0, 1)]
    teacher, student = load_teacher(toy["teacher"]), load_tmd(toy["tmd"])
    from tmd_core.toy.autoencoder import load_vae

    direct = run_bench(teacher_methods(teacher, cfg_steps=(2,), euler_steps=()) + tmd_methods(student, ((1, 2),)),
                       pairs, progress=False, vae=load_vae(toy["vae"]))
    for r in direct:
        for k in ("overall", "adherence", "quality", "diversity", "nfe", "overall_ci"):
            assert rows[r["name"]][k] == r[k], (r["name"], k)
    assert (out / "report.md").read_text().count("\n| ") >= 6 and (out / "quality_vs_nfe.png").is_file()
    assert main(args) == 0  # nothing is scored again
    assert "0 generated, 4 already there" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]


def test_toy_checks(toy, tmp_path, capsys):
    assert main(["eval", "--toy", "--teacher", str(toy["tmd"]), "--out", str(tmp_path)]) == 1
    assert "is a TMD student" in capsys.readouterr().err
    assert main(["eval", "--teacher", str(toy["teacher"]), "--out", str(tmp_path)]) == 1
    assert "add --toy" in capsys.readouterr().err
    assert main(["eval", "--toy", "--teacher", str(toy["teacher"]), "--vbench-python", "x", "--out", str(tmp_path)]) == 1
    assert "does not apply to --toy" in capsys.readouterr().err


def test_toy_run_folder(toy, tmp_path, capsys):
    """--run-dir reads a `tmd toy train` folder as `tmd toy bench --run-dir` does; rows in the bench's order."""
    import shutil

    run = tmp_path / "run"
    for src, dst in ((toy["teacher"], "teacher.safetensors"), (toy["vae"], "vae.safetensors"),
                     (toy["tmd"], "tmd/toy_tmd.safetensors"), (toy["dmd"], "dmd2v/toy_dmd2v.safetensors")):
        (run / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, run / dst)
        side = src.with_name(src.name.removesuffix(".safetensors") + ".config.json")
        if side.exists():
            shutil.copy(side, (run / dst).with_name(side.name))
    out = tmp_path / "out"
    assert main(["eval", "--toy", "--run-dir", str(run), "--max-prompts", "1", "--quick", "--teacher-settings", "1x1",
                 "--tmd-settings", "1x1", "--dmd-steps", "1", "--out", str(out)]) == 0
    names = [r["name"] for r in json.loads((out / "report.json").read_text())["rows"]]
    assert names == ["real data (renderer)", "real data through the VAE", "teacher Euler 1 NFE", "DMD2-v 1-step",
                     "TMD outer 1 x inner 1"]
