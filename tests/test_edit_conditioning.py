"""Edits that hear their source (llama/long_music.py, MusicGen audio prompt) on the tiny decoder:
the source reaches MusicGen as an audio prompt (its last seconds, a whole number of codec frames),
only new audio comes back, progress is reported, and impossible modes are one-line errors."""
import math

import numpy as np
import pytest
import torch

from llama.decoders import DecoderError, load_decoder
from llama.examples import write_examples
from llama.long_music import edit_mode_for, render_music
from llama.pipeline import BundlePaths, MuMuPipeline


@pytest.fixture(scope="module")
def musicgen(tiny_bundle):
    return load_decoder("musicgen", tiny_bundle / "MusicGen")


@pytest.fixture(scope="module")
def cond(musicgen):
    return torch.randn(1, musicgen.cond_tokens, musicgen.cond_dim, generator=torch.Generator().manual_seed(0))


def _tone(sr, seconds, hz=440.0):
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(round(sr * seconds)) / sr)).astype(np.float32)


def test_source_reaches_musicgen_as_audio_prompt(musicgen, cond, monkeypatch):
    seen = {}
    real = musicgen.model.generate

    def spy(**kwargs):
        seen["input_values"] = kwargs.get("input_values")
        return real(**kwargs)

    monkeypatch.setattr(musicgen.model, "generate", spy)
    sr, hop = musicgen.sampling_rate, math.prod(musicgen.model.config.audio_encoder.upsampling_ratios)
    source = _tone(sr, 0.7)
    source[-10:] = 0.25                                           # mark the end: the part that is kept
    out = render_music(musicgen, cond, 0.3, seed=1, source=source, edit_mode="prompt")
    prompt = seen["input_values"]
    assert prompt.shape == (1, 1, (len(source) // hop) * hop)
    assert torch.equal(prompt[0, 0, -10:], torch.full((10,), 0.25))      # the last seconds, not the first
    assert out.shape == (round(0.3 * sr),)                        # only the new audio comes back


def test_edit_differs_from_scratch_and_is_deterministic(musicgen, cond):
    sr = musicgen.sampling_rate
    scratch = render_music(musicgen, cond, 0.3, seed=1)
    plain = musicgen.render_projected(cond, duration=0.3, seeds=[1])[0]
    edit = render_music(musicgen, cond, 0.3, seed=1, source=_tone(sr, 0.5), edit_mode="prompt")
    again = render_music(musicgen, cond, 0.3, seed=1, source=_tone(sr, 0.5), edit_mode="prompt")
    assert np.array_equal(scratch, plain)                         # no source: exactly the old path
    assert np.array_equal(edit, again) and not np.array_equal(edit, scratch)


def test_progress_is_reported(musicgen, cond):
    calls = []
    render_music(musicgen, cond, 0.2, seed=0, progress=lambda d, t: calls.append((d, t)))
    total = calls[-1][1]
    assert [d for d, _ in calls] == list(range(1, total + 1)) and total >= round(0.2 * musicgen.frame_rate)


def test_modes(musicgen, tiny_bundle):
    assert edit_mode_for(musicgen, "auto") == "prompt" and edit_mode_for(musicgen, "none") == "none"
    with pytest.raises(DecoderError, match="MusicGen-Melody"):
        edit_mode_for(musicgen, "melody")
    ldm = load_decoder("audioldm2", tiny_bundle / "AudioLDM2")
    assert edit_mode_for(ldm, "auto") == "none"
    with pytest.raises(DecoderError, match="needs a MusicGen decoder"):
        edit_mode_for(ldm, "prompt")
    with pytest.raises(DecoderError, match="choose from"):
        edit_mode_for(musicgen, "latent")
    with pytest.raises(DecoderError, match="empty"):
        render_music(musicgen, torch.zeros(1, musicgen.cond_tokens, musicgen.cond_dim), 0.2, 0,
                     source=np.zeros(0, np.float32), edit_mode="prompt")


def test_pipeline_edit_mode(tiny_bundle, tmp_path):
    write_examples(tmp_path)
    pipe = MuMuPipeline.load(BundlePaths.from_bundle(tiny_bundle))
    kw = dict(audio=str(tmp_path / "melody.wav"), music=True, duration=0.2, max_new_tokens=2)
    none = pipe.answer("Make it faster.", edit_mode="none", **kw)
    default = pipe.answer("Make it faster.", **kw)
    prompted = pipe.answer("Make it faster.", edit_mode="prompt", **kw)
    assert np.array_equal(none.audio, default.audio)              # the library default is unchanged
    assert none.tokens == prompted.tokens and not np.array_equal(none.audio, prompted.audio)
