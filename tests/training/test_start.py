"""Starting, failing and restarting a run: nothing left behind blocks the same command, stale temporaries of a
killed write are removed by the next start, and --resume with nothing to resume says so."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers_wan import make_tiny_teacher, save_diffusers_single

from tmd_core.checkpoint import atomic_save_safetensors, remove_stale_temporaries
from tmd_core.cli import main
from tmd_core.errors import ConfigError
from tmd_core.training import loop
from tmd_core.training.config import load_config
from tmd_core.training.loop import run_distill
from tmd_core.training.make_data import write_latents

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("start")
    teacher = save_diffusers_single(make_tiny_teacher(0), root / "teacher.safetensors", sidecar=True)
    g = torch.Generator().manual_seed(0)
    data = write_latents(root / "data", torch.randn(4, 4, 1, 8, 8, generator=g),
                         [torch.randn(3, 24, generator=g) for _ in range(4)], ["p"] * 4,
                         negative_context=torch.randn(2, 24, generator=g), shard_size=4)
    return {"teacher": teacher, "data": data}


def cfg_for(world, out, iterations=2):
    cfg = load_config("tiny", model={"teacher": str(world["teacher"])}, data=str(world["data"]), output_dir=str(out))
    cfg.stages, cfg.stage1.iterations, cfg.checkpoint_every = ("stage1",), iterations, 1
    return cfg


def argv(world, out, *extra):
    return ["distill", "--preset", "tiny", "--teacher", str(world["teacher"]), "--data", str(world["data"]),
            "--output-dir", str(out), "--stages", "stage1", "--set", "stage1.iterations=2", "--set",
            "checkpoint_every=1", *extra]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*") if ".tmp" in p.suffixes)


def test_a_start_that_fails_leaves_nothing_that_blocks_a_rerun(world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = loop.build_stage1_student

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while building the student")

    monkeypatch.setattr(loop, "build_stage1_student", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        run_distill(cfg_for(world, out))
    assert not out.exists()  # config.yaml, log.jsonl and teacher.json it wrote are gone, and the folder
    monkeypatch.setattr(loop, "build_stage1_student", real)
    assert run_distill(cfg_for(world, out)) == out / "tiny.safetensors"  # the same call, no --resume needed


def test_a_failed_start_in_an_existing_folder_keeps_what_was_there(world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(loop, "build_stage1_student", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        run_distill(cfg_for(world, out))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_resume_with_nothing_to_resume_says_so(world, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--resume: there is no run to resume in .*missing.*without --resume"):
        run_distill(cfg_for(world, tmp_path / "missing"), resume=True)
    assert not (tmp_path / "missing").exists()
    assert main(argv(world, tmp_path / "missing", "--resume")) == 1
    assert "there is no run to resume" in capsys.readouterr().err


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".state-stage1.safetensors.ab12cd.tmp").write_bytes(b"x" * 100)
    (tmp_path / ".teacher_vs_tmd.mp4.ab12.tmp.mp4").write_bytes(b"x")
    for keep in (".hidden", "a.tmp", ".notes.txt", "state-stage1.safetensors"):
        (tmp_path / keep).write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".state-stage1.safetensors.ab12cd.tmp", ".teacher_vs_tmd.mp4.ab12.tmp.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".notes.txt", "a.tmp", "state-stage1.safetensors"]


# A child that runs `tmd distill` with the atomic writer's tensor writer slowed down: it writes the first bytes of
# its first training state, says so, then waits to be killed.
CHILD = r"""
import sys, time
from pathlib import Path
import tmd_core.checkpoint as ck
real = ck.save_file
def slow(tensors, path, metadata=None):
    if ".state-stage1" in Path(path).name:
        Path(path).write_bytes(b"\0" * 4096)
        Path(sys.argv[1]).write_text(path)
        time.sleep(600)
    real(tensors, path, metadata=metadata)
ck.save_file = slow
from tmd_core.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_kill_9_during_a_state_write_then_the_next_start_leaves_no_tmp(world, tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "writing"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), *argv(world, out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the child never started writing its state"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert temporaries(out) == [Path(marker.read_text()).name]  # the half-written state, as a kill leaves it
    assert main(argv(world, out)) == 1  # its log has a training step: a plain start asks for --resume
    assert "already holds a run (log.jsonl): pass --resume" in capsys.readouterr().err
    assert main(argv(world, out, "--resume")) == 0  # the normal way on: the same command with --resume
    assert temporaries(out) == [] and (out / "tiny.safetensors").is_file()


def test_the_writer_leaves_no_temporary_after_an_error(tmp_path):
    with pytest.raises(AttributeError):
        atomic_save_safetensors({"x": "not a tensor"}, tmp_path / "a.safetensors", {})
    assert list(tmp_path.iterdir()) == []
