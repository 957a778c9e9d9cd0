"""The shipped toy world: checkpoints load, generate deterministically, fit the size budget; the demo writes a video."""

import imageio.v2 as imageio
import torch

from tmd_core import load_teacher, load_tmd, make_noise, read_tmd_info, sample_dmd, sample_tmd
from tmd_core.schedule import TMDSchedule
from tmd_core.toy.codec import decode_latents
from tmd_core.toy.demo import run_demo
from tmd_core.toy.evaluate import LATENT_SHAPE
from tmd_core.toy.shipped import ASSETS, asset
from tmd_core.toy.text import ToyTextEncoder

NAMES = ("toy_vae", "toy_teacher", "toy_tmd", "toy_dmd2v")


def test_shipped_checkpoints_exist_and_fit_the_budget():
    sizes = {n: asset(n).stat().st_size for n in NAMES}
    assert sum(sizes.values()) <= 20 * 2**20, sizes
    info = read_tmd_info(asset("toy_tmd"))
    assert info["provenance"]["stages"] and info["num_layers"] == 12
    assert info["tmd_config"]["inner_velocity"] == "(y_s-head)/s"


def test_the_shipped_flow_head_uses_its_inner_noise():
    """With the outer noise fixed, other inner noises y1 move the object (docs/toy_world.md §5: a flow head that
    ignores y1 is a deterministic transition, DMD with extra steps). A few prompts; ToyBench measures it fully."""
    from tmd_core.toy.evaluate import tmd_sample_fn
    from tmd_core.toy.spread import noise_spread

    student = load_tmd(asset("toy_tmd"), dtype=torch.float32)
    res = noise_spread(tmd_sample_fn(student, TMDSchedule(2, 2, outer_shift=student.tmd_config.schedule.outer_shift,
                                                          inner_shift=student.tmd_config.schedule.inner_shift)),
                       ["a red square moving left slow", "a blue circle moving up fast", "a green cross standing still"],
                       outer_seeds=(0, 1, 2), inner_draws=3)
    assert res["inner"] > 0.2 * res["outer"] > 0, res


def test_shipped_student_generates_deterministically():
    student = load_tmd(asset("toy_tmd"), dtype=torch.float32)
    ctx = ToyTextEncoder().encode(["a red circle moving left fast", "a blue square standing still"])
    noise = torch.cat([make_noise((1, *LATENT_SHAPE), seed=s) for s in (0, 1)])
    a = sample_tmd(student, noise, ctx, TMDSchedule(2, 2, outer_shift=student.tmd_config.schedule.outer_shift))
    b = sample_tmd(student, noise.clone(), ctx, TMDSchedule(2, 2, outer_shift=student.tmd_config.schedule.outer_shift))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    clips = decode_latents(a)
    assert clips.shape == (2, 3, 8, 32, 32) and clips.min() >= -1 and clips.max() <= 1
    dmd = load_teacher(asset("toy_dmd2v"), dtype=torch.float32)
    x = sample_dmd(dmd, noise, ctx, TMDSchedule(2, 1, outer_shift=student.tmd_config.schedule.outer_shift))
    assert torch.equal(x, sample_dmd(dmd, noise, ctx, TMDSchedule(2, 1, outer_shift=student.tmd_config.schedule.outer_shift)))


def test_demo_writes_a_playable_video(tmp_path):
    summary = run_demo(tmp_path, prompts=("a green triangle moving up fast",), plot=False)
    mp4 = next(f for f in summary["files"] if f.endswith(".mp4"))
    frames = imageio.mimread(mp4)
    assert len(frames) == 8 and frames[0].ndim == 3
    assert summary["tmd_effective_nfe"] < 3 and summary["speedup"] > 1
    assert (ASSETS / "toy_teacher.config.json").exists()


def test_the_shipped_teacher_uses_every_word_of_the_prompt():
    """Swapping the colour, shape, direction or speed word costs the teacher loss where that word decides the
    clip (README "Toy world": the first teacher, one latent frame per frame, ignored direction and speed)."""
    from tmd_core.toy.probe import word_sensitivity

    sens = word_sensitivity(load_teacher(asset("toy_teacher"), dtype=torch.float32), times=(0.9, 0.98), batch_size=32)
    for word in ("colour", "shape", "direction", "speed"):
        assert max(sens[word]) > 0.01, (word, sens)


def test_shipped_files_name_no_path_of_the_machine_that_trained_them():
    """Provenance names installed files (retrain.install_assets), never absolute paths of the training machine."""
    import json
    import os

    from tmd_core.loading import read_safetensors_header

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    for name in NAMES:
        for key, text in read_safetensors_header(asset(name))[1].items():
            try:
                values = strings(json.loads(text))
            except ValueError:
                values = [text]
            assert not [v for v in values if os.path.isabs(v)], (name, key)
