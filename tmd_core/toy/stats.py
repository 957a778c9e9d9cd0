"""Uncertainty of ToyBench scores: bootstrap over prompts, paired bootstrap of a difference between two
methods, and the spread of a figure across training seeds.

ToyBench's unit of sampling is the prompt: the 4 clips of one prompt share its difficulty, so they are
resampled together (a cluster bootstrap). Every function is deterministic (fixed generator seed).

    from tmd_core.toy.stats import bootstrap_mean, paired_bootstrap, seed_spread
    bootstrap_mean(per_clip_scores, groups=prompt_texts)        # Interval(mean, lo, hi, n)
    paired_bootstrap(scores_a, scores_b, groups=prompt_texts)   # difference A − B; .excludes_zero
    seed_spread([0.898, 0.909, 0.903])                          # mean, sample std, t-based 95 % CI

Claim "A > B beyond the interval" only when the paired interval of A − B excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 20240601
LEVEL = 0.95

# two-sided 95 % quantiles of Student's t (scipy is not a dependency): t_{0.975, df}
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval.

    Attributes:
        mean: the estimate on the data as given.
        lo, hi: interval bounds (percentile bootstrap or t-based).
        n: number of independent units behind it (prompts, or training seeds).
    """

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def as_list(self) -> list[float]:
        return [self.lo, self.hi]

    def to_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def _group_index(groups: Sequence | None, n: int) -> tuple[torch.Tensor, int]:
    """Integer group id of every item (first-appearance order) and the number of groups."""
    if groups is None:
        return torch.arange(n), n
    if len(groups) != n:
        raise InputError(f"got {n} values but {len(groups)} group labels: give one label per value")
    ids: dict = {}
    return torch.tensor([ids.setdefault(g, len(ids)) for g in groups], dtype=torch.long), len(ids)


