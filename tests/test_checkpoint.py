"""`tmd/1` checkpoints: round trip, atomic writes, header info, and the errors a user can hit."""

import json
import os

import pytest
import torch
from helpers_wan import make_tiny_teacher, tiny_inputs
from safetensors.torch import save_file

from tmd_core import (
    CheckpointError,
    TMDModel,
    TMDSchedule,
    load_tmd,
    make_noise,
    read_tmd_info,
    sample_tmd,
    save_tmd,
)


@pytest.fixture()
def trained_student():
    student = TMDModel.from_teacher(make_tiny_teacher(seed=3), head_blocks=2, outer_steps=1, inner_steps=4)
    with torch.no_grad():  # make every part non-trivial, as after training
        for p in student.parameters():
            p.add_(0.03 * torch.randn_like(p))
    return student


def test_round_trip_gives_identical_outputs(tmp_path, trained_student):
    path = save_tmd(trained_student, tmp_path / "s.safetensors", provenance={"stages": ["tmmf"]})
    loaded = load_tmd(path)
    _, ctx = tiny_inputs(trained_student.transformer)
    noise = make_noise((1, trained_student.config.in_channels, 3, 8, 8), seed=4)
    a = sample_tmd(trained_student, noise, ctx, TMDSchedule(2, 2))
    b = sample_tmd(loaded, noise, ctx, TMDSchedule(2, 2))
    assert torch.equal(a, b)
    assert loaded.tmd_config == trained_student.tmd_config


def test_file_layout_and_metadata(tmp_path, trained_student):
    path = save_tmd(trained_student, tmp_path / "s.safetensors", provenance={"teacher_sha256": "ab" * 32})
    info = read_tmd_info(path)
    assert info["format"] == "tmd/1"
    assert set(info["parameters"]) == {"transformer", "fusion", "emb_gap"}
    assert (info["num_layers"], info["head_blocks"]) == (4, 2)
    assert info["tmd_config"]["inner_steps"] == 4
    assert info["provenance"]["teacher_sha256"] == "ab" * 32 and info["provenance"]["version"]
    assert info["transformer_config"]["num_layers"] == 4


def test_load_keeps_dtype_unless_asked(tmp_path, trained_student):
    path = save_tmd(trained_student.to(torch.bfloat16), tmp_path / "bf16.safetensors")
    assert load_tmd(path).fusion.fc1.weight.dtype == torch.bfloat16
    assert load_tmd(path, dtype=torch.float32).fusion.fc1.weight.dtype == torch.float32


def test_save_is_atomic(tmp_path, trained_student, monkeypatch):
    path = tmp_path / "s.safetensors"
    save_tmd(trained_student, path)
    before = path.read_bytes()
    import tmd_core.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_tmd(trained_student, path)
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # no temporary file left


def test_plain_wan_file_is_refused_with_advice(tmp_path):
    teacher = make_tiny_teacher(seed=0)
    path = tmp_path / "wan.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="plain Wan transformer, not a TMD checkpoint"):
        load_tmd(path)


def test_unknown_format_and_foreign_file(tmp_path):
    a = tmp_path / "future.safetensors"
    save_file({"x": torch.zeros(1)}, str(a), metadata={"format": "tmd/9"})
    with pytest.raises(CheckpointError, match="format 'tmd/9'.*reads 'tmd/1'"):
        load_tmd(a)
    b = tmp_path / "sd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(b))
    with pytest.raises(CheckpointError, match="not a TMD checkpoint"):
        read_tmd_info(b)


def test_truncated_and_missing_files(tmp_path, trained_student):
    path = save_tmd(trained_student, tmp_path / "s.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_tmd(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(100))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_tmd(junk)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_tmd(tmp_path / "nope.safetensors")


def test_broken_metadata(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"transformer.x": torch.zeros(1)}, str(path), metadata={"format": "tmd/1", "tmd_config": json.dumps({"num_layers": 4}), "transformer_config": "{}"})
    with pytest.raises(CheckpointError, match="bad.safetensors: its tmd_config metadata lacks head_blocks"):
        load_tmd(path)


def test_saved_checkpoint_is_readable_by_others(tmp_path, trained_student):
    old = os.umask(0o022)
    try:
        path = save_tmd(trained_student, tmp_path / "s.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
