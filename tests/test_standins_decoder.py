"""The world-trained MusicGen stand-in (DataSet/synth/standins_decoder.py) and the measures of
DataSet/synth/decoder_eval.py: the rewritten folder loads through the project's own loader and
renders, training lowers the loss, a seed fixes the bytes, and the measures read known audio."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from DataSet.synth import decoder_eval as E
from DataSet.synth import standins_decoder as D
from DataSet.synth import world as W
from DataSet.synth.standins_codec import CodecSettings, to_codec_rate
from llama.decoders.musicgen import MusicGenDecoder
from llama.decoders.tiny_decoders import build_tiny_musicgen

TINY = D.DecoderSettings(codec=CodecSettings(num_filters=4, hidden_size=8, codebook_size=16, steps=4, warmup=2,
                                             batch=2, crop_s=0.1, restart_every=2),
                         width=16, layers=1, heads=2, ffn=32, lm_steps=3, lm_batch=4, lm_frames=20)


def _pieces(n=6, seconds=1.0):
    rng = np.random.default_rng(0)
    return [W.sample_piece(rng, seconds) for _ in range(n)]


@pytest.fixture(scope="module")
def clips():
    return D.Clips.from_pieces(_pieces())


def _trained(tmp_path, clips, seed=0):
    folder = build_tiny_musicgen(tmp_path / "MusicGen", cond_dim=32, seed=0)
    report = D.pretrain_musicgen(folder, clips, TINY, seed=seed, log=None)
    return folder, report


def test_trained_folder_loads_and_renders(tmp_path, clips):
    folder, report = _trained(tmp_path, clips)
    before = load_file(build_tiny_musicgen(tmp_path / "orig", cond_dim=32, seed=0) / "model.safetensors")
    dec = MusicGenDecoder.from_pretrained(folder)
    audio_cfg = dec.model.config.audio_encoder
    assert (audio_cfg.num_filters, audio_cfg.codebook_size, audio_cfg.num_quantizers) == (4, 16, 2)
    assert dec.model.config.decoder.hidden_size == 16 and dec.cond_tokens == 16
    after = load_file(folder / "model.safetensors")
    t5 = [k for k in before if k.startswith("text_encoder.")]
    assert t5 and all(torch.equal(before[k], after[k]) for k in t5)       # the T5 stays frozen
    audio = dec.render_text(["A slow piano melody in C major, with drums."], 0.2, seed=0)
    assert audio.shape == (1, 6400) and np.isfinite(audio).all()
    cont = dec.render_projected(dec.condition_text(["piano"]), 0.1, seed=0, audio_prompt=clips.waves[:1, :3200])
    assert cont.shape == (1, 3200)
    assert report["codes_used"] and set(report["seconds"]) == {"codec", "lm", "total"}


def test_same_seed_same_bytes(tmp_path, clips):
    a, _ = _trained(tmp_path / "a", clips, seed=1)
    b, _ = _trained(tmp_path / "b", clips, seed=1)
    c, _ = _trained(tmp_path / "c", clips, seed=2)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_delayed_labels_are_generates_pattern(tmp_path):
    """What the LM is taught to predict is what generate's delay pattern asks of it."""
    folder = build_tiny_musicgen(tmp_path / "m", cond_dim=32, seed=0)
    model = MusicGenDecoder.from_pretrained(folder).model
    pad, K, T = model.config.decoder.pad_token_id, model.decoder.num_codebooks, 5
    codes = torch.arange(K * T).view(1, K, T) % pad                        # (1, K, T)
    labels = D.delayed_labels(codes, pad)                                  # (1, T + K - 1, K)
    bos = torch.full((K, 1), pad)
    _, mask = model.decoder.build_delay_pattern_mask(bos, pad, max_length=T + K)
    expected = mask.clone()                                                # (K, T + K): -1 = to predict
    for k in range(K):
        expected[k, 1 + k:1 + k + T] = codes[0, k]
    assert torch.equal(labels[0].T, expected[:, 1:])


def test_lm_steps_lower_the_loss(tmp_path):
    from DataSet.synth.standins_fit import _fit

    folder = build_tiny_musicgen(tmp_path / "m", cond_dim=32, seed=0)
    old = MusicGenDecoder.from_pretrained(folder)
    torch.manual_seed(0)
    model = D._new_model(old.model, TINY)
    codes = torch.arange(40).repeat(2, 2, 1) % 16                        # (B=2, K=2, T=40)
    hidden, mask = old.condition_text(["piano", "flute"], return_mask=True)
    params = [p for n, p in model.named_parameters() if n.startswith("decoder.")]

    def loss():
        return D.lm_loss(model, codes, hidden, mask, 40)

    first = float(loss().detach())
    assert first == pytest.approx(np.log(16), abs=0.1)                   # uniform over 16 codes
    _fit(params, lambda step: loss(), 30, 1e-2, None, "LM")
    assert float(loss().detach()) < 0.6 * first


def test_codec_steps_lower_the_loss(clips):
    from transformers import EncodecModel

    from DataSet.synth.standins_codec import train_codec
    from llama.decoders.tiny_decoders import _tiny_text_and_codec

    s = CodecSettings(num_filters=4, hidden_size=8, codebook_size=16, steps=30, warmup=5, batch=2, crop_s=0.1)
    torch.manual_seed(0)
    codec = EncodecModel(_tiny_text_and_codec(100, 32, **s.codec_kwargs())[1])
    losses = train_codec(codec, torch.from_numpy(clips.waves), s, torch.Generator().manual_seed(0))
    assert np.mean(losses[-5:]) < np.mean(losses[5:10])
    codes = codec.encode(torch.from_numpy(clips.waves[:1, None, :6400])).audio_codes
    assert codes.shape == (1, 1, 2, 10) and len(codes.unique()) > 1     # the trained codebooks in use


@pytest.mark.parametrize("key,mode", [("C", "major"), ("G", "minor"), ("D", "major")])
def test_key_of_a_rendered_clip(key, mode):
    piece = W.Piece("piano", "medium", key, mode, False, 12345, 4.0)
    assert E.key_mode(to_codec_rate(W.render_audio(piece))) == (key, mode)


def test_identical_audio_measures_perfectly():
    wave = to_codec_rate(W.render_audio(W.Piece("violin", "slow", "F", "minor", True, 7, 2.0)))
    other = to_codec_rate(W.render_audio(W.Piece("flute", "fast", "D", "major", False, 8, 2.0)))
    assert E.chroma_corr(wave, wave) == pytest.approx(1.0)
    assert E.profile_corr(wave, wave) == pytest.approx(1.0)
    assert E.log_mel_l1(wave, wave) == 0.0
    assert E.chroma_corr(wave, other) < 0.5 and E.log_mel_l1(wave, other) > 0.5
    assert E.chroma_corr(wave, np.zeros_like(wave)) == 0.0                 # silence: no correlation


def test_accuracy_against_truth():
    pieces = [W.Piece("piano", "slow", "C", "major", False, 1), W.Piece("flute", "fast", "G", "minor", True, 2)]
    heard = [{"key": "C", "mode": "major", "tempo": "slow", "instrument": "flute"},
             {"key": "C", "mode": "minor", "tempo": "fast", "instrument": "flute"}]
    out = E.accuracy(heard, pieces)
    assert out["accuracy"] == {"key": 0.5, "mode": 1.0, "tempo": 1.0, "instrument": 0.5, "key_mode": 0.5}
    assert out["chance"]["key_mode"] == 0.125
