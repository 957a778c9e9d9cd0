import itertools

import pytest
import torch

from tmd_core.errors import InputError
from tmd_core.toy.world import (
    COLOURS,
    MOTIONS,
    SHAPES,
    Prompt,
    all_prompts,
    coverage,
    layout,
    prompt_split,
    render_batch,
    render_clip,
    training_batch,
)


def test_every_prompt_text_parses_back():
    prompts = all_prompts()
    assert len(prompts) == len(set(prompts)) == len(COLOURS) * len(SHAPES) * len(MOTIONS) == 216
    for p in prompts:
        assert Prompt.parse(p.text) == p
    assert Prompt.parse("A Red circle, moving LEFT fast.") == Prompt("red", "circle", "left", "fast")
    assert all_prompts()[0].text == "a red square moving left slow"


@pytest.mark.parametrize("text, fragment", [
    ("a circle moving left fast", "no colour"),
    ("a red blob moving left fast", "no shape"),
    ("a red circle", "no direction"),
    ("a red circle moving left", "no speed"),
    ("a red blue circle moving left fast", "more than one colour"),
])
def test_parse_errors_say_what_is_missing(text, fragment):
    with pytest.raises(InputError, match=fragment):
        Prompt.parse(text)


def test_prompt_rejects_impossible_attributes():
    with pytest.raises(InputError, match="unknown colour"):
        Prompt("purple", "circle", "left", "fast")
    with pytest.raises(InputError, match="no speed"):
        Prompt("red", "circle", "still", "fast")
    with pytest.raises(InputError, match="needs a speed"):
        Prompt("red", "circle", "left")


def test_split_holds_out_combinations_but_every_attribute_pair_is_trained():
    train, test = prompt_split("train"), prompt_split("test")
    assert len(train) == 192 and len(test) == 24 and not set(train) & set(test)
    for a, b in itertools.combinations(("colour", "shape", "motion"), 2):
        def key(p, a=a, b=b):
            get = {"colour": p.colour, "shape": p.shape, "motion": (p.direction, p.speed)}
            return get[a], get[b]
        assert {key(p) for p in train} == {key(p) for p in all_prompts()}, (a, b)
    with pytest.raises(InputError, match="unknown split"):
        prompt_split("val")


def test_render_is_deterministic_per_seed_and_varies_across_seeds():
    p = Prompt("green", "triangle", "up", "slow")
    a, b, c = render_clip(p, 7), render_clip(p.text, 7), render_clip(p, 8)
    assert a.shape == (3, 8, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() == -1 and a.max() == 1
    assert torch.all(a[0] == -1) and torch.all(a[2] == -1)  # pure green on black


@pytest.mark.parametrize("direction, speed", [m for m in MOTIONS])
def test_objects_move_as_told_and_stay_inside(direction, speed):
    p = Prompt("red", "square", direction, speed)
    for seed in range(5):
        lay = layout(p, seed)
        alpha = coverage("square", lay, 8, 32)
        assert torch.allclose(alpha.sum((1, 2)), torch.full((8,), lay.side**2), rtol=1e-4)  # fully inside, no flicker
        assert alpha[:, 0].sum() == 0 and alpha[:, -1].sum() == 0 and alpha[:, :, 0].sum() == 0 and alpha[:, :, -1].sum() == 0
        ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
        cx = (alpha * xs).sum((1, 2)) / alpha.sum((1, 2))
        cy = (alpha * ys).sum((1, 2)) / alpha.sum((1, 2))
        travel = {"slow": 0.2 * 32, "fast": 0.4 * 32, None: 0.0}[speed]
        ux, uy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}[direction]
        assert float(cx[-1] - cx[0]) == pytest.approx(ux * travel, abs=0.02)
        assert float(cy[-1] - cy[0]) == pytest.approx(uy * travel, abs=0.02)


def test_batches_are_reproducible():
    clips, prompts = training_batch(6, seed=3, split="test")
    clips2, prompts2 = training_batch(6, seed=3, split="test")
    assert clips.shape == (6, 3, 8, 32, 32) and torch.equal(clips, clips2) and prompts == prompts2
    assert set(prompts) <= set(prompt_split("test"))
    assert torch.equal(render_batch(prompts[:2], [1, 2]), torch.stack([render_clip(prompts[0], 1), render_clip(prompts[1], 2)]))
    with pytest.raises(InputError, match="one seed per prompt"):
        render_batch(prompts, [1])
