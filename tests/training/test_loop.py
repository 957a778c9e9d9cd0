"""The training loop (docs/design.md §7): checkpoints with provenance, exact resume, several processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers_wan import tiny_training_world
from safetensors.torch import load_file

from tmd_core.checkpoint import load_tmd, read_tmd_info
from tmd_core.errors import ConfigError
from tmd_core.loading import teacher_sha256
from tmd_core.training.config import load_config
from tmd_core.training.loop import check_launch, run_distill
from tmd_core.training.state import read_state_header

REPO = Path(__file__).resolve().parents[2]
NOT_LOSSES = ("it_s", "mem_mb")  # timing fields differ between runs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny teacher file and 6 training samples (latents 4x1x8x8, 3-5 text tokens, a negative prompt)."""
    return tiny_training_world(tmp_path_factory.mktemp("world"), 6)


def make_cfg(world, out, **over):
    cfg = load_config("tiny", model={"teacher": str(world["teacher_path"])}, data=str(world["data"]),
                      output_dir=str(out))
    cfg.stages, cfg.stage1.iterations, cfg.stage2.iterations, cfg.stage2.student_every = ("stage1",), 3, 3, 2
    cfg.checkpoint_every = 100
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def losses(out) -> list[dict]:
    """The per-step records of log.jsonl without their timing fields."""
    records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().split("\n")[:-1]]
    # [:-1]: whole lines only (the last segment is "" or a line the running writer has not finished)
    return [{k: v for k, v in r.items() if k not in NOT_LOSSES} for r in records if "event" not in r]


def stop_after(n):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] == n

    return should_stop


def test_stage1_run_writes_tmd_checkpoint_with_provenance(world, tmp_path):
    seen = []
    cfg = make_cfg(world, tmp_path / "run")
    path = run_distill(cfg, progress=lambda stage, step, total, logs: seen.append((stage, step, total, "loss" in logs)))
    assert path == tmp_path / "run" / "tiny.safetensors"
    info = read_tmd_info(path)
    prov = info["provenance"]
    assert prov["stages"] == ["stage1"] and prov["iterations"] == {"stage1": 3} and prov["complete"] is True
    assert prov["teacher_sha256"] == teacher_sha256(world["teacher_path"]) and prov["teacher"] == "teacher.safetensors"
    assert info["head_blocks"] == 1 and info["tmd_config"]["outer_steps"] == cfg.schedule.outer_steps
    student = load_tmd(path)
    assert student.fusion.fc2.weight.abs().sum() > 0  # trained: the zero-initialised projection moved
    assert seen == [("stage1", k, 3, True) for k in (1, 2, 3)]
    records = losses(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["loss"] > 0 for r in records)
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_stop_and_resume_reproduce_both_stages_exactly(world, tmp_path):
    over = dict(stages=("stage1", "stage2"), batch_size=1, ema_decay=0.5, validate_every=2)
    straight = run_distill(make_cfg(world, tmp_path / "a", **over))

    cfg = make_cfg(world, tmp_path / "b", **over)
    partial = run_distill(cfg, should_stop=stop_after(2))  # stops after stage-1 step 2
    prov = read_tmd_info(partial)["provenance"]
    assert partial.name == "tiny.partial.safetensors" and prov["complete"] is False
    assert prov["iterations"] == {"stage1": 2}
    assert read_state_header(tmp_path / "b" / "state-stage1.safetensors")["step"] == "2"
    assert run_distill(cfg, should_stop=stop_after(2), resume=True).name == "tiny.partial.safetensors"  # stage-2 step 1
    resumed = run_distill(cfg, resume=True)
    assert not (tmp_path / "b" / "tiny.partial.safetensors").exists()

    assert losses(tmp_path / "b") == losses(tmp_path / "a")
    stages = [r["stage"] for r in losses(tmp_path / "a")]
    assert stages == ["stage1"] * 3 + ["stage2"] * 3
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("stage1-000002", "stage2-000002"):  # fixed-seed validation samples
        va = load_file(tmp_path / "a" / "validation" / f"{name}.safetensors")["latents"]
        vb = load_file(tmp_path / "b" / "validation" / f"{name}.safetensors")["latents"]
        assert torch.equal(va, vb)
    assert read_tmd_info(resumed)["provenance"]["iterations"] == {"stage1": 3, "stage2": 3}


