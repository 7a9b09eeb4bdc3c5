"""AudioLDM2 decoder: projector embeddings in, 16 kHz audio out; text round trip; clear errors."""
import json
import re
import shutil

import numpy as np
import pytest
import torch

from llama.config import ProjectorConfig, preset
from llama.decoders import AudioLDM2Decoder, DecoderError, load_decoder
from llama.decoders.tiny_decoders import build_tiny_audioldm2

# T5 and GPT-2 widths differ so that a split in the wrong order cannot go unnoticed
T5_TOKENS, T5_DIM, GPT2_DIM, SR = 16, 32, 48, 16000
COND_DIM = T5_TOKENS * T5_DIM + 8 * GPT2_DIM                     # 896
STEPS = 4                                                         # the folder's default: fast tests
CAPTIONS = ["happy piano melody", "slow sad cello with some drums and a choir"]


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return build_tiny_audioldm2(tmp_path_factory.mktemp("audioldm2"), t5_dim=T5_DIM, gpt2_dim=GPT2_DIM,
                                n_t5_tokens=T5_TOKENS, seed=0, default_steps=STEPS)


@pytest.fixture(scope="session")
def dec(folder):
    return AudioLDM2Decoder.from_pretrained(folder)


def _cond(seed, batch=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, T5_TOKENS, T5_DIM, generator=g),
            torch.randn(batch, 8, GPT2_DIM, generator=g))


def test_properties(dec):
    from transformers import GPT2LMHeadModel

    assert (dec.sampling_rate, dec.cond_tokens, dec.cond_dim) == (SR, 1, COND_DIM)
    assert (dec.prompt_shape, dec.generated_shape) == ((T5_TOKENS, T5_DIM), (8, GPT2_DIM))
    assert (dec.t5_dim, dec.gpt2_dim, dec.default_steps) == (T5_DIM, GPT2_DIM, STEPS)
    assert isinstance(dec.pipe.language_model, GPT2LMHeadModel)   # the text path needs the head


def test_load_decoder_by_name(folder):
    assert isinstance(load_decoder("audioldm2", folder), AudioLDM2Decoder)


def test_split_join(dec):
    p, g = _cond(0, batch=2)
    flat = dec.join(p, g)
    assert flat.shape == (2, 1, COND_DIM)
    assert torch.equal(flat[:, 0, :T5_TOKENS * T5_DIM].reshape(2, T5_TOKENS, T5_DIM), p)  # T5 first
    p2, g2 = dec.split(flat)
    assert torch.equal(p2, p) and torch.equal(g2, g)


@pytest.mark.parametrize("duration", [0.5, 1.3, 0.01])
def test_render_shape_and_exact_length(dec, duration):
    audio = dec.render(*_cond(0, batch=2), duration, seed=0)
    assert audio.shape == (2, round(duration * SR)) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3   # audible once written as PCM16
    assert (np.abs(audio[:, -20:]).max(axis=1) > 0).all()          # enough frames: trimmed, not padded


def test_render_projected_is_render_of_the_split(dec):
    p, g = _cond(1, batch=2)
    np.testing.assert_array_equal(dec.render_projected(dec.join(p, g), 0.3, seed=4),
                                  dec.render(p, g, 0.3, seed=4))


def test_seed_reproducible_and_leaves_global_rng_alone(dec):
    state = torch.get_rng_state()
    a = dec.render(*_cond(0), 0.3, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a, dec.render(*_cond(0), 0.3, seed=1))
    assert not np.array_equal(a, dec.render(*_cond(0), 0.3, seed=2))


def test_both_conditionings_matter(dec):
    p1, g1 = _cond(1)
    p2, g2 = _cond(2)
    base = dec.render(p1, g1, 0.3, seed=5)
    assert not np.allclose(base, dec.render(p2, g1, 0.3, seed=5))    # T5 prompt_embeds
    assert not np.allclose(base, dec.render(p1, g2, 0.3, seed=5))    # GPT-2 generated_prompt_embeds


def test_guidance_and_negative_prompt(dec):
    p, g = _cond(3, batch=2)
    no_cfg = dec.render(p, g, 0.3, guidance_scale=1.0, seed=0)
    zero_neg = dec.render(p, g, 0.3, guidance_scale=3.5, seed=0)
    text_neg = dec.render(p, g, 0.3, guidance_scale=3.5, seed=0, negative_prompt="loud drums")
    assert no_cfg.shape == zero_neg.shape == text_neg.shape == (2, round(0.3 * SR))
    assert not np.allclose(no_cfg, zero_neg) and not np.allclose(zero_neg, text_neg)
    per_row = dec.render(p, g, 0.3, guidance_scale=3.5, seed=0, negative_prompt=["loud drums"] * 2)
    np.testing.assert_allclose(per_row, text_neg, atol=1e-6)


