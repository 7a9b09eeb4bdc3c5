"""MERT windows as published: clips up to 60 s in one pass, longer ones in 60 s windows."""
import numpy as np
import pytest
import torch

from llama import tiny
from llama.config import preset
from llama.encoders import MusicEncoder


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    enc = MusicEncoder.from_pretrained(tiny.write_mert(tmp_path_factory.mktemp("mert") / "MERT", preset("tiny"), 1))
    calls = []
    forward = enc.model.forward
    enc.model.forward = lambda x, **kw: (calls.append(x.shape[-1]), forward(x, **kw))[1]
    enc.calls = calls
    return enc


def _clip(music, seconds: float) -> np.ndarray:
    n = int(seconds * music.sampling_rate)
    return (np.random.default_rng(0).standard_normal(n) * 0.1).astype(np.float32)


def test_a_45_second_clip_is_one_pass_exactly_as_published(music):
    wave = _clip(music, 45)
    music.calls.clear()
    out = music.encode(wave)
    assert music.calls == [len(wave)]                           # one MERT pass over all 45 s
    x = music.processor(wave, sampling_rate=music.sampling_rate, return_tensors="pt").input_values
    with torch.no_grad():
        ref = torch.stack(music.model(x, output_hidden_states=True).hidden_states)[:, 0]
    torch.testing.assert_close(out, ref)


def test_a_clip_past_a_minute_is_windowed_not_cut(music):
    wave = _clip(music, 61)
    music.calls.clear()
    out = music.encode(wave)
    window = 60 * music.sampling_rate
    assert music.calls == [window, len(wave) - window]
    first = music.encode(wave[:window])
    torch.testing.assert_close(out[:, :first.shape[1]], first)  # the first minute as published
    assert out.shape[1] > first.shape[1]                        # and the rest kept
