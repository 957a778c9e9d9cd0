"""`tmd toy train` end to end at toy-of-toy sizes: every step runs, writes its result, and a re-run skips it."""

import json

import pytest

from tmd_core import load_teacher, load_tmd, read_tmd_info
from tmd_core.toy.retrain import ToyPlan, run_outputs, train_all


@pytest.mark.slow
def test_train_all_runs_every_step_and_a_rerun_continues(tmp_path):
    plan = ToyPlan(vae_iterations=2, teacher_iterations=2, data_seeds_per_prompt=1, data_steps=1, stage1_iterations=1,
                   stage2_iterations=1, dmd_iterations=1)
    result = train_all(tmp_path / "run", plan)
    paths = run_outputs(tmp_path / "run")
    assert {k: str(v) for k, v in paths.items()} == {"toy_vae": result["vae"], "toy_teacher": result["teacher"],
                                                     "toy_tmd": result["tmd"], "toy_dmd2v": result["dmd2v"]}
    assert len(json.loads((tmp_path / "run" / "data" / "index.json").read_text())["shards"]) >= 1
    assert read_tmd_info(paths["toy_tmd"])["provenance"]["stages"] == ["stage1", "stage2"]
    load_tmd(paths["toy_tmd"]), load_teacher(paths["toy_dmd2v"])
    stamps = {k: v.stat().st_mtime_ns for k, v in paths.items()}
    train_all(tmp_path / "run", plan)  # everything exists: nothing is redone
    assert {k: v.stat().st_mtime_ns for k, v in paths.items()} == stamps
