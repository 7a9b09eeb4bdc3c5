"""Frozen-encoder features remembered for the length of a run.

The encoders never train, so a media file gives the same features at every epoch and in every
stage; computing them once per file instead of once per step is where most of a small run's time
goes. Keyed by the file's path, size and modification time, so an edited file is encoded again.
Bounded in bytes: past the budget, features are computed and not kept.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch


class FeatureMemo:
    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes, self.bytes = max_bytes, 0
        self.hits = self.misses = 0
        self._store: dict[tuple, torch.Tensor] = {}

    @staticmethod
    def key(kind: str, path: Path) -> tuple:
        st = os.stat(path)
        return kind, str(Path(path).resolve()), st.st_size, st.st_mtime_ns

    def get(self, kind: str, path: Path, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The features of `path` for encoder `kind`, computed at most once while they fit."""
        try:
            key = self.key(kind, path)
        except OSError:
            return compute()          # let the loader name the missing/unreadable file
        if key in self._store:
            self.hits += 1
            return self._store[key]
        self.misses += 1
        feats = compute()
        size = feats.numel() * feats.element_size()
        if self.bytes + size <= self.max_bytes:
            self._store[key] = feats.detach()
            self.bytes += size
        return feats
