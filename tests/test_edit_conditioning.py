"""Edits that hear their source (llama/long_music.py) on the tiny decoders: the source reaches
MusicGen as an audio prompt (its last seconds, a whole number of codec frames), MusicGen-Melody as
its chroma, AudioLDM2 as noised VAE latents; only new audio comes back, progress is reported, and
impossible modes are one-line errors."""
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
    with pytest.raises(DecoderError, match="MusicGen-Melody") as err:
        edit_mode_for(musicgen, "melody")
    assert str(tiny_bundle / "MusicGen") in str(err.value) and "\n" not in str(err.value)
    ldm = load_decoder("audioldm2", tiny_bundle / "AudioLDM2")
    assert edit_mode_for(ldm, "auto") == "init"
    with pytest.raises(DecoderError, match="needs an AudioLDM2"):
        edit_mode_for(musicgen, "init")
    with pytest.raises(DecoderError, match="MusicGen-Melody"):
        edit_mode_for(ldm, "melody")
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


# ------------------------------------------------------------------------------ MusicGen-Melody

@pytest.fixture(scope="module")
def melody(tmp_path_factory):
    from llama.decoders.tiny_decoders import build_tiny_musicgen_melody
    return load_decoder("musicgen", build_tiny_musicgen_melody(tmp_path_factory.mktemp("melody"), cond_dim=32))


@pytest.fixture(scope="module")
def melody_cond(melody):
    return torch.randn(1, melody.cond_tokens, melody.cond_dim, generator=torch.Generator().manual_seed(0))


def test_melody_folder_loads_through_the_musicgen_wrapper(melody, musicgen):
    assert type(melody).__name__ == "MusicGenMelodyDecoder" and melody.melody and not musicgen.melody
    assert type(melody.model).__name__ == "MusicgenMelodyForConditionalGeneration"
    assert edit_mode_for(melody, "auto") == "melody"
    with pytest.raises(DecoderError, match="no audio-prompt continuation"):
        edit_mode_for(melody, "prompt")


def test_chroma_is_the_pitch_class(melody):
    sr = melody.sampling_rate
    assert set(melody.chroma(_tone(sr, 0.5, 440.0)).argmax(-1).flatten().tolist()) == {9}    # A
    assert set(melody.chroma(_tone(sr, 0.5, 329.63)).argmax(-1).flatten().tolist()) == {4}   # E


def test_source_chroma_reaches_the_melody_model(melody, melody_cond, monkeypatch):
    seen = {}
    real = melody.model.generate

    def spy(**kwargs):
        seen["states"] = kwargs.get("encoder_hidden_states")
        return real(**kwargs)

    monkeypatch.setattr(melody.model, "generate", spy)
    sr, cfg = melody.sampling_rate, melody.model.config
    source = _tone(sr, 0.5, 440.0)
    render_music(melody, melody_cond, 0.2, seed=1, source=source, edit_mode="melody")
    chroma = melody.chroma(source[None])                                    # (1, frames, 12)
    with torch.no_grad():
        want = melody.model.audio_enc_to_dec_proj(chroma)[0]
    prefix = seen["states"][0, :cfg.chroma_length]                        # the real row's prefix
    frames = chroma.shape[1]
    assert torch.allclose(prefix[:frames], want) and torch.allclose(prefix[frames:2 * frames], want)
    assert seen["states"].shape[1] == cfg.chroma_length + melody.cond_tokens


def test_melody_edit_follows_the_source(melody, melody_cond):
    sr = melody.sampling_rate
    a = render_music(melody, melody_cond, 0.3, seed=1, source=_tone(sr, 0.5, 440.0), edit_mode="melody")
    again = render_music(melody, melody_cond, 0.3, seed=1, source=_tone(sr, 0.5, 440.0), edit_mode="melody")
    other = render_music(melody, melody_cond, 0.3, seed=1, source=_tone(sr, 0.5, 329.63), edit_mode="melody")
    scratch = render_music(melody, melody_cond, 0.3, seed=1)
    assert a.shape == (round(0.3 * sr),) and np.array_equal(a, again)
    assert not np.array_equal(a, other) and not np.array_equal(a, scratch)


def test_melody_text_path_is_the_models_own(melody):
    """Our (chroma prefix, text states) build equals transformers' own from a caption."""
    cond, mask = melody.condition_text(["happy piano melody"], return_mask=True)
    assert np.array_equal(melody.render(cond, 0.2, seed=3, cond_mask=mask),
                          melody.render_text(["happy piano melody"], 0.2, seed=3))


