"""Bootstrap intervals over prompts, paired differences and the across-seed spread (tmd_core.toy.stats)."""

import math

import pytest
import torch

from tmd_core.errors import InputError
from tmd_core.toy.stats import (
    BOOTSTRAP_SAMPLES,
    bootstrap_mean,
    bootstrap_ratio,
    group_totals,
    paired_bootstrap,
    resample_weights,
    seed_spread,
    t_quantile,
)


def test_resampling_is_fixed_and_draws_whole_groups():
    w = resample_weights(10, 50, seed=3)
    assert w.shape == (50, 10) and torch.equal(w, resample_weights(10, 50, seed=3))
    assert (w.sum(1) == 10).all()
    assert not torch.equal(w, resample_weights(10, 50, seed=4))
    sums, counts = group_totals([1.0, None, 2.0, 4.0], ["a", "a", "b", "b"])
    assert sums.tolist() == [1.0, 6.0] and counts.tolist() == [1.0, 2.0]


def test_a_constant_score_has_a_collapsed_interval():
    ci = bootstrap_mean([1.0] * 12, groups=[i // 4 for i in range(12)])
    assert (ci.mean, ci.lo, ci.hi, ci.n) == (1.0, 1.0, 1.0, 3)
    assert bootstrap_mean([0.5, None, 0.5]).as_list() == [0.5, 0.5]


def test_interval_covers_the_mean_and_is_wider_when_clips_of_a_prompt_agree():
    g = torch.Generator().manual_seed(0)
    prompt_effect = torch.randn(40, generator=g).repeat_interleave(4)  # 40 prompts × 4 clips
    values = (prompt_effect + 0.1 * torch.randn(160, generator=g)).tolist()
    groups = [i // 4 for i in range(160)]
    clustered = bootstrap_mean(values, groups)
    naive = bootstrap_mean(values)  # pretends the 160 clips are independent
    assert clustered.lo < clustered.mean < clustered.hi
    assert (clustered.hi - clustered.lo) > 1.5 * (naive.hi - naive.lo)
    # ≈ mean ± 1.96 · sd / √40 for the prompt means
    se = torch.tensor(values).view(40, 4).mean(1).std().item() / math.sqrt(40)
    assert clustered.hi - clustered.lo == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_ratio_of_sums():
    ci = bootstrap_ratio([2.0, 3.0, 0.0], [2.0, 3.0, 0.0])
    assert (ci.mean, ci.lo, ci.hi) == (1.0, 1.0, 1.0)
    assert bootstrap_ratio([1.0, 3.0], [2.0, 2.0]).mean == 1.0


def test_paired_difference_excludes_zero_only_for_a_real_difference():
    g = torch.Generator().manual_seed(1)
    groups = [i // 4 for i in range(96)]
    a = torch.rand(96, generator=g)
    better = paired_bootstrap((a + 0.1).tolist(), a.tolist(), groups)
    assert better.mean == pytest.approx(0.1) and better.excludes_zero and better.n == 24
    same = paired_bootstrap(a.tolist(), a.tolist(), groups)
    assert same.as_list() == [0.0, 0.0] and not same.excludes_zero
    noise = paired_bootstrap(torch.rand(96, generator=g).tolist(), torch.rand(96, generator=g).tolist(), groups)
    assert noise.lo < 0 < noise.hi and not noise.excludes_zero
    with pytest.raises(InputError, match="equal lengths"):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_seed_spread_uses_student_t():
    s = seed_spread([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["n"] == 3
    assert s["hi"] - s["mean"] == pytest.approx(4.303 / math.sqrt(3), abs=1e-6)
    assert seed_spread([0.5])["std"] is None
    assert t_quantile(2) == 4.303 and t_quantile(200) == 1.96
    assert 2.086 > t_quantile(22) > 2.060
    assert BOOTSTRAP_SAMPLES == 2000
