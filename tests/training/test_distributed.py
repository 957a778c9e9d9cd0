"""Several processes (docs/design.md §7): DDP through Accelerate reproduces one process with the same global
batch. CPU processes form a gloo group (`accelerate launch --multi_gpu` on a machine without GPUs)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_wan import make_tiny_teacher, save_diffusers_single
from safetensors.torch import load_file

from tmd_core.training.config import load_config
from tmd_core.training.loop import run_distill
from tmd_core.training.make_data import write_latents

REPO = Path(__file__).resolve().parents[2]
# ≥ 10 iterations of each stage; the student steps every 2nd stage-2 iteration (5 generator updates)
ITERS = {"stage1.iterations": 10, "stage2.iterations": 10, "stage2.student_every": 2, "batch_size": 4,
         "checkpoint_every": 100, "log_every": 1, "ema_decay": 0.5}
# Agreement of N processes with one: the gradients are the same sums in another order (fp32 rounding,
# ~1e-7 relative per step), which 20 AdamW steps carry into the weights.
LOSS_RTOL, WEIGHT_ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny teacher file and 8 training samples (latents 4x1x8x8, 3-5 text tokens, a negative prompt)."""
    root = tmp_path_factory.mktemp("world")
    teacher_path = save_diffusers_single(make_tiny_teacher(0), root / "teacher.safetensors", sidecar=True)
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randn(3 + i % 3, 24, generator=g) for i in range(8)]
    write_latents(root / "data", torch.randn(8, 4, 1, 8, 8, generator=g), contexts, [f"p{i}" for i in range(8)],
                  negative_context=torch.randn(2, 24, generator=g), shard_size=4)
    return {"root": root, "teacher_path": teacher_path, "data": root / "data"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


def launch(world, out, processes: int, *accelerate_args, extra=()):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *accelerate_args, "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "tmd_core", "distill", "--preset", "tiny",
           "--teacher", str(world["teacher_path"]), "--data", str(world["data"]), "--output-dir", str(out),
           *[a for k, v in ITERS.items() for a in ("--set", f"{k}={v}")], *extra]
    return subprocess.run(cmd, cwd=out.parent, env=_env(), capture_output=True, text=True, timeout=600)


def one_process(world, out):
    cfg = load_config("tiny", model={"teacher": str(world["teacher_path"])}, data=str(world["data"]),
                      output_dir=str(out))
    for key, value in ITERS.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, name, value)
    return run_distill(cfg)


def loss_records(out) -> list[dict]:
    records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if "loss" in k or k in ("stage", "step")} for r in records if "event" not in r]


def assert_same_run(a, b):
    ra, rb = loss_records(a), loss_records(b)
    assert [(r["stage"], r["step"]) for r in ra] == [(r["stage"], r["step"]) for r in rb]
    assert [r["stage"] for r in ra].count("stage1") == 10 and [r["stage"] for r in ra].count("stage2") == 10
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for k in x:
            if k not in ("stage", "step"):
                assert x[k] == pytest.approx(y[k], rel=LOSS_RTOL, abs=1e-7), (x["stage"], x["step"], k, x[k], y[k])
    wa, wb = load_file(Path(a) / "tiny.safetensors"), load_file(Path(b) / "tiny.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst <= WEIGHT_ATOL, worst
    return worst


@pytest.mark.slow
def test_two_ddp_processes_reproduce_one_process(world, tmp_path):
    one_process(world, tmp_path / "one")
    res = launch(world, tmp_path / "ddp", 2, "--multi_gpu")
    assert res.returncode == 0, res.stderr[-3000:]
    worst = assert_same_run(tmp_path / "one", tmp_path / "ddp")
    print(f"DDP 2 processes vs 1: largest weight difference {worst:.3g}")


FSDP2 = ("--config_file", str(REPO / "configs" / "accelerate_fsdp2.yaml"))


@pytest.mark.slow
def test_two_fsdp2_processes_reproduce_one_process(world, tmp_path):
    one_process(world, tmp_path / "one")
    res = launch(world, tmp_path / "fsdp", 2, *FSDP2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "FSDP2 (sharded)" in res.stderr  # the topology, logged once at start
    worst = assert_same_run(tmp_path / "one", tmp_path / "fsdp")
    print(f"FSDP2 2 processes vs 1: largest weight difference {worst:.3g}")
    start = [json.loads(line) for line in (tmp_path / "fsdp" / "log.jsonl").read_text().splitlines()]
    assert [r["parallel"] for r in start if r.get("event") == "start"] == ["fsdp2", "fsdp2"]
