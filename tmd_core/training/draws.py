"""Random draws that do not depend on the number of processes (docs/design.md §7, data parallel and FSDP2).

Every process holds the same loss generator (seeded from the run's seed, not from its rank) and draws the
random tensors of the whole global batch, then keeps the rows of its own slice of the batch (the same
contiguous slice `ShardReader` gives it). So one process with batch B and N processes with B/N each make
the same draws for the same samples, and the runs agree up to float summation order; with one process
the draws are exactly those of a plain `torch.rand(B, generator=g)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextvars import ContextVar

import torch

_SPLIT: ContextVar[tuple[int, int]] = ContextVar("tmd_batch_split", default=(0, 1))


@contextlib.contextmanager
def batch_split(rank: int, world_size: int):
    """Within this block, `rows` draws for world_size x the local batch and keeps slice `rank`."""
    token = _SPLIT.set((int(rank), int(world_size)))
    try:
        yield
    finally:
        _SPLIT.reset(token)


def rows(draw: Callable[[int], torch.Tensor], local_batch: int) -> torch.Tensor:
    """`draw(n)` returns a tensor of n rows (dim 0); this process's `local_batch` rows of the global draw."""
    rank, world = _SPLIT.get()
    if world == 1:
        return draw(local_batch)
    return draw(local_batch * world)[rank * local_batch:(rank + 1) * local_batch]


_SAME_CALLS: ContextVar[bool] = ContextVar("tmd_same_calls", default=False)


@contextlib.contextmanager
def same_calls(on: bool = True):
    """Within this block, a loss that would skip a network call for lack of samples on this process (e.g. no
    sample with r < s) makes it on one stand-in sample and discards the result: FSDP2 units per block need
    every process to call every block the same number of times (each call gathers the block)."""
    token = _SAME_CALLS.set(bool(on))
    try:
        yield
    finally:
        _SAME_CALLS.reset(token)


def calls_must_match() -> bool:
    return _SAME_CALLS.get()
