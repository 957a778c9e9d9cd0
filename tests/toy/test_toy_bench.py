import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from tmd_core.errors import InputError
from tmd_core.toy.bench import (
    bench_real,
    benchmark_prompts,
    benchmark_set,
    format_table,
    score_clips,
    write_json,
)
from tmd_core.toy.measure import measure_clips
from tmd_core.toy.world import COLOURS, SHAPES, Prompt, is_held_out, render_batch


@pytest.fixture(scope="module")
def real():
    pairs = benchmark_set()
    prompts, seeds = [p for p, _ in pairs], [s for _, s in pairs]
    return render_batch(prompts, seeds), prompts, seeds


def paint(colour, shape, x0, y0, vx, vy, side=10, frames=8, size=32):
    """A hand-painted clip with hard (aliased) edges, not made by the renderer."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    clip = -torch.ones(3, frames, size, size)
    rgb = torch.tensor(COLOURS[colour]) * 2 - 1
    for t in range(frames):
        dx, dy, h = xs - (x0 + vx * t), ys - (y0 + vy * t), side / 2
        inside = {"square": (dx.abs() <= h) & (dy.abs() <= h), "circle": dx**2 + dy**2 <= h * h,
                  "triangle": (dy <= h) & (dx.abs() <= (dy + h) / 2),
                  "cross": ((dx.abs() <= h / 3) & (dy.abs() <= h)) | ((dy.abs() <= h / 3) & (dx.abs() <= h))}[shape]
        clip[:, t][:, inside] = rgb.view(3, 1)
    return clip


def blur(clips, sigma):
    k = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-k**2 / (2 * sigma**2))
    k = k / k.sum()
    n, c, f, h, w = clips.shape
    x = F.pad(clips.transpose(1, 2).reshape(-1, 1, h, w), (3, 3, 3, 3), mode="replicate")
    x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, 7)), k.view(1, 1, 7, 1))
    return x.view(n, f, c, h, w).transpose(1, 2)


def test_benchmark_set_is_fixed_and_balanced():
    pairs = benchmark_set()
    assert len(pairs) == 96 and pairs == benchmark_set()
    prompts = benchmark_prompts()
    assert len(set(prompts)) == 24 and sum(map(is_held_out, prompts)) == 12
    assert {p.colour for p in prompts} == set(COLOURS) and {p.shape for p in prompts} == set(SHAPES)
    assert {p.direction for p in prompts} == {"left", "right", "up", "down", "still"}


def test_real_clips_score_full_adherence_and_high_quality(real):
    res = bench_real()
    assert res["clips"] == 96
    for key in ("colour", "shape", "direction", "speed", "adherence", "all_correct", "adherence_held_out", "diversity"):
        assert res[key] == 1.0, key
    assert res["background"] == 1.0
    assert res["sharpness"] > 0.9 and res["temporal"] > 0.95 and res["overall"] > 0.98
    assert score_clips(*real)["adherence"] == 1.0


def test_hand_painted_clips_are_read_correctly():
    cases = [("red", "square", 8, 10, 1.6, 0, "right", "fast"), ("blue", "circle", 16, 24, 0, -0.9, "up", "slow"),
             ("yellow", "triangle", 24, 12, -0.9, 0, "left", "slow"), ("cyan", "cross", 14, 8, 0, 1.8, "down", "fast"),
             ("magenta", "circle", 16, 16, 0, 0, "still", None), ("green", "cross", 20, 20, 0, 0, "still", None)]
    clips = torch.stack([paint(c, s, x, y, vx, vy) for c, s, x, y, vx, vy, _, _ in cases])
    prompts = [Prompt(c, s, d, v) for c, s, _, _, _, _, d, v in cases]
    for m, p in zip(measure_clips(clips), prompts):
        assert (m.colour, m.shape, m.direction, m.speed) == (p.colour, p.shape, p.direction, p.speed), p.text
    assert score_clips(clips, prompts)["adherence"] == 1.0


@pytest.mark.parametrize("attribute", ["colour", "shape", "direction", "speed"])
def test_wrong_attributes_are_flagged(real, attribute):
    clips, prompts, seeds = real
    others = {"colour": list(COLOURS), "shape": list(SHAPES), "direction": ["right", "left", "down", "up"],
              "speed": ["fast", "slow"]}[attribute]
    wrong = []
    for p in prompts:  # the clip shows p; the prompt asks for something else
        if p.direction == "still" and attribute in ("direction", "speed"):
            wrong.append(dataclasses.replace(p, direction="left", speed="slow"))
            continue
        value = getattr(p, attribute)
        swap = others[(others.index(value) + 1) % len(others)] if attribute != "direction" else \
            {"left": "right", "right": "left", "up": "down", "down": "up"}[value]
        wrong.append(dataclasses.replace(p, **{attribute: swap}))
    res = score_clips(clips, wrong, seeds)
    assert res[attribute] == 0.0
    assert res["adherence"] <= 0.76 and res["all_correct"] == 0.0
    unaffected = {"colour", "shape"} - {attribute}
    assert all(res[k] == 1.0 for k in unaffected)


def test_blur_lowers_sharpness_but_keeps_adherence(real):
    clips, prompts, seeds = real
    sharp = score_clips(clips, prompts, seeds)
    blurred = score_clips(blur(clips, 1.0), prompts, seeds)
    assert blurred["sharpness"] < 0.6 < sharp["sharpness"]
    assert blurred["colour"] == blurred["direction"] == 1.0
    assert blurred["quality"] < sharp["quality"] - 0.1


def test_noise_lowers_clean_background_but_keeps_adherence(real):
    clips, prompts, seeds = real
    noisy = clips + 0.1 * torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))
    res = score_clips(noisy, prompts, seeds)
    assert res["background"] < 0.6
    assert res["adherence"] == 1.0
    heavier = score_clips(clips + 0.3 * torch.randn(clips.shape, generator=torch.Generator().manual_seed(1)), prompts, seeds)
    assert heavier["background"] < res["background"]


def test_a_frozen_repeated_frame_reads_as_still(real):
    clips, prompts, seeds = real
    frozen = clips[:, :, :1].expand_as(clips)
    assert all(m.direction == "still" and m.speed is None for m in measure_clips(frozen))
    res = score_clips(frozen, prompts, seeds)
    n_still = sum(p.direction == "still" for p in prompts)
    assert res["direction"] == pytest.approx(n_still / len(prompts)) and res["speed"] == 0.0


def test_diversity_is_higher_for_varied_seeds_than_for_identical_clips(real):
    clips, prompts, seeds = real
    same = clips[::4].repeat_interleave(4, dim=0)  # every seed gives seed 0's clip
    assert score_clips(same, prompts, seeds)["diversity"] == pytest.approx(0.0, abs=1e-6)
    assert score_clips(clips, prompts, seeds)["diversity"] == 1.0
    assert score_clips(clips[::4], prompts[::4])["diversity"] is None  # one clip per prompt: not measurable


def test_empty_frames_score_zero_and_bad_input_raises(real):
    clips, prompts, seeds = real
    res = score_clips(-torch.ones_like(clips[:8]), prompts[:8], seeds[:8])
    assert res["adherence"] == 0.0 and res["temporal"] == 0.0 and res["background"] == 1.0
    with pytest.raises(InputError, match="NaN"):
        score_clips(torch.full_like(clips[:2], float("nan")), prompts[:2])
    with pytest.raises(InputError, match="one prompt"):
        score_clips(clips[:2], prompts[:3])


def test_table_and_json(tmp_path, real):
    res = score_clips(*real)
    rows = [{"name": "real data", **res}, {"name": "TMD 2×2", "nfe": 2.5, **res}]
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0] == "| name | NFE | adherence | colour | shape | direction | speed | quality | diversity | overall |"
    assert lines[2].startswith("| real data | – | 1.000 |") and lines[3].startswith("| TMD 2×2 | 2.5 | 1.000 |")
    write_json(tmp_path / "out" / "bench.json", rows, meta={"frames": 8}, per_clip=False)
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert doc["rows"][1]["nfe"] == 2.5 and "per_clip" not in doc["rows"][0]
    assert len(doc["benchmark"]["prompts"]) == 24 and doc["meta"] == {"frames": 8}
