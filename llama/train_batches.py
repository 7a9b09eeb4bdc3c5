"""Which samples go into which batch, per epoch and process.

Plain: a seeded permutation cut into batches (modalities and lengths mixed at random).
Length-grouped (`--group-by-length`, HF's LengthGroupedSampler idea): the permutation is cut into
windows of `GROUP_WINDOW` batches, each window sorted by token count and cut into batches, and
the batch order shuffled again; batches still mix modalities, but little of each is padding.
Either way the batches are dealt round robin to the processes, the last round topped up from the
start so every process steps equally (no sample is left out).
"""
from __future__ import annotations

import torch

GROUP_WINDOW = 50        # batches per sorting window


def _deal(batches: list[list[int]], n_procs: int, rank: int) -> list[list[int]]:
    while len(batches) % n_procs:
        batches.append(batches[len(batches) % max(1, len(batches) - 1)])
    return batches[rank::n_procs]


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, n_procs: int, rank: int,
                  lengths: list[int] | None = None) -> list[list[int]]:
    """This process's batches (sample indices) for an epoch; `lengths` groups by length."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    if lengths is None:
        batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        return _deal(batches, n_procs, rank)
    window = batch_size * GROUP_WINDOW
    batches = []
    for w in range(0, n, window):
        part = sorted(order[w:w + window], key=lambda i: -lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    shuffled = torch.randperm(len(batches), generator=g).tolist()
    return _deal([batches[i] for i in shuffled], n_procs, rank)


def padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    """Share of the batch tensors' token slots that are padding."""
    slots = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / max(1, slots)
