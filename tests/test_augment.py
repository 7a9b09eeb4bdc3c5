"""DataSet/synth/augment.py: the degradations the measuring classifiers are fit on."""
import numpy as np

from DataSet.synth.augment import degrade, with_degraded, with_noise


def _tone(n=16000, sr=16000):
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)


def test_noise_is_at_the_asked_snr_and_seeded():
    x = _tone()
    for snr in (15.0, 30.0):
        y = with_noise([x], 16000, snr)[0]
        got = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
        assert abs(got - snr) < 0.3, (snr, got)
    a = degrade(x, np.random.default_rng(3), 16000)
    b = degrade(x, np.random.default_rng(3), 16000)
    assert np.array_equal(a, b) and not np.array_equal(a, x) and a.dtype == np.float32


def test_lowpass_removes_the_highs():
    sr = 16000
    t = np.arange(sr) / sr
    x = (np.sin(2 * np.pi * 300 * t) + np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    y = degrade(x, np.random.default_rng(0), sr, snr_db=(80, 80), lowpass_hz=(2000, 2000), p_lowpass=1.0)
    spec = np.abs(np.fft.rfft(y))
    assert spec[6000] < 0.01 * spec[300]


def test_with_degraded_keeps_the_clean_clips_first():
    waves, labels = with_degraded([_tone(), _tone() * 0.5], ["a", "b"], 16000, copies=2)
    assert len(waves) == 6 and labels == ["a", "b"] * 3
    assert np.array_equal(waves[0], _tone()) and not np.array_equal(waves[2], _tone())
