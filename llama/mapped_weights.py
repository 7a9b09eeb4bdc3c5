"""Weights read lazily from memory-mapped files, with their pages given back after copying.

Loading a checkpoint by mapping it costs no memory until a tensor is read, but every page read
then counts in the process's RSS until the whole file is unmapped: a loader that copies
(casts, concatenates, un-permutes) each tensor into the model would hold the file's bytes and
the model at once. `MappedWeights.release` drops a tensor's pages as soon as it is copied, so
a load peaks at about the model's size plus one tensor.
"""
from __future__ import annotations

import ctypes
import mmap
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch

_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
_MADV_DONTNEED = 4


def release_pages(t: torch.Tensor) -> None:
    """Drop the resident pages of a file-mapped tensor (only whole pages inside it).

    They are clean (never written): if touched again, the kernel re-reads them from the file.
    Only for tensors mapped from a file: on anonymous memory this would zero the data.
    """
    if _LIBC is None or t.device.type != "cpu" or not t.is_contiguous():
        return
    page = mmap.PAGESIZE
    start = -(-t.data_ptr() // page) * page
    end = (t.data_ptr() + t.nbytes) // page * page
    if end > start:
        _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


class WeightSource(NamedTuple):
    file: Path                       # named in error messages
    tensors: list[torch.Tensor]      # memory-mapped, nothing read yet
    build: Callable | None = None    # tensors -> the tensor asked for; None: the one tensor as is


class MappedWeights(Mapping):
    """A state dict whose tensors are built when accessed (concatenated, un-permuted, ...).

    `release(key)` gives back the file pages that key's tensors read; callers call it once they
    hold their own copy. mapped=False: the tensors are in memory (e.g. a legacy torch save
    that cannot be mapped), release does nothing.
    """

    def __init__(self, folder: Path, entries: dict[str, WeightSource], mapped: bool = True):
        self.folder, self._entries, self.mapped = folder, entries, mapped

    def __getitem__(self, key: str) -> torch.Tensor:
        src = self._entries[key]
        return src.tensors[0] if src.build is None else src.build(src.tensors)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def file(self, key: str) -> Path:
        return self._entries[key].file

    def release(self, key: str) -> None:
        if self.mapped:
            for t in self._entries[key].tensors:
                release_pages(t)
