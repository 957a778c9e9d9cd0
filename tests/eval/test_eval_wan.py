"""`tmd eval` on Wan2.1 models end to end, with real components: tiny random-weight teacher and students in the
real layouts, diffusers' AutoencoderKLWan (small config, random weights), 2 prompts x 2 seeds.

Generation and resumability always run. Scoring runs VBench itself in its own environment: set VBENCH_PYTHON to
the python of a venv made by scripts/setup_vbench.sh (as the host tests use COMFYUI_PATH); skipped otherwise.
"""

import json
import os

import pytest
from helpers_eval import PROMPTS, wan_world
from safetensors.torch import load_file

from tmd_core import load_teacher, load_tmd
from tmd_core.cli import main
from tmd_core.eval.settings import parse_teacher
from tmd_core.eval.wan import dmd_rows, generate_videos, load_vae, teacher_rows, tmd_rows

VBENCH_PYTHON = os.environ.get("VBENCH_PYTHON")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return wan_world(tmp_path_factory.mktemp("wan"))


def test_generation_is_resumable(world, tmp_path):
    emb = load_file(str(world["embeddings"]))
    rows = teacher_rows(load_teacher(world["teacher"]), parse_teacher("2x5"), shift=8.0)
    rows += tmd_rows(load_tmd(world["tmd"]), [(1, 2)]) + dmd_rows(load_teacher(world["dmd"]), [1], shift=8.0)
    vae = load_vae(world["vae"])
    args = (PROMPTS, list(emb["context"]), emb["negative_context"][0], [0, 1], (16, 3, 8, 8), vae, tmp_path)
    first = generate_videos(rows, *args, progress=False)
    assert first["generated"] == 12 and first["skipped"] == 0
    video = tmp_path / "TMD_outer_1_x_inner_2" / "a cat walking on grass-1.mp4"
    assert video.is_file() and video.stat().st_size > 0
    video.unlink()  # as if the run had been stopped before this video
    again = generate_videos(rows, *args, progress=False)
    assert again["generated"] == 1 and again["skipped"] == 11 and video.is_file()
    import imageio.v3 as iio

    frames = iio.imread(video)  # 1 + 4 (F - 1) frames of 8x the latent
    assert frames.shape == (9, 64, 64, 3)


@pytest.mark.skipif(not VBENCH_PYTHON, reason="VBENCH_PYTHON is not set: the VBench test needs the VBench "
                    "environment (scripts/setup_vbench.sh DIR; VBENCH_PYTHON=DIR/bin/python)")
def test_eval_scores_with_vbench_and_resumes(world, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["eval", "--teacher", str(world["teacher"]), "--student", str(world["tmd"]), "--student", str(world["dmd"]),
            "--vae", str(world["vae"]), "--embeddings", str(world["embeddings"]), "--latent-shape", "16,3,8,8",
            "--seeds", "2", "--teacher-settings", "4x5,2x1", "--tmd-settings", "1x1,2x2", "--dmd-steps", "1,2",
            "--vbench-python", VBENCH_PYTHON, "--dimensions", "temporal_flickering", "--out", str(out)]
    assert main(args) == 0
    assert "24 generated, 0 already there" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["scorer"] == "VBench" and report["columns"] == ["total", "quality", "semantic", "temporal_flickering"]
    names = [r["name"] for r in report["rows"]]
    assert names == ["teacher 4 steps CFG 5", "teacher Euler 2 NFE", "TMD outer 1 x inner 1", "TMD outer 2 x inner 2",
                     "DMD2-v 1-step", "DMD2-v 2-step"]
    for r in report["rows"]:  # temporal flickering computed by VBench itself, per video
        assert 0 < r["temporal_flickering"] <= 1 and r["videos"] == 4 and r["semantic"] is None
        assert r["quality"] == pytest.approx((r["temporal_flickering"] - 0.6293) / (1 - 0.6293))
        scores = json.loads((out / "scores" / f"{r['name'].replace(' ', '_')}.json").read_text())
        scores = scores["scores"]["temporal_flickering"]
        assert len(scores["videos"]) == 4
    assert [r["nfe"] for r in report["rows"]] == [8, 2, 1, 3, 1, 2]
    assert "| TMD outer 2 x inner 2 | 3 |" in (out / "report.md").read_text()
    assert (out / "quality_vs_nfe.png").stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in (out / "videos").rglob("*.mp4")}
    assert main(args) == 0  # a second run generates and scores nothing new
    assert "0 generated, 24 already there" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "videos").rglob("*.mp4")} == stamps
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]


@pytest.mark.skipif(not VBENCH_PYTHON, reason="VBENCH_PYTHON is not set (scripts/setup_vbench.sh)")
def test_vbench_environment_answers(world, tmp_path, capsys, monkeypatch):
    from tmd_core.eval import vbench_scores as vb

    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "cache"))  # no weights there
    args = ["eval", "--teacher", str(world["teacher"]), "--vae", str(world["vae"]), "--embeddings",
            str(world["embeddings"]), "--latent-shape", "16,3,8,8", "--vbench-python", VBENCH_PYTHON,
            "--dimensions", "temporal_flickering,motion_smoothness", "--out", str(tmp_path / "out")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: VBench weights missing under") and "\n" not in err
    assert f"motion_smoothness needs {tmp_path / 'cache' / 'amt_model' / 'amt-s.pth'}" in err
    assert not (tmp_path / "out").exists()
    prompts = vb.standard_prompts(VBENCH_PYTHON, ["temporal_flickering"])  # VBench's own suite, from its package
    assert len(prompts) > 50 and all(isinstance(p, str) and p for p in prompts)
