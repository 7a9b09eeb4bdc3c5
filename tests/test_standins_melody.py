"""The world-trained MusicGen-Melody stand-in (DataSet/synth/standins_melody.py): its training
input is transformers' own, its folder loads through the project's loader as a melody decoder,
training lowers the loss and makes the chroma matter, a seed fixes the bytes, and the held-out
edit pairs are the melody-keeping ones."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from DataSet.synth import standins_decoder as D
from DataSet.synth import standins_melody as M
from DataSet.synth import world as W
from llama.decoders.musicgen import MusicGenDecoder
from llama.decoders.musicgen_melody import melody_chroma
from tests.test_standins_decoder import TINY, _pieces

MELODY = M.MelodySettings(width=16, layers=1, heads=2, ffn=32, steps=60, batch=6, lr=1e-2, melody_drop=0.5)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A tiny MusicGen stand-in whose codec was trained a few steps (its T5 and codec are shared)."""
    from llama.decoders.tiny_decoders import build_tiny_musicgen

    folder = build_tiny_musicgen(tmp_path_factory.mktemp("plain") / "MusicGen", cond_dim=32, seed=0)
    D.pretrain_musicgen(folder, D.Clips.from_pieces(_pieces()), TINY, seed=0, log=None)
    return folder


@pytest.fixture(scope="module")
def clips():
    return D.Clips.from_pieces(_pieces(6, seconds=1.0))


