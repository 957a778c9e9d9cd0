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
from helpers_wan import make_tiny_teacher, tiny_training_world
from safetensors.torch import load_file

from tmd_core.training.config import load_config
from tmd_core.training.loop import run_distill

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
    return tiny_training_world(tmp_path_factory.mktemp("world"), 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


def launch_command(world, out, processes: int, *accelerate_args, extra=()) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *accelerate_args, "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "tmd_core", "distill", "--preset", "tiny",
           "--teacher", str(world["teacher_path"]), "--data", str(world["data"]), "--output-dir", str(out),
           *[a for k, v in ITERS.items() for a in ("--set", f"{k}={v}")], *extra]


def launch(world, out, processes: int, *accelerate_args, extra=()):
    cmd = launch_command(world, out, processes, *accelerate_args, extra=extra)
    return subprocess.run(cmd, cwd=out.parent, env=_env(), capture_output=True, text=True, timeout=600)


def tiny_cfg(world, out):
    """The config the launched runs resolve (preset tiny, the flags and ITERS), for an in-process run."""
    cfg = load_config("tiny", model={"teacher": str(world["teacher_path"])}, data=str(world["data"]),
                      output_dir=str(out))
    for key, value in ITERS.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, name, value)
    return cfg


def one_process(world, out):
    return run_distill(tiny_cfg(world, out))


def loss_records(out) -> list[dict]:
    records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().split("\n")[:-1]]
    # [:-1]: whole lines only (the last segment is "" or a line the running writer has not finished)
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


def state_bytes(out, stage="stage2") -> list[dict]:
    records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return next(r for r in records if r.get("event") == "state_bytes" and r["stage"] == stage)["per_process"]


@pytest.mark.slow
def test_fsdp2_shards_hold_about_half_the_bytes_per_process(world, tmp_path):
    """Parameters + AdamW moments of each trained network, measured from the tensors each process holds
    (the loop logs them after the first step): with 2 FSDP2 processes <= 0.55x one process's."""
    one_process(world, tmp_path / "one")
    res = launch(world, tmp_path / "fsdp", 2, *FSDP2, extra=("--set", "stage2.iterations=2",
                                                             "--set", "stage1.iterations=2"))
    assert res.returncode == 0, res.stderr[-3000:]
    for stage in ("stage1", "stage2"):
        one, two = state_bytes(tmp_path / "one", stage), state_bytes(tmp_path / "fsdp", stage)
        assert len(one) == 1 and len(two) == 2
        for name, b in one[0].items():
            full = b["params"] + b["optimizer"]
            worst = max(p[name]["params"] + p[name]["optimizer"] for p in two)
            print(f"{stage} {name}: 1 process {full} B, FSDP2 2 processes at most {worst} B ({worst / full:.3f}x)")
            assert worst <= 0.55 * full, (stage, name, worst, full)


