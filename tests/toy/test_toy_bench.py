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
    compare,
    format_comparison,
    format_table,
    score_clips,
    true_speed_px,
    write_json,
)
from tmd_core.toy.measure import measure_clips
from tmd_core.toy.world import (
    COLOURS,
    MOTIONS,
    SHAPES,
    Layout,
    Prompt,
    coverage,
    is_held_out,
    prompt_split,
    render_batch,
)


@pytest.fixture(scope="module")
def full():
    """All 192 real renders of the benchmark set and their scores (computed once)."""
    pairs = benchmark_set()
    prompts, seeds = [p for p, _ in pairs], [s for _, s in pairs]
    return render_batch(prompts, seeds), prompts, seeds, bench_real()


@pytest.fixture(scope="module")
def real(full):
    """A 48-clip slice (every 4th benchmark prompt × 4 seeds: every colour, shape and held-out status) for
    the tests that score many variants: fast."""
    clips, prompts, seeds, _ = full
    keep = [i for i in range(len(prompts)) if (i // 4) % 4 == 0]
    return clips[keep], [prompts[i] for i in keep], [seeds[i] for i in keep]


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
    assert len(pairs) == 192 and pairs == benchmark_set()
    prompts = benchmark_prompts()
    assert len(set(prompts)) == 48
    assert set(p for p in prompts if is_held_out(p)) == set(prompt_split("test"))  # every held-out prompt
    assert sum(map(is_held_out, prompts)) == 24
    assert all(sum(p.colour == c for p in prompts) == 8 for c in COLOURS)
    assert all(sum(p.shape == s for p in prompts) == 12 for s in SHAPES)
    motions = [(p.direction, p.speed) for p in prompts]
    assert all(5 <= motions.count(m) <= 6 for m in MOTIONS)
    assert [s for _, s in pairs[:4]] == [0, 1, 2, 3] and [s for _, s in pairs if s == 0] == [0] * 48


def test_real_clips_score_full_adherence_and_diversity_and_the_intervals_collapse(full, real):
    res = full[3]
    assert res["clips"] == 192 and res["prompts"] == 48
    for key in ("colour", "shape", "direction", "speed", "adherence", "all_correct", "adherence_held_out",
                "adherence_trained", "diversity"):
        assert res[key] == 1.0, key
    assert res["adherence_ci"] == [1.0, 1.0] and res["diversity_ci"] == [1.0, 1.0]
    assert res["diversity_prompts"] == 48
    assert res["background"] == 1.0 and res["background_std"] == 0.0
    assert res["sharpness"] > 0.9 and res["temporal"] > 0.95 and res["overall"] > 0.98
    lo, hi = res["quality_ci"]
    assert lo <= res["quality"] <= hi and hi - lo < 0.02
    lo, hi = res["overall_ci"]
    assert lo <= res["overall"] <= hi and hi - lo < 0.01
    # another subset of real renders, measured in another batch: still exactly 1
    part = score_clips(*real)
    assert part["adherence"] == 1.0 and part["diversity"] == 1.0 and part["diversity_prompts"] == 12


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
    assert 0.01 < res["background_std"] < 0.05  # std 0.05 in 0-1 units, half of it clipped at black
    heavier = score_clips(clips + 0.3 * torch.randn(clips.shape, generator=torch.Generator().manual_seed(1)), prompts, seeds)
    assert heavier["background"] < res["background"] and heavier["background_std"] > res["background_std"]


def test_a_frozen_repeated_frame_reads_as_still(real):
    clips, prompts, seeds = real
    frozen = clips[:, :, :1].expand_as(clips)
    assert all(m.direction == "still" and m.speed is None for m in measure_clips(frozen))
    res = score_clips(frozen, prompts, seeds)
    n_still = sum(p.direction == "still" for p in prompts)
    assert res["direction"] == pytest.approx(n_still / len(prompts)) and res["speed"] == 0.0


def test_diversity_is_zero_for_identical_clips_and_unmeasurable_with_one_clip_per_prompt(real):
    clips, prompts, seeds = real
    same = clips[::4].repeat_interleave(4, dim=0)  # every seed gives seed 0's clip
    res = score_clips(same, prompts, seeds)
    assert res["diversity"] == 0.0 and res["diversity_ci"] == [0.0, 0.0] and res["adherence"] == 1.0
    assert res["overall"] == pytest.approx((res["adherence"] + res["quality"]) / 3)
    assert score_clips(clips[::4], prompts[::4])["diversity"] is None  # one clip per prompt: not measurable


def test_diversity_counts_only_clips_that_follow_the_prompt(real):
    clips, prompts, seeds = real
    # the clips of seeds 2 and 3 show another colour, wherever they are: they must not add spread
    wrong = [dataclasses.replace(p, colour=list(COLOURS)[(list(COLOURS).index(p.colour) + 1) % 6]) for p in prompts]
    mixed = torch.stack([c if s < 2 else render_batch([w], [s + 10])[0] for c, w, s in zip(clips, wrong, seeds)])
    res = score_clips(mixed, prompts, seeds)
    first_two = [i for i, s in enumerate(seeds) if s < 2]
    only_good = score_clips(clips[first_two], [prompts[i] for i in first_two], [seeds[i] for i in first_two])
    assert res["diversity"] == only_good["diversity"] == 1.0 and res["diversity_prompts"] == 12
    assert res["all_correct"] == 0.5
    # every clip fails (a spread-out render of another prompt): diversity 0, no prompt counted
    failed = score_clips(render_batch(wrong, [s + 10 for s in seeds]), prompts, seeds)
    assert failed["diversity"] == 0.0 and failed["diversity_prompts"] == 0 and failed["colour"] == 0.0


def test_diversity_is_not_capped_but_overall_caps_it(real):
    clips, prompts, seeds = real
    # the renders of seeds 0-3, standing for seeds 0, 5, 10, 15 (whose real renders are less spread out)
    res = score_clips(clips, prompts, [s * 5 for s in seeds])
    assert res["adherence"] == 1.0 and res["diversity"] > 1.4 and res["diversity_ci"][0] > 1.3
    assert res["overall"] == pytest.approx((res["adherence"] + res["quality"] + 1.0) / 3)


def test_paired_bootstrap_separates_a_better_method_and_not_identical_ones(real):
    clips, prompts, seeds = real
    good = score_clips(clips, prompts, seeds)
    worse_clips = clips.clone()
    for i, p in enumerate(prompts):
        if i % 8 < 4 and p.direction != "still":  # half the prompts frozen: direction and speed wrong
            worse_clips[i] = clips[i, :, :1].expand_as(clips[i])
    worse = score_clips(worse_clips, prompts, seeds)
    d = compare(good, worse, "adherence")
    assert d.mean > 0.1 and d.excludes_zero and d.n == 12
    assert d.mean == pytest.approx(good["adherence"] - worse["adherence"])
    assert compare(good, worse, "overall").excludes_zero
    same = compare(good, good, "overall")
    assert same.mean == 0.0 and not same.excludes_zero
    table = format_comparison({"name": "A", **good}, {"name": "B", **worse})
    assert table.splitlines()[0].startswith("| A − B |") and "| adherence | +" in table


def paint_layout(prompt, lay, frames=8, size=32):
    """A clip of `prompt`'s colour and shape drawn by the renderer along a chosen (wrong or right) path."""
    alpha = coverage(prompt.shape, lay, frames, size)
    return (torch.tensor(COLOURS[prompt.colour]).view(3, 1, 1, 1) * alpha.unsqueeze(0)) * 2 - 1


def test_speed_error_in_pixels(full):
    res = full[3]
    assert res["speed_error_px"] < 0.005 and abs(res["speed_bias_px"]) < 0.005  # real renders
    assert true_speed_px(Prompt("red", "square", "left", "slow")) == pytest.approx(0.2 * 32 / 7)
    assert true_speed_px(Prompt("red", "square", "left", "fast")) == pytest.approx(1.8286, abs=1e-4)
    prompts = [Prompt("red", "square", "right", "fast"), Prompt("blue", "cross", "down", "slow"),
               Prompt("green", "square", "left", "fast")]
    clips = torch.stack([paint_layout(prompts[0], Layout(10, 8, 12, 1.2, 0)),  # too slow by 0.629 px/frame
                         paint_layout(prompts[1], Layout(10, 16, 7, 0, 1.2)),  # too fast by 0.286
                         paint_layout(prompts[2], Layout(10, 9, 16, 1.2, 0))])  # wrong direction: not counted
    res = score_clips(clips, prompts, [0, 0, 0])
    fast_err, slow_err = 1.2 - 0.4 * 32 / 7, 1.2 - 0.2 * 32 / 7
    assert res["speed_error_px_fast"] == pytest.approx(abs(fast_err), abs=2e-3)
    assert res["speed_bias_px_slow"] == pytest.approx(slow_err, abs=2e-3)
    assert res["speed_error_px"] == pytest.approx((abs(fast_err) + abs(slow_err)) / 2, abs=2e-3)
    assert res["speed_bias_px"] == pytest.approx((fast_err + slow_err) / 2, abs=2e-3)
    assert [r["speed_error_px"] is None for r in res["per_clip"]] == [False, False, True]


def test_empty_frames_score_zero_and_bad_input_raises(real):
    clips, prompts, seeds = real
    res = score_clips(-torch.ones_like(clips[:8]), prompts[:8], seeds[:8])
    assert res["adherence"] == 0.0 and res["temporal"] == 0.0 and res["background"] == 1.0
    with pytest.raises(InputError, match="NaN"):
        score_clips(torch.full_like(clips[:2], float("nan")), prompts[:2])
    with pytest.raises(InputError, match="one prompt"):
        score_clips(clips[:2], prompts[:3])


def test_white_or_in_between_colours_read_as_no_colour(real):
    clips, prompts, seeds = real
    white = clips.amax(1, keepdim=True).expand_as(clips)  # every object drawn white
    assert all(m.colour is None for m in measure_clips(white[:8]))
    orange = clips[:1].clone()
    orange[:, 1] = torch.where(orange[:, 0] > -1, 0.0, -1.0)  # red + half green: between red and yellow
    assert measure_clips(orange)[0].colour is None


def test_table_and_json(tmp_path, full):
    res = full[3]
    rows = [{"name": "real data", **res}, {"name": "TMD 2×2", "nfe": 2.5, **res}]
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0] == ("| name | NFE | adherence | colour | shape | direction | speed | speed err (px/frame) | quality "
                        "| diversity | div. prompts | overall |")
    assert lines[2].startswith("| real data | – | 1.000 [1.00, 1.00] | 1.000 |")
    assert lines[3].startswith("| TMD 2×2 | 2.5 | 1.000 [1.00, 1.00] |") and "| 0.001 |" in lines[3]
    assert "| 1.000 [1.00, 1.00] | 48 |" in lines[2]
    write_json(tmp_path / "out" / "bench.json", rows, meta={"frames": 8}, per_clip=False)
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert doc["rows"][1]["nfe"] == 2.5 and "per_clip" not in doc["rows"][0]
    assert doc["rows"][0]["adherence_ci"] == [1.0, 1.0]
    assert len(doc["benchmark"]["prompts"]) == 48 and doc["meta"] == {"frames": 8}
