"""What a training batch needs besides tokens: frozen-encoder features and bridge targets.

Features come live (each encoder run once per file per run, `FeatureMemo`) or from an on-disk
cache built once for every epoch and stage (`llama/feature_cache.py`); both give the same
tensors, so the same loss. Bridge targets (the decoder's conditioning of a caption) are computed
once per caption.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .data.formats import Sample
from .feature_cache import KINDS, FeatureCache, build, pipeline_identities, sample_media
from .feature_memo import FeatureMemo
from .media import MediaError


class BatchFeatures:
    def __init__(self, pipe, device, scale: float, log, cache: FeatureCache | None = None):
        self.pipe, self.device, self.scale, self.log = pipe, device, scale, log
        self.cache = cache
        self.memo = FeatureMemo()                  # live path: once per media file per run
        self._bridge: dict[str, torch.Tensor] = {}

    @classmethod
    def open(cls, pipe, device, scale, log, samples: list[Sample], cache_dir: Path | None,
             build_it: bool, is_main: bool, wait) -> "BatchFeatures":
        """Live features, or a cache at cache_dir (built/updated first by the main process when
        build_it) checked to hold every media file of `samples`."""
        if cache_dir is None:
            return cls(pipe, device, scale, log)
        if build_it and is_main:
            build(pipe, samples, cache_dir, log=log)
        wait()
        media = sample_media(samples)
        ids, folders = pipeline_identities(pipe, sorted({k for k, _ in media}))
        cache = FeatureCache.open(cache_dir, ids, folders)
        cache.check(media)
        log(f"features from {cache_dir} ({len(media)} media files)")
        return cls(pipe, device, scale, log, cache)

    def _live(self, kind: str, path: Path) -> torch.Tensor:
        from .feature_cache import encode_one
        return self.memo.get(kind, path, lambda: encode_one(self.pipe, kind, path))

    def media(self, samples: list[Sample]) -> tuple[dict, list[int]]:
        """Per-sample features {modality: [tensor | None]} on the device, and the indices of
        samples whose media the encoder could not read."""
        feats = {k: [None] * len(samples) for k in KINDS}
        bad = []
        for i, s in enumerate(samples):
            try:
                for kind in KINDS:
                    path = getattr(s, kind)
                    if path is not None:
                        f = self.cache.get(kind, path) if self.cache is not None else self._live(kind, path)
                        feats[kind][i] = f.to(self.device)
            except MediaError as e:
                self.log(f"sample {s.id}: {e}")
                bad.append(i)
        return {k: v for k, v in feats.items() if any(x is not None for x in v)}, bad

    def bridge_target(self, captions: list[str]) -> torch.Tensor:
        """(G, n_queries, out_dim): scale x the decoder's own conditioning of each caption."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._bridge]
        if missing:
            cond = self.pipe.decoder().condition_text(missing)
            for c, t in zip(missing, cond):
                self._bridge[c] = (self.scale * t).float()
        return torch.stack([self._bridge[c] for c in captions]).to(self.device)
