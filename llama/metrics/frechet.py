"""Frechet distance between two sets of embeddings (the FAD of the papers, on any embedding).

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})

tr((S_a S_b)^{1/2}) is the sum of the square roots of the eigenvalues of
S_a^{1/2} S_b S_a^{1/2}, a symmetric positive semi-definite matrix, so it is computed with two
symmetric eigendecompositions in float64: no complex parts to drop and no sqrtm iteration
(the scipy.linalg.sqrtm formula is the independent check in the tests).
"""
from __future__ import annotations

import numpy as np


def stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (K,) and unbiased covariance (K, K) of embeddings (N, K), N >= 2."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings of shape (N, K), got {emb.shape}")
    return emb.mean(0), np.cov(emb, rowvar=False).reshape(emb.shape[1], emb.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a                                       # (K, K), symmetric PSD
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_cross)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between embedding sets a (N, K) and b (M, K)."""
    if np.asarray(a).shape[1:] != np.asarray(b).shape[1:]:
        raise ValueError(f"embedding widths differ: {np.asarray(a).shape} vs {np.asarray(b).shape}")
    return frechet_from_stats(*stats(a), *stats(b))
