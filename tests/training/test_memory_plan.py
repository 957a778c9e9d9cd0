"""`tmd distill --plan` (training/memory_plan.py): its bytes against measured tensor bytes."""

import json
from pathlib import Path

import pytest
import torch
from helpers_wan import make_tiny_teacher

from tmd_core.cli import main
from tmd_core.errors import ConfigError
from tmd_core.training.config import preset
from tmd_core.training.memory_plan import (
    GB,
    PlanSettings,
    build_models,
    count_params,
    measure_bytes,
    parse_bytes,
    plan_rows,
    preset_architecture,
)
from tmd_core.wan_build import transformer_config_dict

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "results" / "memory_plan_1p3b.json"


@pytest.mark.parametrize("dtype_name,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_plan_equals_measured_bytes_of_real_tensors(dtype_name, dtype):
    """Master weights in fp32 or bf16, the loop's optimiser (fp32 moments either way: MasterAdamW for bf16)."""
    cfg = preset("tiny")
    cfg.ema_decay = 0.9
    tcfg = transformer_config_dict(make_tiny_teacher(0))
    torch.manual_seed(0)
    models = build_models(tcfg, cfg, device="cpu")
    counts = {k: count_params(m) for k, m in models.items()}
    rows = {r.name: r for r in plan_rows(counts, cfg, PlanSettings(master_dtype=dtype_name), "stage2")}
    for name, module in models.items():
        if name == "teacher":
            measured = measure_bytes(module.to(torch.bfloat16).requires_grad_(False), optim_step=False)
        else:
            measured = measure_bytes(module.to(dtype), ema=name == "student", chunk_elements=10_000)
        assert measured == rows[name].bytes, name


def test_plan_of_the_1p3b_architecture_agrees_with_the_measured_benchmark():
    """benchmarks/bench_memory_plan.py measured every network of a 1.3B run on CPU (random weights); the
    plan, from meta-device counts, must agree within 5 % (it agrees exactly)."""
    bench = json.loads(BENCH.read_text())
    cfg = preset("wan21_1p3b")
    cfg.ema_decay = bench["ema_decay"]
    counts = {k: count_params(m) for k, m in build_models(preset_architecture("wan21_1p3b"), cfg).items()}
    assert counts == bench["counts_meta"]
    assert set(bench["precisions"]) == {"fp32", "bf16"}  # master dtypes; AdamW moments fp32 in both
    for dtype_name, result in bench["precisions"].items():
        settings = PlanSettings(master_dtype=dtype_name)
        planned = sum(r.total for r in plan_rows(counts, cfg, settings, "stage2"))
        measured = result["measured_total_bytes"]
        assert abs(planned / measured - 1) <= 0.05, (dtype_name, planned, measured)
        for name, m in result["measured"].items():
            assert m["params"] == counts[name]


def test_plan_command_prints_per_gpu_totals(capsys):
    assert main(["distill", "--plan", "--preset", "wan21_14b", "--processes", "8", "--gpu-mem", "80GB"]) == 0
    out = capsys.readouterr().out
    assert "8 process(es), FSDP2 sharded, bf16 master weights + fp32 AdamW moments" in out
    assert "per-process states (largest stage): 46.84 GB" in out
    assert "gathered while a loss runs (a network's non-block part + 2 blocks): 2.19 GB" in out
    assert "per-process total: 49.03 GB" in out and "fits: 49.03 GB of 80 GB, 30.97 GB left for activations" in out
    # the 1.3B preset trains fp32 masters: its plan says so unless asked for bf16 (master_dtype: bf16)
    assert main(["distill", "--plan", "--preset", "wan21_1p3b", "--processes", "1", "--gpu-mem", "80GB"]) == 0
    out = capsys.readouterr().out
    assert "1 process(es), one process, fp32 master weights + fp32 AdamW moments, teacher bf16" in out
    assert "per-process total: 49.07 GB" in out
    assert main(["distill", "--plan", "--preset", "wan21_1p3b", "--processes", "1", "--gpu-mem", "80GB",
                 "--master-dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "per-process total: 37.51 GB" in out and "fits: 37.51 GB of 80 GB" in out
    assert main(["distill", "--plan", "--preset", "wan21_14b", "--processes", "8", "--gpu-mem", "80GB",
                 "--teacher-placement", "replicate"]) == 0
    assert "per-process total: 74.04 GB" in capsys.readouterr().out
    assert main(["distill", "--plan", "--preset", "wan21_14b", "--processes", "1", "--gpu-mem", "80GB"]) == 0
    assert "does not fit: needs 374.74 GB of 80 GB" in capsys.readouterr().out


def test_sharding_divides_every_trained_figure_by_the_process_count():
    cfg = preset("wan21_1p3b")
    counts = {"student": 1000, "teacher": 990, "fake_score": 990, "discriminator": 10}
    one = {r.name: r for r in plan_rows(counts, cfg, PlanSettings(processes=1, sharding="sharded", teacher="shard"),
                                        "stage2")}
    eight = {r.name: r for r in plan_rows(counts, cfg, PlanSettings(processes=8, sharding="sharded", teacher="shard"),
                                          "stage2", teacher_whole=6)}
    repl = {r.name: r for r in plan_rows(counts, cfg, PlanSettings(processes=8, sharding="sharded",
                                                                    teacher="replicate"), "stage2")}
    assert eight["student"].total * 8 == one["student"].total
    assert eight["teacher"].total == (123 + 6) * 2  # ceil(984 / 8) = 123 sharded elements + 6 whole, bf16
    assert repl["teacher"].total == one["teacher"].total


@pytest.mark.parametrize("argv,match", [
    (["--gpu-mem", "eighty"], "--gpu-mem 'eighty' is not a size"),
    (["--sharding", "zero3"], "--sharding must be one of"),
    (["--processes", "0"], "--processes"),
    (["--master-dtype", "fp16"], "--master-dtype"),
    (["--teacher-placement", "sharded"], "--teacher-placement must be one of"),
    (["--sharding", "full", "--processes", "8", "--teacher-placement", "shard"],
     "--teacher-placement shard needs --sharding sharded (FSDP2)"),
])
def test_plan_refuses_bad_settings(argv, match, capsys):
    assert main(["distill", "--plan", "--preset", "wan21_1p3b", *argv]) == 1
    assert match in capsys.readouterr().err


def test_parse_bytes():
    assert parse_bytes("80GB") == 80 * GB and parse_bytes("24GiB") == 24 * 2**30 and parse_bytes("80") == 80 * GB
    with pytest.raises(ConfigError):
        parse_bytes("-3GB")
