"""`tmd eval`: every bad input is one `error:` line before anything is generated; VBench's scaled scores."""

import pytest
from helpers_eval import wan_world
from helpers_wan import make_tiny_teacher, save_diffusers_single

from tmd_core.cli import main
from tmd_core.eval import vbench_scores as vb
from tmd_core.eval.settings import parse_dmd, parse_teacher, parse_tmd


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return wan_world(tmp_path_factory.mktemp("wan"))


def _eval(world, tmp_path, *extra):
    return ["eval", "--teacher", str(world["teacher"]), "--student", str(world["tmd"]), "--vae", str(world["vae"]),
            "--embeddings", str(world["embeddings"]), "--latent-shape", "16,3,8,8", "--out", str(tmp_path / "out"),
            *extra]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_unknown_dimension(world, tmp_path, capsys):
    assert main(_eval(world, tmp_path, "--dimensions", "temporal_flickering,sharpness")) == 1
    msg = _error(capsys)
    assert "unknown VBench dimension 'sharpness'" in msg and "temporal_flickering" in msg
    assert not (tmp_path / "out").exists()


def test_missing_vbench_environment(world, tmp_path, capsys):
    assert main(_eval(world, tmp_path, "--dimensions", "temporal_flickering")) == 1
    assert "VBench is not set up" in _error(capsys)
    assert main(_eval(world, tmp_path, "--dimensions", "temporal_flickering", "--vbench-python",
                      str(tmp_path / "nowhere" / "python"))) == 1
    assert "no executable python" in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_missing_weights_are_listed_where_vbench_expects_them(tmp_path):
    (tmp_path / "amt_model").mkdir()
    (tmp_path / "amt_model" / "amt-s.pth").write_bytes(b"x")
    gone = vb.missing_weights(["temporal_flickering", "motion_smoothness", "dynamic_degree", "aesthetic_quality"],
                              tmp_path)
    assert gone == {"dynamic_degree": [str(tmp_path / "raft_model/models/raft-things.pth")],
                    "aesthetic_quality": [str(tmp_path / "clip_model/ViT-L-14.pt"),
                                          str(tmp_path / "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth")]}
    assert vb.NO_WEIGHTS == ("temporal_flickering",)


def test_student_of_another_teacher(world, tmp_path, capsys):
    other = save_diffusers_single(make_tiny_teacher(seed=9, in_channels=16, out_channels=16, text_dim=24),
                                  tmp_path / "other.safetensors", sidecar=True)
    args = _eval(world, tmp_path, "--dimensions", "temporal_flickering")
    args[args.index("--teacher") + 1] = str(other)
    assert main(args) == 1
    msg = _error(capsys)
    assert "tmd.safetensors was distilled from the teacher teacher.safetensors" in msg
    assert "other.safetensors has sha256" in msg and not (tmp_path / "out").exists()


def test_settings_are_checked(world, tmp_path, capsys):
    for flag, value, words in (("--tmd-settings", "2by2", "is not OUTERxINNER"), ("--dmd-steps", "0", "step count"),
                               ("--teacher-settings", "50x0", "outside (0, 100]")):
        assert main(_eval(world, tmp_path, flag, value)) == 1
        assert words in _error(capsys)
    assert parse_teacher("50x5, 4x1") == parse_teacher("50x5,4x1,50x5")
    assert parse_teacher("4x1")[0].name == "teacher Euler 4 NFE" and parse_teacher("50x5")[0].nfe == 100
    assert parse_tmd("1x1,2x4") == [(1, 1), (2, 4)] and parse_dmd("1,2,2") == [1, 2]


def test_scaled_scores_follow_vbench():
    s = vb.scaled_scores({"temporal_flickering": 1.0, "dynamic_degree": 0.5, "scene": 0.8222})
    assert s["quality"] == pytest.approx((1.0 * 1 + 0.5 * 0.5) / 1.5)
    assert s["semantic"] == pytest.approx(1.0)
    assert s["total"] == pytest.approx((4 * s["quality"] + 1.0) / 5)
    only = vb.scaled_scores({"temporal_flickering": 0.6293})
    assert only == {"total": pytest.approx(0.0), "quality": pytest.approx(0.0), "semantic": None}