def test_several_waveforms(dec):
    p, g = _cond(4, batch=2)
    every = dec.render(p, g, 0.2, seed=0, num_waveforms=3, all_waveforms=True)
    assert every.shape == (2, 3, round(0.2 * SR))
    np.testing.assert_array_equal(dec.render(p, g, 0.2, seed=0, num_waveforms=3), every[:, 0])
    assert not np.allclose(every[:, 0], every[:, 1])
    ranked = dec.render_text(CAPTIONS, 0.2, seed=0, num_waveforms=2, all_waveforms=True)  # CLAP ranks
    assert ranked.shape == (2, 2, round(0.2 * SR)) and np.isfinite(ranked).all()


def test_condition_text_shape_padding_and_batch_independence(dec):
    cond, mask = dec.condition_text(CAPTIONS, return_mask=True)
    assert cond.shape == (2, 1, COND_DIM) and mask.shape == (2, T5_TOKENS)
    prompt, generated = dec.split(cond)
    n_real = mask.sum(1)
    assert 0 < n_real[0] < n_real[1] <= T5_TOKENS
    assert (prompt[mask == 0] == 0).all() and (prompt[mask == 1].abs().sum(-1) > 0).all()
    assert generated.abs().sum() > 0
    # the pipeline would pad the shorter caption and shift GPT-2's positions: we do not
    alone = torch.cat([dec.condition_text(CAPTIONS[:1]), dec.condition_text(CAPTIONS[1:])])
    torch.testing.assert_close(cond, alone)
    long = dec.condition_text([" ".join(["piano"] * 100)], return_mask=True)
    assert long[0].shape == (1, 1, COND_DIM) and long[1].sum() == T5_TOKENS   # truncated, no error


@pytest.mark.parametrize("guidance", [1.0, 3.5])
@pytest.mark.parametrize("caption", CAPTIONS)
def test_round_trip_embeddings_equal_text_path(dec, caption, guidance):
    cond, mask = dec.condition_text([caption], return_mask=True)
    prompt, generated = dec.split(cond)
    # the text path's own negative is the empty prompt; the embeddings path's default is zeros
    neg = "" if guidance > 1 else None
    via_embeddings = dec.render(prompt, generated, 0.3, guidance_scale=guidance, seed=7,
                                attention_mask=mask, negative_prompt=neg)
    via_text = dec.render_text([caption], 0.3, guidance_scale=guidance, seed=7)
    np.testing.assert_allclose(via_embeddings, via_text, atol=1e-5)


def test_real_layout_with_bare_gpt2_model(folder, dec, tmp_path):
    """cvssp/audioldm2 ships language_model as a GPT2Model; its text path still works."""
    from transformers import GPT2LMHeadModel, GPT2Model

    real = tmp_path / "real"
    shutil.copytree(folder, real)
    shutil.rmtree(real / "language_model")
    GPT2Model.from_pretrained(folder / "language_model").save_pretrained(real / "language_model")
    index = json.loads((real / "model_index.json").read_text())
    index["language_model"] = ["transformers", "GPT2Model"]
    (real / "model_index.json").write_text(json.dumps(index))
    other = AudioLDM2Decoder.from_pretrained(real)
    assert isinstance(other.pipe.language_model, GPT2LMHeadModel)
    torch.testing.assert_close(other.condition_text(CAPTIONS), dec.condition_text(CAPTIONS))


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("duration", [0, -1.0, float("nan"), "long"])
def test_bad_duration(dec, duration):
    with pytest.raises(DecoderError, match="duration"):
        dec.render(*_cond(0), duration)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps(dec, steps):
    with pytest.raises(DecoderError, match="steps"):
        dec.render(*_cond(0), 0.2, steps=steps)


def test_bad_num_waveforms_and_guidance(dec):
    with pytest.raises(DecoderError, match="num_waveforms"):
        dec.render(*_cond(0), 0.2, num_waveforms=0)
    with pytest.raises(DecoderError, match="guidance_scale"):
        dec.render(*_cond(0), 0.2, guidance_scale=float("inf"))


@pytest.mark.parametrize("shape", [(1, 1, COND_DIM + 1), (1, 2, COND_DIM), (1, COND_DIM)])
def test_bad_projected_shape(dec, shape):
    with pytest.raises(DecoderError, match=rf"\(B, 1, {COND_DIM}\) = 16 x 32 T5 \+ 8 x 48 GPT-2") as e:
        dec.render_projected(torch.zeros(shape), 0.2)
    assert str(tuple(shape)) in str(e.value)


