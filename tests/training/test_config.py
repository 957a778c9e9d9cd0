"""Training config (docs/design.md §7): strict YAML overrides, --dry-run, and clear errors before any work."""

import copy

import pytest
import torch
import yaml
from helpers_wan import make_tiny_teacher, save_diffusers_single

from tmd_core.checkpoint import save_tmd
from tmd_core.cli import main
from tmd_core.errors import ConfigError
from tmd_core.model import TMDModel
from tmd_core.training.config import check_config, load_config, to_yaml
from tmd_core.training.loop import run_distill
from tmd_core.training.make_data import write_latents


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny teacher file and a 4-sample data folder."""
    root = tmp_path_factory.mktemp("world")
    teacher = make_tiny_teacher(0)
    teacher_path = save_diffusers_single(teacher, root / "teacher.safetensors", sidecar=True)
    g = torch.Generator().manual_seed(0)
    write_latents(root / "data", torch.randn(4, 4, 1, 4, 4, generator=g), list(torch.randn(4, 3, 24, generator=g)),
                  ["p"] * 4, negative_context=torch.randn(2, 24, generator=g))
    return {"root": root, "teacher": teacher, "teacher_path": teacher_path, "data": root / "data"}


def tiny_cfg(world, tmp_path, **over):
    cfg = load_config("tiny", model={"teacher": str(world["teacher_path"])}, data=str(world["data"]),
                      output_dir=str(tmp_path / "run"))
    cfg.stages = ("stage1",)
    cfg.stage1.iterations = 1
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def test_unknown_yaml_key_names_the_key(tmp_path):
    (tmp_path / "a.yaml").write_text("stage1:\n  lr: 1.0e-4\n  lrr: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key a\.yaml\.stage1\.lrr"):
        load_config("tiny", tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("bach_size: 4\n")
    with pytest.raises(ConfigError, match=r"unknown key b\.yaml\.bach_size.*batch_size"):
        load_config("tiny", tmp_path / "b.yaml")


def test_yaml_values_are_type_checked(tmp_path):
    (tmp_path / "t.yaml").write_text("stage1:\n  lr: 1e-4\n")  # YAML 1.1 reads 1e-4 as a string
    assert load_config("tiny", tmp_path / "t.yaml").stage1.lr == 1e-4
    (tmp_path / "u.yaml").write_text("stage1:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"u\.yaml\.stage1\.lr must be a float, got 'fast'"):
        load_config("tiny", tmp_path / "u.yaml")
    (tmp_path / "v.yaml").write_text("batch_size: 2.5\n")
    with pytest.raises(ConfigError, match="batch_size must be a int"):
        load_config("tiny", tmp_path / "v.yaml")


def test_yaml_overrides_known_fields_and_round_trips(tmp_path):
    (tmp_path / "c.yaml").write_text("batch_size: 8\nstage2:\n  disc_layers: [1, 2]\nstages: [stage2]\n")
    cfg = load_config("wan21_14b", tmp_path / "c.yaml")
    assert cfg.batch_size == 8 and cfg.stage2.disc_layers == (1, 2) and cfg.stages == ("stage2",)
    assert cfg.stage1.lr == 1e-5 and cfg.schedule.inner_steps == 4  # the preset survives
    (tmp_path / "d.yaml").write_text(to_yaml(cfg))
    assert load_config("tiny", tmp_path / "d.yaml") == cfg


def test_dry_run_prints_the_resolved_config(world, tmp_path, capsys):
    (tmp_path / "o.yaml").write_text("stage1:\n  iterations: 7\n")
    rc = main(["distill", "--preset", "tiny", "--config", str(tmp_path / "o.yaml"), "--teacher",
               str(world["teacher_path"]), "--data", str(world["data"]), "--output-dir", str(tmp_path / "run"),
               "--set", "stage1.lr=0.5", "--set", "stages=[stage1]", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and "config ok" in out
    printed = yaml.safe_load(out)
    assert printed["name"] == "tiny" and printed["stage1"]["lr"] == 0.5 and printed["stage1"]["iterations"] == 7
    assert printed["stages"] == ["stage1"] and printed["model"]["teacher"] == str(world["teacher_path"])
    assert not (tmp_path / "run").exists()  # nothing written


def test_dry_run_reports_an_unknown_set_key(capsys):
    rc = main(["distill", "--preset", "tiny", "--set", "stage2.gan_wieght=0", "--dry-run"])
    assert rc == 1 and "stage2.gan_wieght" in capsys.readouterr().err


def test_missing_data_folder(world, tmp_path):
    cfg = tiny_cfg(world, tmp_path, data=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"data folder .*nowhere.* does not exist: make one with `tmd make-data"):
        check_config(cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no index.json"):
        check_config(tiny_cfg(world, tmp_path, data=str(tmp_path / "empty")))


def test_batch_not_divisible_by_processes(world, tmp_path):
    cfg = tiny_cfg(world, tmp_path, batch_size=3)
    check_config(cfg, world_size=1)
    with pytest.raises(ConfigError, match=r"batch_size 3 is not divisible by the 2 processes: use a multiple of 2"):
        check_config(cfg, world_size=2)


def test_stage2_without_an_initialised_student(world, tmp_path):
    cfg = tiny_cfg(world, tmp_path, stages=("stage2",))
    with pytest.raises(ConfigError, match="stage 2 needs a student: run stage 1 first.*student_init.*init_from_teacher"):
        check_config(cfg)
    cfg.stage2.init_from_teacher = True
    check_config(cfg)
    cfg.stage2.init_from_teacher, cfg.stage2.student_kind = False, "dmd"  # the DMD2-v baseline starts from the teacher
    check_config(cfg)


def test_missing_teacher(world, tmp_path):
    cfg = tiny_cfg(world, tmp_path)
    cfg.model.teacher = ""
    with pytest.raises(ConfigError, match="model.teacher is empty"):
        check_config(cfg)
    check_config(cfg, teacher_given=True)


def test_teacher_student_architecture_mismatch(world, tmp_path):
    other = make_tiny_teacher(1, num_layers=3, ffn_dim=48)
    save_tmd(TMDModel.from_teacher(copy.deepcopy(other), head_blocks=1), tmp_path / "student.safetensors")
    cfg = tiny_cfg(world, tmp_path)
    cfg.model.student_init = str(tmp_path / "student.safetensors")
    with pytest.raises(ConfigError, match=r"different architectures \(ffn_dim: teacher 64, student 48; num_layers: teacher 4, student 3\)"):
        run_distill(cfg)
    assert not (tmp_path / "run" / "tiny.safetensors").exists()


def test_existing_run_needs_resume(world, tmp_path):
    cfg = tiny_cfg(world, tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text('{"stage": "stage1", "step": 10, "loss": 0.5}\n')
    with pytest.raises(ConfigError, match="already holds a run .*pass --resume"):
        run_distill(cfg)


def test_resume_with_a_changed_config_is_refused(world, tmp_path):
    cfg = tiny_cfg(world, tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(to_yaml(cfg))
    cfg.stage1.lr = 1.0
    with pytest.raises(ConfigError, match=r"--resume with a different config \(stage1.lr\)"):
        run_distill(cfg, resume=True)
