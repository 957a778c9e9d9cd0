"""Precision and placement of a run (docs/design.md §7): the frozen teacher replicated or sharded
(`teacher_placement`), bf16 master weights (`master_dtype`), and the launches the loop refuses."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_wan import make_tiny_teacher

from tmd_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
# sharding the teacher changes only where its weights live: every value it computes is the replicated
# teacher's up to float summation order (measured: 0 to 1e-7 relative)
SHARD_RTOL = 1e-5

WORKER = r'''
import json, os, sys
import torch
import torch.distributed as dist
sys.path.insert(0, os.environ["TMD_TESTS"])
from helpers_wan import make_tiny_teacher
from tmd_core.sampler import teacher_velocity
from tmd_core.training.sharding import shard_frozen
from tmd_core.training.teacher_features import teacher_features

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
replicated = make_tiny_teacher(0).requires_grad_(False)
sharded = shard_frozen(make_tiny_teacher(0).requires_grad_(False))
g = torch.Generator().manual_seed(1)
x, ctx = torch.randn(2, 4, 1, 8, 8, generator=g), torch.randn(2, 5, 24, generator=g)
neg, t = torch.randn(1, 3, 24, generator=g), torch.tensor([0.3, 0.8])
out = {}
for name, teacher in (("replicate", replicated), ("shard", sharded)):
    for _ in range(2):  # twice: the units reshard after each forward and gather again
        with torch.no_grad():  # the DMD loss's g_real: CFG, one batched forward
            v = teacher_velocity(teacher, x, t, ctx, neg, 4.0)
        xi = x.clone().requires_grad_(True)  # the GAN term: features of blocks 1 and 3, backward to the input
        feats = teacher_features(teacher, xi, t, ctx, (1, 3))
        loss = sum(f.square().mean() for f in feats)
        loss.backward()
    local = [p.to_local() if hasattr(p, "to_local") else p for p in teacher.parameters()]
    out[name] = {"v": v, "loss": loss.detach(), "grad": xi.grad, "bytes": sum(p.nbytes for p in local),
                 "grads_on_teacher": any(p.grad is not None for p in teacher.parameters())}
rel = {k: ((out["shard"][k] - out["replicate"][k]).abs().max() / out["replicate"][k].abs().max()).item()
       for k in ("v", "loss", "grad")}
# one file per rank: two processes printing to one pipe can interleave their lines
with open(os.path.join(os.environ["TMD_REPORTS"], f"rank{rank}.json"), "w") as f:
    json.dump({"rank": rank, "rel": rel, "bytes": {k: out[k]["bytes"] for k in out},
               "grads_on_teacher": out["shard"]["grads_on_teacher"]}, f)
dist.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sharded_teacher_computes_what_the_replicated_one_does_with_half_the_bytes(tmp_path):
    """2 gloo processes: the teacher's CFG velocity (DMD's g_real) and its block features with the backward
    to the input (GAN term) from `shard_frozen` equal the replicated teacher's, twice in a row; each process
    holds about half of the teacher's bytes (measured from the tensors) and the teacher gets no gradient."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TMD_TESTS=str(TESTS),
               TMD_REPORTS=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), str(script)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    for r in reports:
        print(f"rank {r['rank']}: sharded vs replicated, largest relative difference {r['rel']}; teacher bytes "
              f"{r['bytes']['shard']} of {r['bytes']['replicate']} ({r['bytes']['shard'] / r['bytes']['replicate']:.3f}x)")
        assert all(d <= SHARD_RTOL for d in r["rel"].values()), r
        assert 0.45 <= r["bytes"]["shard"] / r["bytes"]["replicate"] <= 0.55, r
        assert not r["grads_on_teacher"]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from helpers_wan import save_diffusers_single

    from tmd_core.training.make_data import write_latents

    root = tmp_path_factory.mktemp("placement")
    teacher = make_tiny_teacher(0)
    teacher_path = save_diffusers_single(teacher, root / "teacher.safetensors", sidecar=True)
    g = torch.Generator().manual_seed(0)
    write_latents(root / "data", torch.randn(4, 4, 1, 8, 8, generator=g),
                  [torch.randn(3, 24, generator=g) for _ in range(4)], [f"p{i}" for i in range(4)],
                  negative_context=torch.randn(2, 24, generator=g), shard_size=4)
    return {"teacher": teacher, "teacher_path": teacher_path, "data": root / "data"}


def bf16_cfg(world, out):
    from tmd_core.training.config import load_config

    cfg = load_config("tiny", model={"teacher": str(world["teacher_path"])}, data=str(world["data"]),
                      output_dir=str(out), master_dtype="bf16", mixed_precision="bf16", ema_decay=0.5)
    cfg.stage1.iterations = cfg.stage2.iterations = 3
    cfg.stage2.student_every = 1
    return cfg


