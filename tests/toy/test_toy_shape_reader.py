"""The shape reader holds on degraded renders (blur, noise, grown/shrunk masks, rounded, wobbly, spiky edges)."""

import pytest
import torch

from tmd_core.toy.measure import (
    DEGRADATIONS,
    SHAPE_FEATURES,
    degrade_clip,
    format_shape_accuracy,
    measure_clips,
    shape_reader,
    shape_reader_accuracy,
)
from tmd_core.toy.world import SHAPES, Prompt, render_clip

# lowest per-shape accuracy measured with clips_per_shape=48 (docstring of measure.py), less a margin for the
# smaller sample this test draws
FLOOR = {"real render": 1.0, "blur σ=0.5": 1.0, "blur σ=1": 1.0, "blur σ=1.5": 0.85, "noise σ=0.1": 1.0,
         "noise σ=0.2": 1.0, "dilate 1 px": 0.85, "erode 1 px": 0.85, "rounded corners": 0.85,
         "wobbly edge": 0.375, "spiky edge": 0.75, "blobby (wobble+blur 1+noise 0.1)": 0.6}
OVERALL_FLOOR = 0.75


def test_degraded_renders_are_read_at_the_documented_accuracy():
    acc = shape_reader_accuracy(clips_per_shape=8)
    assert set(acc) == {name for name, _, _ in DEGRADATIONS} == set(FLOOR)
    for name, row in acc.items():
        assert min(row[s] for s in SHAPES) >= FLOOR[name], (name, row)
        assert row["all"] >= OVERALL_FLOOR, (name, row)
    assert acc["real render"]["all"] == 1.0
    assert format_shape_accuracy(acc).splitlines()[0].startswith("| degradation | square | circle |")


def test_the_reader_is_fixed_and_degradations_are_deterministic():
    a, b = shape_reader(), shape_reader(8, 32)
    assert a is b and a.centres.shape == (len(SHAPES), len(SHAPE_FEATURES))
    p = Prompt("cyan", "triangle", "up", "slow")
    for kind, level in (("wobble", 0.6), ("blur", 1.0), ("erode", 1.0)):
        clip = degrade_clip(p, 3, kind, level)
        assert torch.equal(clip, degrade_clip(p, 3, kind, level)) and clip.shape == (3, 8, 32, 32)
        assert not torch.equal(clip, render_clip(p, 3))


@pytest.mark.parametrize("shape", SHAPES)
def test_small_and_large_real_renders_read_right(shape):
    prompts = [Prompt("green", shape, "right", "slow"), Prompt("magenta", shape, "still")]
    clips = torch.stack([render_clip(p, s) for p in prompts for s in range(6)])
    assert all(m.shape == shape for m in measure_clips(clips))
