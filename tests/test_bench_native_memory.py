"""The pure parts of benchmarks/bench_native_sampling_memory.py (case list, /proc parsing, the table), and its stored
result (docs/host.md §12): fast, no ComfyUI, no model."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "native_sampling_memory_1p3b.json"


def bench():
    spec = importlib.util.spec_from_file_location("bench_native", REPO / "benchmarks" / "bench_native_sampling_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cases_parse_with_their_weight_dtype():
    b = bench()
    assert b.parse_cases("a, b,c,d-bf16,") == [("a", "default"), ("b", "default"), ("c", "default"), ("d", "bf16")]
    assert [b.case_id(*x) for x in b.parse_cases(b.DEFAULT_CASES)] == b.DEFAULT_CASES.split(",")
    for bad in ("e", "a-fp8", "c-bf16", ""):
        with pytest.raises(SystemExit):
            b.parse_cases(bad)


def test_head_blocks_default_to_five_or_half_of_a_small_model():
    b = bench()
    assert [b.default_head_blocks(n) for n in (30, 6, 5, 2, 1)] == [5, 5, 2, 1, 1]


def test_proc_status_reads_bytes():
    text = "Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 512 kB\nRssFile:\t 256 kB\nThreads:\t1\n"
    assert bench().proc_status(text) == {"VmHWM": 2 << 20, "VmRSS": 1 << 20, "RssAnon": 512 << 10, "RssFile": 256 << 10}


def test_table_gives_ratios_to_the_teacher_step_and_the_diffusers_path():
    b = bench()
    G = b.GiB

    def case(name, dtype, peak, weights="float32"):
        return {"case": name, "unet_dtype": dtype, "peak_rss": peak * G, "rss_imports": G, "wall_s": 10,
                "model_weight_dtype": weights}

    table = b.format_table({"cases": {"a": case("a", "default", 6), "c": case("c", "default", 4, "bfloat16"),
                                      "d": case("d", "default", 3), "a-bf16": case("a", "bf16", 4, "bfloat16")}})
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[1:-1]] for r in table.splitlines()[2:]}
    assert rows["a"][3:7] == ["6.00 GiB", "5.00 GiB", "2.00×", "1.50×"]
    assert rows["c"][5:7] == ["–", "1.00×"]
    assert rows["a-bf16"][5] == "–"  # no d-bf16 measured
    assert b.rel_l2(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 5.0])) == pytest.approx(10**0.5 / 5)


@pytest.mark.skipif(not RESULT.exists(), reason="no stored 1.3B result")
def test_stored_result_is_complete_and_finite():
    r = json.loads(RESULT.read_text())
    assert r["config"].startswith("wan21_t2v_1.3b, 30 blocks")
    assert set(r["cases"]) >= {"a", "b", "c", "d"}
    assert all(r["latents_finite"].values())
    for c in r["cases"].values():
        assert c["peak_rss"] > c["rss_imports"] > 0 and c["latent_finite"]
    assert r["table"] == bench().format_table(r)
