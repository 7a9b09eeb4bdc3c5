"""Long music in overlapping windows (llama/long_music.py) on the tiny MusicGen: each window
continues the last seconds of the piece so far, the length is exact, batched rows equal rows alone,
progress covers the whole piece, and the seam measure finds a seam jump where there is one."""
import numpy as np
import pytest
import torch

from llama.decoders import load_decoder, max_duration
from llama.long_music import WindowConfig, render_long, seam_report

WIN = WindowConfig(window_s=0.4, overlap_s=0.15, crossfade_s=0.05)


@pytest.fixture(scope="module")
def musicgen(tiny_bundle):
    return load_decoder("musicgen", tiny_bundle / "MusicGen")


@pytest.fixture(scope="module")
def cond(musicgen):
    return torch.randn(2, musicgen.cond_tokens, musicgen.cond_dim, generator=torch.Generator().manual_seed(1))


def test_windows_continue_the_previous_audio(musicgen, cond, monkeypatch):
    prompts, real = [], musicgen.render

    def spy(c, duration, **kwargs):
        prompts.append(kwargs.get("audio_prompt"))
        out = real(c, duration, **kwargs)
        spy.pieces.append(out[0])
        return out

    spy.pieces = []
    monkeypatch.setattr(musicgen, "render", spy)
    ticks = []
    out = render_long(musicgen, cond[:1], 1.0, seed=3, window=WIN, progress=lambda d, t: ticks.append(d / t))
    sr = musicgen.sampling_rate
    assert out.shape == (sr,) and len(prompts) == 3                 # 0.4 + 0.4 + 0.2 s
    assert prompts[0] is None
    keep, fade = round(WIN.overlap_s * sr), round(WIN.crossfade_s * sr)
    a, b, c = spy.pieces                                            # each window's own audio
    assert [len(x) for x in spy.pieces] == [round(0.4 * sr), round(0.4 * sr) + fade, round(0.2 * sr) + fade]
    ramp = (np.arange(fade) + 0.5) / fade
    first = np.concatenate([a[:-fade], a[-fade:] * (1 - ramp) + b[:fade] * ramp, b[fade:]])   # a, then b faded in
    assert np.array_equal(prompts[1][0], a[-fade - keep:-fade])    # continues a, up to the fade
    assert np.array_equal(prompts[2][0], first[-fade - keep:-fade])
    assert np.allclose(out[:len(first) - fade], first[:-fade], atol=1e-6)
    assert np.allclose(out[len(first):], c[fade:], atol=1e-6)
    assert ticks == sorted(ticks) and ticks[-1] == 1.0


def test_without_crossfade_windows_join_as_rendered(musicgen, cond, monkeypatch):
    pieces, real = [], musicgen.render
    monkeypatch.setattr(musicgen, "render", lambda *a, **k: pieces.append(real(*a, **k)[0]) or pieces[-1][None])
    hard = WindowConfig(window_s=0.4, overlap_s=0.15, crossfade_s=0.0)
    out = render_long(musicgen, cond[:1], 1.0, seed=3, window=hard)
    assert np.array_equal(out, np.concatenate(pieces))


def test_long_render_through_render_projected_rows_alone(musicgen, cond):
    both = musicgen.render_projected(cond, duration=0.9, seeds=[5, 6], window=WIN)
    alone = musicgen.render_projected(cond[1:], duration=0.9, seeds=[6], window=WIN)
    assert both.shape == (2, round(0.9 * musicgen.sampling_rate))
    assert np.array_equal(both[1], alone[0])
    short = musicgen.render_projected(cond[:1], duration=0.3, seeds=[5], window=WIN)
    assert np.array_equal(short, musicgen.render(cond[:1], 0.3, seeds=[5]))   # one window: one pass


def test_musicgen_limit_is_the_windowed_one(musicgen):
    from llama.decoders import MAX_DURATION_S
    assert max_duration(musicgen) == MAX_DURATION_S


def test_bad_window():
    from llama.decoders import DecoderError
    with pytest.raises(DecoderError, match="overlap"):
        render_long(None, None, 1.0, 0, window=WindowConfig(window_s=1.0, overlap_s=1.0))
    with pytest.raises(DecoderError, match="crossfade"):
        render_long(None, None, 1.0, 0, window=WindowConfig(window_s=1.0, overlap_s=0.2, crossfade_s=0.2))


def test_seam_report_finds_a_jump():
    sr = 1000
    t = np.arange(4 * sr) / sr
    smooth = 0.3 * np.sin(2 * np.pi * 50 * t) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))   # slow swell
    jumped = smooth.copy()
    jumped[2 * sr:] *= 3.0                                          # loudness jump at 2 s
    flat = seam_report(smooth, sr, [2.0])
    step = seam_report(jumped, sr, [2.0])
    assert flat["seam_changes"][0] <= 1.01 * flat["within_max"]          # nothing special at 2 s
    assert step["seam_changes"][0] > 5 * step["within_p95"]
