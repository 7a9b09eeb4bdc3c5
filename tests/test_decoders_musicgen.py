"""MusicGen decoder: conditioning on projector embeddings, exact lengths, seeds, clear errors."""
import shutil

import numpy as np
import pytest
import torch

from llama.decoders import DecoderError, MusicGenDecoder
from llama.decoders.tiny_decoders import build_tiny_musicgen

COND_DIM, COND_TOKENS, SR = 32, 16, 32000
CAPTIONS = ["happy piano melody", "slow sad cello with some drums and a choir"]


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return build_tiny_musicgen(tmp_path_factory.mktemp("musicgen"), cond_dim=COND_DIM, seed=0,
                               n_cond_tokens=COND_TOKENS)


@pytest.fixture(scope="session")
def dec(folder):
    return MusicGenDecoder.from_pretrained(folder)


def _cond(seed, batch=1):
    return torch.randn(batch, COND_TOKENS, COND_DIM, generator=torch.Generator().manual_seed(seed))


def test_properties(dec):
    assert (dec.sampling_rate, dec.cond_tokens, dec.cond_dim, dec.frame_rate) == (SR, 16, 32, 50)
    # like the real model (T5 768 -> decoder 1024), the conditioning goes through enc_to_dec_proj
    assert dec.model.enc_to_dec_proj.in_features == COND_DIM


@pytest.mark.parametrize("duration", [0.5, 1.3])
def test_render_shape_and_exact_length(dec, duration):
    audio = dec.render(_cond(0, batch=2), duration, seed=0)
    assert audio.shape == (2, round(duration * SR)) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert (np.abs(audio[:, -100:]).max(axis=1) > 0).all()   # enough frames: trimmed, not padded


def test_seed_reproducible_and_leaves_global_rng_alone(dec):
    state = torch.get_rng_state()
    a = dec.render(_cond(0), 0.3, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a, dec.render(_cond(0), 0.3, seed=1))
    assert not np.array_equal(a, dec.render(_cond(0), 0.3, seed=2))


def test_conditioning_matters(dec):
    # the published code ignored the embeddings; here two conditions with one seed must differ
    a = dec.render(_cond(1), 0.3, seed=5)
    b = dec.render(_cond(2), 0.3, seed=5)
    assert not np.array_equal(a, b)
    g1 = dec.render(_cond(1), 0.3, do_sample=False)
    g2 = dec.render(_cond(2), 0.3, do_sample=False)
    assert not np.array_equal(g1, g2)


def test_guidance_1_and_3(dec):
    no_cfg = dec.render(_cond(3, batch=2), 0.3, guidance_scale=1.0, seed=0)
    cfg = dec.render(_cond(3, batch=2), 0.3, guidance_scale=3.0, seed=0)
    assert no_cfg.shape == cfg.shape == (2, round(0.3 * SR))
    assert not np.array_equal(no_cfg, cfg)


@pytest.mark.parametrize("duration", [0, -1.0, float("nan")])
def test_bad_duration(dec, duration):
    with pytest.raises(DecoderError, match="duration"):
        dec.render(_cond(0), duration)


@pytest.mark.parametrize("shape", [(1, COND_TOKENS, COND_DIM + 1), (1, COND_TOKENS - 1, COND_DIM),
                                   (COND_TOKENS, COND_DIM)])
def test_bad_cond_shape(dec, shape):
    with pytest.raises(DecoderError, match=r"\(B, 16, 32\)") as e:
        dec.render(torch.zeros(shape), 0.2)
    assert str(tuple(shape)) in str(e.value)


def test_bad_cond_mask_shape(dec):
    with pytest.raises(DecoderError, match="cond_mask"):
        dec.render(_cond(0), 0.2, cond_mask=torch.ones(1, COND_TOKENS + 1))


def test_missing_folder(tmp_path):
    with pytest.raises(DecoderError, match="nowhere"):
        MusicGenDecoder.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("drop", ["model.safetensors", "config.json"])
def test_folder_missing_file(folder, tmp_path, drop):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / drop).unlink()
    with pytest.raises(DecoderError, match=str(broken)) as e:
        MusicGenDecoder.from_pretrained(broken)
    assert "\n" not in str(e.value)


def test_cond_tokens_default_to_128_without_meta(folder, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(folder, plain)
    (plain / "mumu_decoder.json").unlink()
    assert MusicGenDecoder.from_pretrained(plain).cond_tokens == 128


def test_build_is_deterministic(folder, tmp_path):
    from safetensors.torch import load_file

    ref = load_file(folder / "model.safetensors")
    same = load_file(build_tiny_musicgen(tmp_path / "a", COND_DIM, seed=0) / "model.safetensors")
    other = load_file(build_tiny_musicgen(tmp_path / "b", COND_DIM, seed=1) / "model.safetensors")
    assert ref.keys() == same.keys() and all(torch.equal(ref[k], same[k]) for k in ref)
    assert not all(torch.equal(ref[k], other[k]) for k in ref)


def test_condition_text_shape_and_zero_padding(dec):
    cond, mask = dec.condition_text(CAPTIONS, return_mask=True)
    assert cond.shape == (2, COND_TOKENS, COND_DIM) and mask.shape == (2, COND_TOKENS)
    assert torch.equal(cond, dec.condition_text(CAPTIONS))
    n_real = mask.sum(1)
    assert 0 < n_real[0] < n_real[1] <= COND_TOKENS
    assert (cond[mask == 0] == 0).all() and (cond[mask == 1].abs().sum(-1) > 0).all()
    # a caption longer than cond_tokens is truncated, not an error
    long = dec.condition_text([" ".join(["piano"] * 100)])
    assert long.shape == (1, COND_TOKENS, COND_DIM)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_round_trip_embeddings_equal_text_path(dec, guidance):
    cond, mask = dec.condition_text(CAPTIONS, return_mask=True)
    via_embeddings = dec.render(cond, 0.3, guidance_scale=guidance, seed=7, cond_mask=mask)
    via_text = dec.render_text(CAPTIONS, 0.3, guidance_scale=guidance, seed=7)
    np.testing.assert_allclose(via_embeddings, via_text, atol=1e-5)


@pytest.mark.parametrize("how", ["drop", "reshape"])
def test_half_loaded_weights_are_an_error(folder, tmp_path, how):
    from tests.test_encoders import damage_weights, safe_keys

    key = max(safe_keys(folder))
    damage_weights(folder, tmp_path / "damaged", **{how: key})
    with pytest.raises(DecoderError) as e:
        MusicGenDecoder.from_pretrained(tmp_path / "damaged")
    msg = str(e.value)
    assert str(tmp_path / "damaged") in msg and key in msg and "\n" not in msg
    assert ("missing" if how == "drop" else "wrong shape") in msg
