"""Generic degradations for the world's measuring classifiers.

Why: the classifiers that read generated music back (decoder_eval's instrument and tempo
classifiers, the AST behind synth-eval's KL) were fit on clean synthetic clips only, and clean
synthetic audio is a narrow world: the MFCC instrument classifier read held-out real clips at
1.00, but at 0.60 with white noise 30 dB under the music, 0.43 at 20 dB. Any decoder's output
carries some noise, so those classifiers measured noise as much as the instrument. Fitting them
on clean clips plus copies with noise and low-pass filtering, none of it from any model, makes
them hear the instrument through the noise (`noisy_accuracy` reports how well).
"""
from __future__ import annotations

import numpy as np


def degrade(wave: np.ndarray, rng: np.random.Generator, sr: int, snr_db=(15.0, 40.0),
            lowpass_hz=(3000.0, 12000.0), p_lowpass: float = 0.5) -> np.ndarray:
    """(T,) float -> a copy with white noise at a random SNR and, with p_lowpass, a random
    8th-order Butterworth low-pass."""
    from scipy.signal import butter, sosfilt

    out = np.asarray(wave, np.float64)
    if rng.random() < p_lowpass:
        cut = min(rng.uniform(*lowpass_hz), 0.45 * sr)
        out = sosfilt(butter(8, cut, fs=sr, output="sos"), out)
    power = float(np.mean(out ** 2)) + 1e-12
    snr = rng.uniform(*snr_db)
    out = out + rng.standard_normal(len(out)) * np.sqrt(power / 10 ** (snr / 10))
    return out.astype(np.float32)


def with_degraded(waves, labels, sr: int, seed: int = 0, copies: int = 1):
    """The clips and labels, then `copies` degraded copies of each: (list of waves, labels)."""
    rng = np.random.default_rng(seed)
    waves, labels = list(waves), list(labels)
    extra = [degrade(w, rng, sr) for _ in range(copies) for w in waves]
    return waves + extra, labels + labels * copies


def with_noise(waves, sr: int, snr_db: float, seed: int = 1) -> list[np.ndarray]:
    """Every clip with white noise at exactly `snr_db` (no filter): the robustness check."""
    rng = np.random.default_rng(seed)
    return [degrade(w, rng, sr, snr_db=(snr_db, snr_db), p_lowpass=0.0) for w in waves]
