"""noise_spread: the spread of what clips show across inner-noise draws, outer-noise draws and real renders."""

import pytest

from tmd_core.errors import InputError
from tmd_core.toy.spread import noise_spread
from tmd_core.toy.world import Prompt, render_batch

PROMPTS = [Prompt("red", "circle", "left", "fast"), Prompt("blue", "square", "still")]


def ignores_inner(noise_seed, inner_seed, prompts):
    return render_batch(prompts, [noise_seed] * len(prompts))


def uses_inner(noise_seed, inner_seed, prompts):
    return render_batch(prompts, [noise_seed * 100 + (0 if inner_seed is None else inner_seed + 1)] * len(prompts))


def test_a_sampler_that_ignores_its_inner_noise_has_no_inner_spread():
    res = noise_spread(ignores_inner, PROMPTS, outer_seeds=(0, 1, 2), inner_draws=3)
    assert res["inner"] == 0.0 and res["ratio"] == 0.0 and res["agree"] == 1.0 and res["inner_correct"] == 1.0
    assert res["outer"] > 0.02
    assert res["real"] == pytest.approx(res["outer"])  # the outer draws are the real renders of those seeds
    assert [p["prompt"] for p in res["per_prompt"]] == [p.text for p in PROMPTS]


def test_a_sampler_that_uses_its_inner_noise_has_inner_spread():
    res = noise_spread(uses_inner, PROMPTS, outer_seeds=(0, 1), inner_draws=3)
    assert res["inner"] > 0.02 and res["ratio"] > 0.2 and res["agree"] == 1.0


def test_disagreeing_draws_and_bad_returns_are_reported():
    def flips_shape(noise_seed, inner_seed, prompts):
        shape = "cross" if inner_seed == 0 else None
        return render_batch([Prompt(p.colour, shape or p.shape, p.direction, p.speed) for p in prompts],
                            [noise_seed] * len(prompts))

    res = noise_spread(flips_shape, PROMPTS[:1], outer_seeds=(0,), inner_draws=4)
    assert res["agree"] == 0.75 and res["inner_correct"] == 0.75 and res["outer"] is None and res["ratio"] is None
    with pytest.raises(InputError, match="sample_fn must return"):
        noise_spread(lambda s, i, p: render_batch(p, [0] * len(p))[:1], PROMPTS, outer_seeds=(0,), inner_draws=2)