# ------------------------------------------------------------------------------ AudioLDM2 init

@pytest.fixture(scope="module")
def ldm(tiny_bundle):
    return load_decoder("audioldm2", tiny_bundle / "AudioLDM2")


def _ldm_cond(ldm, seed):
    return torch.randn(1, 1, ldm.cond_dim, generator=torch.Generator().manual_seed(seed))


def test_audioldm2_edit_differs_from_scratch_and_is_deterministic(ldm):
    sr, cond = ldm.sampling_rate, _ldm_cond(ldm, 0)
    scratch = render_music(ldm, cond, 0.4, seed=1)
    edit = render_music(ldm, cond, 0.4, seed=1, source=_tone(sr, 0.5), edit_mode="init")
    again = render_music(ldm, cond, 0.4, seed=1, source=_tone(sr, 0.5), edit_mode="init")
    other = render_music(ldm, cond, 0.4, seed=1, source=_tone(sr, 0.5, 330.0), edit_mode="init")
    assert edit.shape == scratch.shape == (round(0.4 * sr),)
    assert np.array_equal(edit, again) and not np.array_equal(edit, scratch) and not np.array_equal(edit, other)


def test_audioldm2_strength_ends(ldm):
    """0: the source's own VAE reconstruction, whatever the conditioning; 1: exactly scratch."""
    sr, source = ldm.sampling_rate, _tone(ldm.sampling_rate, 0.5)
    zero = [render_music(ldm, _ldm_cond(ldm, i), 0.4, seed=i, source=source, edit_mode="init",
                         edit_strength=0.0) for i in (0, 1)]
    lat = ldm.source_latents(source[None], len(zero[0]))
    with torch.no_grad():
        rec = ldm.pipe.mel_spectrogram_to_waveform(ldm.pipe.vae.decode(lat / ldm.pipe.vae.config.scaling_factor).sample)
    assert np.array_equal(zero[0], zero[1]) and abs(zero[0]).max() > 0
    assert np.allclose(zero[0], rec[0, :len(zero[0])].numpy(), atol=1e-5)
    cond = _ldm_cond(ldm, 0)
    assert np.array_equal(render_music(ldm, cond, 0.4, seed=1, source=source, edit_mode="init", edit_strength=1.0),
                          render_music(ldm, cond, 0.4, seed=1))


@pytest.mark.parametrize("strength", [0.3, 0.6])
def test_audioldm2_runs_only_the_remaining_steps(ldm, strength, monkeypatch):
    calls = []
    real = ldm.pipe.unet.forward
    monkeypatch.setattr(ldm.pipe.unet, "forward", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    render_music(ldm, _ldm_cond(ldm, 0), 0.4, seed=1, source=_tone(ldm.sampling_rate, 0.5),
                 edit_mode="init", edit_strength=strength)
    assert len(calls) == round(strength * ldm.default_steps)              # guidance: one batched call per step
    with pytest.raises(DecoderError, match="edit-strength"):
        render_music(ldm, _ldm_cond(ldm, 0), 0.4, seed=1, source=_tone(ldm.sampling_rate, 0.5),
                     edit_mode="init", edit_strength=1.5)


def test_bundle_melody_decoder_takes_auto_and_melody_edits(tiny_bundle, tiny_bundle_with_melody):
    """bundle.json "musicgen_melody" beside MusicGen: auto and melody edits go to the melody
    model; prompt and none stay with MusicGen; without it, auto is prompt."""
    from llama.pipeline import BundlePaths, MuMuPipeline

    pipe = MuMuPipeline.load(BundlePaths.from_bundle(tiny_bundle_with_melody))
    for mode in ("auto", "melody"):
        dec, concrete = pipe.edit_decoder(mode)
        assert concrete == "melody" and dec.melody and dec is not pipe.decoder()
    assert pipe.edit_decoder("prompt") == (pipe.decoder(), "prompt")
    assert pipe.edit_decoder("none") == (pipe.decoder(), "none")
    plain = MuMuPipeline.load(BundlePaths.from_bundle(tiny_bundle))
    assert plain.edit_decoder("auto") == (plain.decoder(), "prompt")
    with pytest.raises(DecoderError, match="MusicGen-Melody"):
        plain.edit_decoder("melody")