def test_bf16_master_weights_train_and_hold_the_planned_bytes(tiny_world, tmp_path):
    """`master_dtype: bf16` on one process: every trained network's parameters are bf16, its AdamW moments fp32
    (MasterAdamW), the student learns, and the bytes the loop measured from the tensors (log.jsonl
    state_bytes) match the memory plan of the same config within 5 % (they match exactly)."""
    from safetensors.torch import load_file

    from tmd_core.training.loop import run_distill
    from tmd_core.training.memory_plan import (
        build_models,
        count_params,
        plan_rows,
        settings_for,
        teacher_whole_params,
    )
    from tmd_core.wan_build import transformer_config_dict

    teacher = tiny_world["teacher"]
    cfg = bf16_cfg(tiny_world, tmp_path / "run")
    path = run_distill(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("stage") == "stage1" and "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    tcfg = transformer_config_dict(teacher)
    models = build_models(tcfg, cfg)
    counts = {k: count_params(m) for k, m in models.items()}
    plan = settings_for(cfg, processes=1, teacher_dtype="fp32")  # "auto" keeps the CPU teacher's fp32
    for stage in ("stage1", "stage2"):
        logged = next(r for r in records if r.get("event") == "state_bytes" and r["stage"] == stage)
        rows = {r.name: r for r in plan_rows(counts, cfg, plan, stage, teacher_whole_params(models["teacher"]))}
        for name, measured in logged["per_process"][0].items():
            planned = rows[name].bytes
            assert measured["params"] == pytest.approx(planned["weights"], rel=0.05), (stage, name)
            assert measured["optimizer"] == pytest.approx(planned["optimizer"], rel=0.05), (stage, name)
            assert measured["optimizer"] == 4 * measured["params"], (stage, name)  # fp32 moments of bf16 weights
        assert logged["teacher_per_process"][0] == pytest.approx(rows["teacher"].bytes["weights"], rel=0.05)
    student = load_file(path)
    initial = dict(teacher.state_dict())
    moved = [k for k, v in student.items() if k.startswith("transformer.") and k[12:] in initial
             and not torch.equal(v.float(), initial[k[12:]].float())]
    assert moved, "the bf16 student did not change"


def test_a_bf16_master_run_stopped_and_resumed_ends_bit_identical(tiny_world, tmp_path):
    """MasterAdamW's fp32 moments go through the saved state as fp32 (torch's Optimizer.load_state_dict
    would cast them to bf16): a run stopped in stage 1 and in stage 2, then resumed, ends with the
    uninterrupted run's losses and weights, bit for bit."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from tmd_core.training.loop import run_distill

    straight = run_distill(bf16_cfg(tiny_world, tmp_path / "a"))
    cfg = bf16_cfg(tiny_world, tmp_path / "b")
    calls = {"n": 0}

    def stop_at_2():
        calls["n"] += 1
        return calls["n"] == 2

    assert run_distill(cfg, should_stop=stop_at_2).name == "tiny.partial.safetensors"  # stage-1 step 2
    with safe_open(str(tmp_path / "b" / "state-stage1.safetensors"), "pt") as f:
        dtypes = {k.rsplit(".", 1)[1]: f.get_slice(k).get_dtype() for k in f.keys() if k.startswith("optim.student.")}
        weights = {f.get_slice(k).get_dtype() for k in f.keys() if k.startswith("model.student.")}
    assert dtypes["exp_avg"] == dtypes["exp_avg_sq"] == "F32" and weights == {"BF16"}
    calls["n"] = 0
    assert run_distill(cfg, should_stop=stop_at_2, resume=True).name == "tiny.partial.safetensors"  # stage-2 step 1
    resumed = run_distill(cfg, resume=True)

    def losses(out):
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if "loss" in k or k in ("stage", "step")} for r in records
                if "event" not in r]

    assert losses(tmp_path / "a") == losses(tmp_path / "b") and len(losses(tmp_path / "a")) == 6
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_placement_and_precision_settings_are_checked_naming_the_fix():
    from tmd_core.training.config import check_settings, preset
    from tmd_core.training.sharding import check_placement

    cfg = preset("tiny")
    cfg.master_dtype = "bf16"
    with pytest.raises(ConfigError, match="master_dtype: bf16 .* set mixed_precision: bf16 too"):
        check_settings(cfg)
    cfg.mixed_precision = "bf16"
    check_settings(cfg)
    for field, bad in (("master_dtype", "fp16"), ("teacher_placement", "sharded"), ("teacher_dtype", "fp16")):
        cfg2 = preset("tiny")
        setattr(cfg2, field, bad)
        with pytest.raises(ConfigError, match=f"{field} must be one of"):
            check_settings(cfg2)
    cfg = preset("wan21_14b")
    assert (cfg.master_dtype, cfg.teacher_placement) == ("bf16", "shard")
    check_placement(cfg, "fsdp2")
    check_placement(cfg, "single")  # one process: nothing to shard, the teacher stays whole
    with pytest.raises(ConfigError, match="teacher_placement: shard needs an FSDP2 launch.*accelerate_fsdp2.yaml.*"
                                          "teacher_placement=replicate"):
        check_placement(cfg, "ddp")


def test_a_run_saved_before_the_new_settings_resumes(tmp_path):
    """A run folder whose config.yaml predates master_dtype / teacher_placement / teacher_dtype compares them
    to their defaults: --resume is not refused for keys the old run could not have set."""
    import yaml

    from tmd_core.training.config import config_changes, preset, to_yaml

    cfg = preset("tiny")
    old = yaml.safe_load(to_yaml(cfg))
    for key in ("master_dtype", "teacher_placement", "teacher_dtype"):
        del old[key]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert config_changes(tmp_path / "config.yaml", cfg) == []
    cfg.teacher_placement = "shard"
    assert config_changes(tmp_path / "config.yaml", cfg) == ["teacher_placement"]
