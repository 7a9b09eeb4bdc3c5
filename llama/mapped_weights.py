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
    shape: tuple[int, ...]           # of the tensor they make
    fill: Callable | None = None     # fill(tensors, out) writes it into `out` with no temporary
                                     # (concatenate, un-permute); None: the one tensor as is


def concat_into(tensors: list[torch.Tensor], out: torch.Tensor, dim: int) -> None:
    """`out = torch.cat(tensors, dim)`, written piece by piece."""
    start = 0
    for t in tensors:
        out.narrow(dim, start, t.shape[dim]).copy_(t)
        start += t.shape[dim]


class MappedWeights(Mapping):
    """A state dict whose tensors are made when accessed (concatenated, un-permuted, ...).

    `copy_into(key, out)` writes a tensor straight into its destination (casting), and
    `release(key)` then gives back the file pages it read. mapped=False: the tensors are in
    memory (a plain dict, a legacy torch save that cannot be mapped), release does nothing.
    """

    def __init__(self, folder: Path | str, entries: dict[str, WeightSource], mapped: bool = True):
        self.folder, self._entries, self.mapped = folder, entries, mapped

    @classmethod
    def of(cls, sd: Mapping[str, torch.Tensor], where: str = "state dict") -> "MappedWeights":
        """A plain state dict seen through this interface (nothing to release)."""
        if isinstance(sd, MappedWeights):
            return sd
        return cls(where, {k: WeightSource(Path(where), [t], tuple(t.shape)) for k, t in sd.items()}, False)

    def __getitem__(self, key: str) -> torch.Tensor:
        src = self._entries[key]
        if src.fill is None:
            return src.tensors[0]
        out = torch.empty(src.shape, dtype=src.tensors[0].dtype)
        src.fill(src.tensors, out)
        return out

    def __contains__(self, key) -> bool:          # Mapping's default would build the tensor
        return key in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def file(self, key: str) -> Path:
        return self._entries[key].file

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key].shape

    def copy_into(self, key: str, out: torch.Tensor) -> None:
        """out.copy_(self[key]), without making self[key] first."""
        src = self._entries[key]
        if src.fill is None:
            out.copy_(src.tensors[0])
        else:
            src.fill(src.tensors, out)

    def release(self, key: str) -> None:
        if self.mapped:
            for t in self._entries[key].tensors:
                release_pages(t)