@pytest.fixture(scope="module")
def trained(plain, clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("melody") / M.FOLDER
    report = M.pretrain_melody(plain, out, clips, MELODY, seed=0, log=None, eval_clips=clips)
    return out, report


def test_training_loss_is_transformers_own(plain):
    """melody_loss builds the (chroma, text) prefix itself; transformers' forward from the T5
    tokens and input_features must give the same loss."""
    dec = MusicGenDecoder.from_pretrained(plain)
    model = M.new_melody_model(dec.model, MELODY, chroma_length=8).eval()
    waves = D.Clips.from_pieces(_pieces(2, seconds=0.5)).waves
    chroma = melody_chroma(waves, dec.sampling_rate)                              # (2, F, 12)
    codes = torch.randint(model.config.decoder.vocab_size, (2, model.decoder.num_codebooks, 12),
                          generator=torch.Generator().manual_seed(0))
    tok = dec.processor(text=["fast piano piece"] * 2, return_tensors="pt")
    with torch.no_grad():
        hidden = model.text_encoder(**tok).last_hidden_state
        ours = M.melody_loss(model, codes, hidden, tok["attention_mask"], chroma)
        labels = D.delayed_labels(codes, model.config.decoder.pad_token_id)
        theirs = model(**tok, input_features=chroma, labels=labels).loss
    assert torch.allclose(ours, theirs, atol=1e-6), (ours, theirs)


def test_trained_folder_loads_as_a_melody_decoder_and_renders(trained, plain):
    out, report = trained
    dec = MusicGenDecoder.from_pretrained(out)
    assert type(dec).__name__ == "MusicGenMelodyDecoder" and dec.melody
    base = MusicGenDecoder.from_pretrained(plain)
    assert dec.cond_tokens == base.cond_tokens and dec.sampling_rate == base.sampling_rate
    # codec and T5 are the MusicGen stand-in's, bit for bit
    ours, theirs = load_file(out / "model.safetensors"), load_file(plain / "model.safetensors")
    shared = [k for k in theirs if k.startswith(("audio_encoder.", "text_encoder."))]
    assert shared and all(torch.equal(ours[k], theirs[k]) for k in shared)
    assert report["lm_loss"]["last"] < report["lm_loss"]["first"]
    assert {"heldout_loss", "heldout_loss_without_melody"} <= set(report)
    cond, mask = dec.condition_text(["a slow flute piece"], return_mask=True)
    src = W.render_audio(_pieces(1, seconds=1.0)[0])
    a = dec.render(cond, 0.5, cond_mask=mask, seed=1, melody=src[None])
    assert a.shape == (1, round(0.5 * dec.sampling_rate)) and np.isfinite(a).all()


def test_same_seed_same_bytes(plain, clips, tmp_path, trained):
    again = M.pretrain_melody(plain, tmp_path / M.FOLDER, clips, MELODY, seed=0, log=None)
    assert again["lm_loss"] == trained[1]["lm_loss"]
    assert (tmp_path / M.FOLDER / "model.safetensors").read_bytes() == (trained[0] / "model.safetensors").read_bytes()


def test_edit_pairs_keep_the_notes(tmp_path):
    from DataSet.synth.build import build_world

    build_world(tmp_path / "w", seed=0, size=12, progress=False)
    pairs = M.edit_pairs(tmp_path / "w" / "heldout")
    assert pairs
    for kind, src, tgt in pairs:
        assert kind in M.KEEPS_MELODY and getattr(src, kind) != getattr(tgt, kind)
        assert (src.key, src.mode, src.melody_seed) == (tgt.key, tgt.mode, tgt.melody_seed)
        if kind != "tempo":          # the same pitch classes (an instrument may play it an octave apart)
            assert np.array_equal(np.array(W.melody_notes(src)) % 12, np.array(W.melody_notes(tgt)) % 12)


def test_training_learns_to_read_the_chroma(plain):
    """Codes that are a function of the chroma (the pitch class of the frame): after training with
    melody_loss the model predicts them much better from the chroma than from the null melody."""
    dec = MusicGenDecoder.from_pretrained(plain)
    F, T = 8, 16
    model = M.new_melody_model(dec.model, MELODY, chroma_length=F)
    gen = torch.Generator().manual_seed(0)
    K, V = model.decoder.num_codebooks, model.config.decoder.vocab_size
    tok = dec.processor(text=["a piece"] * 8, return_tensors="pt")
    with torch.no_grad():
        hidden = model.text_encoder(**tok).last_hidden_state

    def batch():
        pcs = torch.randint(12, (8, F), generator=gen)                               # (B, F)
        chroma = torch.nn.functional.one_hot(pcs, 12).float()                        # (B, F, 12)
        codes = (pcs[:, torch.arange(T) * F // T] % V)[:, None].expand(8, K, T)      # (B, K, T)
        return codes.contiguous(), chroma

    params = [p for n, p in model.named_parameters() if n.startswith(("decoder.", "audio_enc_to_dec_proj."))]
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(150):
        codes, chroma = batch()
        loss = M.melody_loss(model, codes, hidden, tok["attention_mask"], chroma)
        opt.zero_grad()
        loss.backward()
        opt.step()
    codes, chroma = batch()
    with torch.no_grad():
        seen = M.melody_loss(model, codes, hidden, tok["attention_mask"], chroma)
        null = torch.zeros_like(chroma)
        null[..., 0] = 1
        unseen = M.melody_loss(model, codes, hidden, tok["attention_mask"], null)
    assert seen < 0.5 * unseen, (seen, unseen)


def test_same_notes_pairs_and_cross_training(plain, tmp_path):
    import dataclasses

    base = _pieces(3, seconds=1.0)
    other = [dataclasses.replace(base[0], instrument=next(i for i in W.INSTRUMENTS if i != base[0].instrument)),
             dataclasses.replace(base[1], drums=not base[1].drums),
             dataclasses.replace(base[2], tempo=next(t for t in W.TEMPI if t != base[2].tempo))]   # other timing
    pieces = base + other
    pairs = M.same_notes(pieces)
    assert sorted(pairs) == [(0, 3), (1, 4), (3, 0), (4, 1)]
    clips = D.Clips.from_pieces(pieces)
    report = M.pretrain_melody(plain, tmp_path / M.FOLDER, clips, MELODY, seed=0, log=None, pairs=pairs)
    assert report["cross_pairs"] == 4 and report["lm_loss"]["last"] < report["lm_loss"]["first"]