def group_totals(values: Sequence[float | None], groups: Sequence | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group sum and count of the values that are not None: (Tensor[G], Tensor[G]) float64."""
    idx, g = _group_index(groups, len(values))
    keep = torch.tensor([v is not None for v in values], dtype=torch.bool)
    vals = torch.tensor([0.0 if v is None else float(v) for v in values], dtype=torch.float64)
    sums = torch.zeros(g, dtype=torch.float64).index_add_(0, idx, vals * keep)
    counts = torch.zeros(g, dtype=torch.float64).index_add_(0, idx, keep.double())
    return sums, counts


def resample_weights(n_groups: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> torch.Tensor:
    """How often each group is drawn in each bootstrap resample: Tensor[samples, n_groups] float64.

    Drawing n_groups groups with replacement; the same (n_groups, samples, seed) always gives the same draws.
    """
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(n_groups, (samples, n_groups), generator=g)
    return torch.zeros(samples, n_groups, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(samples, n_groups, dtype=torch.float64))


def bootstrap(statistic: Callable[[torch.Tensor], torch.Tensor], n_groups: int, samples: int = BOOTSTRAP_SAMPLES,
              seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> Interval:
    """Percentile bootstrap of any statistic of per-group data.

    Args:
        statistic: maps group weights Tensor[B, G] (how often each group is in a resample; all ones is
            the data as given) to the statistic of each resample, Tensor[B] (NaN where undefined).
        n_groups: G.
    Returns:
        Interval with mean = statistic(ones) and the (1 − level)/2, (1 + level)/2 quantiles of the
        resampled statistics (NaNs ignored).
    """
    if n_groups == 0:
        raise InputError("nothing to bootstrap: no groups with a value")
    point = float(statistic(torch.ones(1, n_groups, dtype=torch.float64))[0])
    stats = statistic(resample_weights(n_groups, samples, seed))
    stats = stats[~torch.isnan(stats)]
    if math.isnan(point) or len(stats) == 0:
        return Interval(point, float("nan"), float("nan"), n_groups)
    q = torch.quantile(stats, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return Interval(point, float(q[0]), float(q[1]), n_groups)


def ratio_statistic(num: torch.Tensor, den: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Statistic Σ w·num / Σ w·den over groups (a mean when num are sums and den counts); NaN if Σ w·den = 0."""
    def stat(w: torch.Tensor) -> torch.Tensor:
        d = w @ den
        return torch.where(d > 0, (w @ num) / torch.where(d > 0, d, 1.0), float("nan"))
    return stat


def bootstrap_mean(values: Sequence[float | None], groups: Sequence | None = None, **kw) -> Interval:
    """Mean of per-item values (None skipped) with a bootstrap CI resampling whole groups.

    Args:
        values: one number per clip (or per prompt when groups is None).
        groups: the prompt of each clip: its clips are resampled together.
        **kw: samples, seed, level of `bootstrap`.
    """
    sums, counts = group_totals(values, groups)
    keep = counts > 0
    return bootstrap(ratio_statistic(sums[keep], counts[keep]), int(keep.sum()), **kw)


def bootstrap_ratio(num: Sequence[float], den: Sequence[float], groups: Sequence | None = None, **kw) -> Interval:
    """Σ num / Σ den with a bootstrap CI resampling whole groups (e.g. diversity: spread / real spread)."""
    if len(num) != len(den):
        raise InputError(f"got {len(num)} numerators but {len(den)} denominators")
    n_sum, _ = group_totals(list(num), groups)
    d_sum, _ = group_totals(list(den), groups)
    return bootstrap(ratio_statistic(n_sum, d_sum), len(n_sum), **kw)


def paired_bootstrap(a: Sequence[float | None], b: Sequence[float | None], groups: Sequence | None = None,
                     **kw) -> Interval:
    """Mean difference A − B over items scored by both (same prompt and seed), CI resampling whole groups.

    Args:
        a, b: per-item scores of two methods, aligned (item i of both is the same prompt and seed);
            items where either is None are skipped.
        groups: the prompt of each item.
    Returns:
        Interval of the mean of a − b; `.excludes_zero` says whether the difference is beyond the interval.
    """
    if len(a) != len(b):
        raise InputError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    diff = [None if x is None or y is None else float(x) - float(y) for x, y in zip(a, b)]
    return bootstrap_mean(diff, groups, **kw)


def t_quantile(df: int, level: float = LEVEL) -> float:
    """Two-sided Student-t quantile t_{(1+level)/2, df} (95 % only, from a table; ≥ 120 df uses 1.96)."""
    if abs(level - 0.95) > 1e-9:
        raise InputError(f"only the 95 % t quantile is tabulated (got level={level})")
    if df < 1:
        raise InputError("a t interval needs at least 2 values")
    if df in _T975:
        return _T975[df]
    if df > 120:
        return 1.960
    lo = max(k for k in _T975 if k < df)
    hi = min(k for k in _T975 if k > df)
    # interpolate linearly in 1/df, the way t tables are meant to be read
    w = (1 / lo - 1 / df) / (1 / lo - 1 / hi)
    return _T975[lo] + w * (_T975[hi] - _T975[lo])


def seed_spread(values: Sequence[float], level: float = LEVEL) -> dict:
    """Spread of one figure across independent runs (e.g. 3 training seeds).

    Returns:
        {"mean", "std" (sample, n − 1), "lo", "hi" (mean ∓ t·std/√n), "n", "values"}; with one value std and
        the interval are None.
    """
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise InputError("seed_spread needs at least one value")
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "std": None, "lo": None, "hi": None, "n": 1, "values": vals}
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile(n - 1, level) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "lo": mean - half, "hi": mean + half, "n": n, "values": vals}


__all__ = ["BOOTSTRAP_SAMPLES", "BOOTSTRAP_SEED", "Interval", "bootstrap", "bootstrap_mean", "bootstrap_ratio",
           "group_totals", "paired_bootstrap", "ratio_statistic", "resample_weights", "seed_spread", "t_quantile"]