@pytest.mark.slow
def test_sigkill_of_an_fsdp2_run_then_resume_reproduces_it(world, tmp_path):
    import signal
    import time

    psutil = pytest.importorskip("psutil")

    short = ("--set", "stage1.iterations=4", "--set", "checkpoint_every=2")
    res = launch(world, tmp_path / "straight", 2, *FSDP2, extra=short)
    assert res.returncode == 0, res.stderr[-3000:]

    out = tmp_path / "killed"
    cmd = launch_command(world, out, 2, *FSDP2, extra=short)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "log.jsonl").exists() and any(r["stage"] == "stage2" and r["step"] >= 5 for r in loss_records(out)):
            for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
                p.send_signal(signal.SIGKILL)  # the launcher and both workers (elastic gives them sessions)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    time.sleep(1)
    assert not (out / "tiny.safetensors").exists()
    assert sorted(p.name for p in out.glob("state-stage2*")) == ["state-stage2.rank1.step4.safetensors",
                                                                   "state-stage2.safetensors"]
    # resuming on another process count is refused, naming the fix, and changes nothing
    res = subprocess.run(launch_command(world, out, 1, extra=short) + ["--resume"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1
    assert "was saved as 2 FSDP2 shards, this run has 1 process(es): resume with the launch that saved it" in res.stderr
    res = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert loss_records(out) == loss_records(tmp_path / "straight")  # exactly: same processes, same order
    a, b = load_file(tmp_path / "straight" / "tiny.safetensors"), load_file(out / "tiny.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in out.glob("state-stage2*")) == ["state-stage2.rank1.step10.safetensors",
                                                                   "state-stage2.safetensors"]


def test_one_process_runs_bf16_then_fp32_without_resetting_accelerate(world, tmp_path):
    """Precision is the run config's (steps.autocast), not accelerate's process-wide state: a host process
    runs distillations of different precisions one after another (no private accelerate API involved)."""
    for name, precision in (("bf16", "bf16"), ("fp32", "no")):
        cfg = load_config("tiny", model={"teacher": str(world["teacher_path"])}, data=str(world["data"]),
                          output_dir=str(tmp_path / name), mixed_precision=precision, stages=["stage1"])
        cfg.stage1.iterations = 1
        assert run_distill(cfg).is_file()


def test_unsupported_launches_are_refused_naming_the_fix():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from tmd_core.errors import ConfigError
    from tmd_core.training.sharding import check_launch_request, parallel_mode

    def acc(kind, n=2, version=None):
        plugin = SimpleNamespace(fsdp_version=version) if version else None
        return SimpleNamespace(distributed_type=kind, num_processes=n, state=SimpleNamespace(fsdp_plugin=plugin))

    assert parallel_mode(acc(DistributedType.NO, 1), env={}) == "single"
    assert parallel_mode(acc(DistributedType.MULTI_CPU), env={}) == "ddp"
    assert parallel_mode(acc(DistributedType.MULTI_GPU), env={}) == "ddp"
    assert parallel_mode(acc(DistributedType.FSDP, version=2), env={}) == "fsdp2"
    assert parallel_mode(acc(DistributedType.MULTI_CPU), env={"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}) == "fsdp2"
    with pytest.raises(ConfigError, match="FSDP version 1.*set fsdp_version: 2.*configs/accelerate_fsdp2.yaml"):
        parallel_mode(acc(DistributedType.FSDP, version=1), env={})
    with pytest.raises(ConfigError, match="DEEPSPEED.*does not support.*configs/accelerate_fsdp2.yaml"):
        parallel_mode(acc(DistributedType.DEEPSPEED), env={})
    with pytest.raises(ConfigError, match="FSDP version 1.*--fsdp_version 2"):
        check_launch_request({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"})
    with pytest.raises(ConfigError, match="DeepSpeed.*--multi_gpu"):
        check_launch_request({"ACCELERATE_USE_DEEPSPEED": "true"})
    check_launch_request({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"})
    # the launch's precision is not read: one that differs from the run config's is refused, naming the setting
    tiny = load_config("tiny")
    with pytest.raises(ConfigError, match="mixed precision 'bf16', the run config says 'no'.*set mixed_precision: bf16"):
        check_launch_request({"ACCELERATE_MIXED_PRECISION": "bf16"}, cfg=tiny)
    with pytest.raises(ConfigError, match="mixed precision 'fp16'.*fp16 and fp8 are not supported"):
        check_launch_request({"ACCELERATE_MIXED_PRECISION": "fp16"}, cfg=tiny)
    check_launch_request({"ACCELERATE_MIXED_PRECISION": "no"}, cfg=tiny)
    tiny.mixed_precision = "bf16"
    check_launch_request({"ACCELERATE_MIXED_PRECISION": "bf16"}, cfg=tiny)
    # FSDP2 settings the loop does not run (on the CPU accelerate builds no plugin: read from the launch's variables)
    fsdp2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
    shipped = {**fsdp2, "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "FSDP_TRANSFORMER_CLS_TO_WRAP": "WanTransformerBlock"}
    assert parallel_mode(acc(DistributedType.MULTI_CPU), env=shipped) == "fsdp2"
    assert parallel_mode(acc(DistributedType.MULTI_CPU), env=fsdp2) == "fsdp2"  # NO_WRAP: the loop's units
    for extra, match in (
        ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "size_based_auto_wrap_policy.*TRANSFORMER_BASED_WRAP"),
        ({"FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer"}, "classes \\['LlamaDecoderLayer'\\].*WanTransformerBlock"),
        ({"FSDP_OFFLOAD_PARAMS": "true"}, "offload.*fsdp_offload_params: false"),
        ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, "activation checkpointing.*gradient_checkpointing: true"),
        ({"FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}, "fsdp_cpu_ram_efficient_loading: false"),
    ):
        with pytest.raises(ConfigError, match=match):
            parallel_mode(acc(DistributedType.MULTI_CPU), env={**shipped, **extra})
    assert parallel_mode(acc(DistributedType.MULTI_CPU, n=1), env={**shipped, "FSDP_OFFLOAD_PARAMS": "true"}) == "single"


def test_the_shipped_fsdp2_config_asks_for_what_the_loop_runs():
    """configs/accelerate_fsdp2.yaml: fsdp_version 2, a unit per WanTransformerBlock, nothing the loop refuses."""
    import yaml

    fsdp = yaml.safe_load((REPO / "configs" / "accelerate_fsdp2.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "WanTransformerBlock"
    assert not fsdp["fsdp_offload_params"] and not fsdp["fsdp_cpu_ram_efficient_loading"]
    assert not fsdp["fsdp_activation_checkpointing"]


@pytest.mark.slow
def test_a_ddp_launch_with_a_sharded_teacher_is_refused_naming_the_fix(world, tmp_path):
    res = launch(world, tmp_path / "ddp_shard", 2, "--multi_gpu", extra=("--set", "teacher_placement=shard"))
    assert res.returncode == 1
    assert "teacher_placement: shard needs an FSDP2 launch, this one is DDP" in res.stderr
    assert "configs/accelerate_fsdp2.yaml" in res.stderr and "--set teacher_placement=replicate" in res.stderr
    assert not (tmp_path / "ddp_shard").exists()  # refused before anything was written


@pytest.mark.slow
def test_fsdp2_with_a_sharded_teacher_reproduces_one_process(world, tmp_path):
    """teacher_placement: shard under FSDP2 (2 processes) against one process (the teacher whole): the same
    losses and weights within the tolerances of the replicated-teacher test, after 10 stage-2 iterations (the
    stage that reads the teacher); each process holds about half of the teacher (measured from the tensors)."""
    stage2 = ("--stages", "stage2", "--set", "stage2.init_from_teacher=true")
    cfg = tiny_cfg(world, tmp_path / "one")
    cfg.stages, cfg.stage2.init_from_teacher = ("stage2",), True
    run_distill(cfg)
    res = launch(world, tmp_path / "shard", 2, *FSDP2, extra=(*stage2, "--set", "teacher_placement=shard"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "teacher sharded" in res.stderr
    ra, rb = loss_records(tmp_path / "one"), loss_records(tmp_path / "shard")
    assert [(r["stage"], r["step"]) for r in ra] == [(r["stage"], r["step"]) for r in rb] and len(ra) == 10
    for x, y in zip(ra, rb):
        for k in x:
            if k not in ("stage", "step"):
                assert x[k] == pytest.approx(y[k], rel=LOSS_RTOL, abs=1e-7), (x["step"], k, x[k], y[k])
    wa, wb = load_file(tmp_path / "one" / "tiny.safetensors"), load_file(tmp_path / "shard" / "tiny.safetensors")
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst <= WEIGHT_ATOL, worst
    one = next(r for r in _events(tmp_path / "one") if r.get("event") == "state_bytes")["teacher_per_process"]
    two = next(r for r in _events(tmp_path / "shard") if r.get("event") == "state_bytes")["teacher_per_process"]
    ratios = [b / one[0] for b in two]
    print(f"FSDP2 sharded teacher vs 1 process: largest weight difference {worst:.3g}; teacher bytes per process "
          f"{two} of {one[0]} ({', '.join(f'{x:.3f}x' for x in ratios)})")
    assert all(0.45 <= x <= 0.55 for x in ratios), ratios
    # the memory plan of this config for 2 FSDP2 processes: every process's measured bytes within 5 %
    from tmd_core.training.memory_plan import (
        build_models,
        count_params,
        plan_rows,
        settings_for,
        teacher_whole_params,
    )
    from tmd_core.wan_build import transformer_config_dict

    cfg.teacher_placement = "shard"
    models = build_models(transformer_config_dict(make_tiny_teacher(0)), cfg)
    counts = {k: count_params(m) for k, m in models.items()}
    rows = {r.name: r for r in plan_rows(counts, cfg, settings_for(cfg, processes=2, teacher_dtype="fp32"), "stage2",
                                         teacher_whole_params(models["teacher"]))}
    logged = next(r for r in _events(tmp_path / "shard") if r.get("event") == "state_bytes")
    for b in two:
        assert b == pytest.approx(rows["teacher"].bytes["weights"], rel=0.05)
    for per in logged["per_process"]:
        for name, b in per.items():
            assert b["params"] == pytest.approx(rows[name].bytes["weights"], rel=0.05), (name, b)
            assert b["optimizer"] == pytest.approx(rows[name].bytes["optimizer"], rel=0.05), (name, b)


def _events(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_ddp_run_stopped_on_two_processes_resumes_on_one(world, tmp_path):
    """A replicated (DDP) state holds the whole networks and the random streams do not depend on the process
    count: a 2-process run stopped in stage 2 (SIGTERM: save and stop) continues on 1 process and ends
    where a 1-process run ends."""
    import signal
    import time

    psutil = pytest.importorskip("psutil")
    one_process(world, tmp_path / "one")
    out = tmp_path / "moved"
    proc = subprocess.Popen(launch_command(world, out, 2, "--multi_gpu"), cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "log.jsonl").exists() and any(r["stage"] == "stage2" and r["step"] >= 3 for r in loss_records(out)):
            for p in psutil.Process(proc.pid).children(recursive=True):
                p.send_signal(signal.SIGTERM)  # the workers: stop after this step with a resumable state
            break
        time.sleep(0.02)
    assert proc.wait(timeout=120) == 0
    assert (out / "tiny.partial.safetensors").is_file() and not (out / "tiny.safetensors").exists()
    run_distill(tiny_cfg(world, out), resume=True)
    worst = assert_same_run(tmp_path / "one", out)
    print(f"DDP 2 processes, then resumed on 1, vs 1: largest weight difference {worst:.3g}")