def test_bad_embeds(dec):
    p, g = _cond(0)
    with pytest.raises(DecoderError, match=r"prompt_embeds has shape \(1, 16, 48\).*\(B, 16, 32\)"):
        dec.render(torch.zeros(1, 16, 48), g, 0.2)
    with pytest.raises(DecoderError, match="generated_prompt_embeds"):
        dec.render(p, torch.zeros(1, 7, GPT2_DIM), 0.2)
    with pytest.raises(DecoderError, match="batch"):
        dec.render(p, torch.cat([g, g]), 0.2)
    with pytest.raises(DecoderError, match="attention_mask"):
        dec.render(p, g, 0.2, attention_mask=torch.ones(1, T5_TOKENS + 1))
    with pytest.raises(DecoderError, match="negative_prompt has 2 entries"):
        dec.render(p, g, 0.2, negative_prompt=["a", "b"])
    with pytest.raises(DecoderError, match="captions"):
        dec.condition_text("not a list")


def test_check_projector(dec):
    dec.check_projector(ProjectorConfig(n_queries=1, out_dim=COND_DIM))
    with pytest.raises(DecoderError, match=rf"\(16 x 32\).*\(1 x {COND_DIM}\)"):
        dec.check_projector(preset("tiny").projector)          # a MusicGen-shaped projector


def test_tiny_bundle_projector_sizes_and_mismatch(tiny_bundle):
    ldm = load_decoder("audioldm2", tiny_bundle / "AudioLDM2")
    ldm_proj, mg_proj = preset("tiny", music_decoder="audioldm2").projector, preset("tiny").projector
    assert (ldm.cond_dim, ldm.n_t5_tokens, ldm.t5_dim, ldm.gpt2_dim) == (ldm_proj.out_dim, 16, 32, 32)
    ldm.check_projector(ldm_proj)
    with pytest.raises(DecoderError, match=r"\(16 x 32\) but this AudioLDM2 expects \(1 x 768\)"):
        ldm.check_projector(mg_proj)
    with pytest.raises(DecoderError, match=r"\(1 x 768\) but this MusicGen expects \(16 x 32\)"):
        load_decoder("musicgen", tiny_bundle / "MusicGen").check_projector(ldm_proj)


def test_missing_folder_and_index(tmp_path):
    with pytest.raises(DecoderError, match="nowhere.*does not exist"):
        AudioLDM2Decoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(DecoderError, match="model_index.json"):
        AudioLDM2Decoder.from_pretrained(tmp_path)


@pytest.mark.parametrize("drop, message", [
    ("vocoder", "missing its vocoder/ component (SpeechT5HifiGan)"),
    ("unet/diffusion_pytorch_model.safetensors", "cannot load AudioLDM2"),
    ("text_encoder_2/config.json", "cannot load AudioLDM2"),
])
def test_folder_missing_component(folder, tmp_path, drop, message):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    target = broken / drop
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DecoderError, match=re.escape(message)) as e:
        AudioLDM2Decoder.from_pretrained(broken)
    assert str(broken) in str(e.value) and "\n" not in str(e.value)


def test_defaults_without_meta(folder, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(folder, plain)
    (plain / "mumu_decoder.json").unlink()
    d = AudioLDM2Decoder.from_pretrained(plain)
    assert (d.n_t5_tokens, d.default_steps) == (128, 200)
    assert d.cond_dim == 128 * T5_DIM + 8 * GPT2_DIM


def test_build_is_deterministic(folder, tmp_path):
    same = build_tiny_audioldm2(tmp_path / "a", T5_DIM, GPT2_DIM, T5_TOKENS, seed=0, default_steps=STEPS)
    other = build_tiny_audioldm2(tmp_path / "b", T5_DIM, GPT2_DIM, T5_TOKENS, seed=1)
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(same) for p in same.rglob("*") if p.is_file())
    for rel in files:
        assert (folder / rel).read_bytes() == (same / rel).read_bytes(), rel
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert (folder / unet).read_bytes() != (other / unet).read_bytes()


@pytest.mark.parametrize("component, weights", [
    ("unet", "diffusion_pytorch_model.safetensors"),   # a diffusers model: only warns by itself
    ("vocoder", "model.safetensors"),                   # a transformers model
])
@pytest.mark.parametrize("how", ["drop", "reshape"])
def test_half_loaded_component_is_an_error(folder, tmp_path, component, weights, how):
    from safetensors import safe_open

    from tests.test_encoders import damage_weights

    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged, ignore=shutil.ignore_patterns(component))
    with safe_open(folder / component / weights, "pt") as f:
        key = max(f.keys())
    damage_weights(folder / component, damaged / component, **{how: key})
    with pytest.raises(DecoderError) as e:
        AudioLDM2Decoder.from_pretrained(damaged)
    msg = str(e.value)
    assert str(damaged / component) in msg and key in msg and "\n" not in msg
    assert ("missing" if how == "drop" else "wrong shape") in msg