def _cli(world, out, *extra):
    return [sys.executable, "-m", "tmd_core", "distill", "--preset", "tiny", "--teacher", str(world["teacher_path"]),
            "--data", str(world["data"]), "--output-dir", str(out), "--stages", "stage1",
            "--set", "stage1.iterations=8", "--set", "checkpoint_every=2", *extra]


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(torch.get_num_threads()), CUDA_VISIBLE_DEVICES="")
    return env


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_reproduces_losses(world, tmp_path):
    cfg = make_cfg(world, tmp_path / "a")
    cfg.stage1.iterations, cfg.checkpoint_every = 8, 2
    run_distill(cfg)

    out = tmp_path / "b"
    proc = subprocess.Popen(_cli(world, out), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(r["step"] >= 3 for r in losses(out)) if (out / "log.jsonl").exists() else False:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "tiny.safetensors").exists()
    res = subprocess.run(_cli(world, out, "--resume"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert losses(out) == losses(tmp_path / "a")
    a, b = load_file(tmp_path / "a" / "tiny.safetensors"), load_file(out / "tiny.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_one_process_launch_of_a_multi_process_request_is_refused():
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "ACCELERATE_USE_CPU": "True"}
    with pytest.raises(ConfigError, match="started one process.*--multi_gpu --num_processes N"):
        check_launch(1, env)
    check_launch(1, {"ACCELERATE_USE_CPU": "True"})  # a plain one-process --cpu launch is fine
    check_launch(2, {**env, "WORLD_SIZE": "2"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_write_one_consistent_checkpoint(world, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "tmd_core", "distill", "--preset", "tiny",
           "--teacher", str(world["teacher_path"]), "--data", str(world["data"]), "--output-dir", str(out),
           "--set", "stage1.iterations=2", "--set", "stage2.iterations=2", "--set", "stage2.student_every=2",
           "--set", "batch_size=2", "--set", "checkpoint_every=1"]
    env = dict(_env(), OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("distill: wrote") == 1  # printed by rank 0 only
    prov = read_tmd_info(out / "tiny.safetensors")["provenance"]
    assert prov["processes"] == 2 and prov["iterations"] == {"stage1": 2, "stage2": 2}
    assert prov["teacher_sha256"] == teacher_sha256(world["teacher_path"])
    load_tmd(out / "tiny.safetensors")
    for stage in ("stage1", "stage2"):
        meta = read_state_header(out / f"state-{stage}.safetensors")
        assert meta["world_size"] == "2" and meta["step"] == "2"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["processes"] for r in log if r.get("event") == "start"] == [2, 2]
    assert [r["path"] for r in log if r.get("event") == "saved"] == [str(out / "stage1.safetensors"),
                                                                     str(out / "tiny.safetensors")]
    assert [(r["stage"], r["step"]) for r in log if "event" not in r] == [("stage1", 1), ("stage1", 2),
                                                                        ("stage2", 1), ("stage2", 2)]
    assert not list(out.glob(".*.tmp"))


def test_dmd_baseline_writes_a_plain_wan_student(world, tmp_path):
    from tmd_core.loading import load_teacher

    cfg = make_cfg(world, tmp_path / "run", stages=("stage2",), batch_size=1)
    cfg.stage2.student_kind, cfg.stage2.iterations = "dmd", 2
    path = run_distill(cfg)
    student = load_teacher(path)  # a Wan transformer (diffusers keys + config sidecar), not tmd/1
    assert len(student.blocks) == 4
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["provenance"])["iterations"] == {"stage2": 2}
    cfg = make_cfg(world, tmp_path / "kd", stages=("stage2",), batch_size=1)
    cfg.stage2.student_kind, cfg.stage2.kd_warmup_iterations = "dmd", 1
    with pytest.raises(ConfigError, match="kd_warmup needs teacher-made data with recorded noise seeds"):
        run_distill(cfg)  # the fixture's latents are user-supplied: no noise to pair them with


def test_previews_sample_fixed_prompts_every_k_steps_and_at_the_end_of_a_stage(world, tmp_path):
    """validate_every = 2 of 3 steps: after steps 2 and 3; prompt i with seed validation_seeds[i % 2]; the host's
    hook gets the latents that were written."""
    from tmd_core.training.previews import PreviewPrompts

    g = torch.Generator().manual_seed(5)
    prompts = PreviewPrompts(["a", "b", "c"], [torch.randn(4, 24, generator=g) for _ in range(3)])
    seen = []
    cfg = make_cfg(world, tmp_path / "run", validate_every=2, validation_seeds=(7, 8))
    run_distill(cfg, previews=prompts, on_preview=lambda *a: seen.append(a))
    assert [(stage, step, tuple(x.shape), p) for stage, step, x, p in seen] == [
        ("stage1", k, (3, 4, 1, 8, 8), ["a", "b", "c"]) for k in (2, 3)]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "validation" / "stage1-000003.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["seeds"]) == [7, 8, 7] and json.loads(f.metadata()["prompts"]) == ["a", "b", "c"]
        torch.testing.assert_close(f.get_tensor("latents"), seen[-1][2], rtol=0, atol=0)
    # prompt "c" and prompt "a" share seed 7 but not their text: different samples; "a" at step 3 is the
    # student's sample for that seed and text
    x = seen[-1][2]
    assert not torch.equal(x[0], x[2])
    student = load_tmd(tmp_path / "run" / "tiny.safetensors")
    from tmd_core import make_noise, sample_tmd

    x0 = sample_tmd(student, make_noise((1, 4, 1, 8, 8), 7), prompts.contexts[0][None], cfg.schedule)
    torch.testing.assert_close(x[:1], x0, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="encoded \\[16\\] wide, the teacher reads 24-wide"):
        run_distill(make_cfg(world, tmp_path / "other", validate_every=1),
                    previews=PreviewPrompts(["a"], [torch.zeros(4, 16)]))
