"""Stand-ins that carry signal (DataSet/synth/standins.py): the pretrained folders load through
the project's own loaders with unchanged shapes, the same seed gives the same weights, and a few
steps make a frozen encoder's features move with the world's attributes."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from DataSet.synth import standins as S
from DataSet.synth import standins_probe as P

TINY_STEPS = {"mert": 4, "vit": 3, "vivit": 3, "llama": 3, "t5": 3}
PARTS = ("MERT", "ViT", "ViViT", "MusicGen")


def _pretrained(tiny_bundle, tmp_path_factory, name):
    out = tmp_path_factory.mktemp(name) / "tiny"
    shutil.copytree(tiny_bundle, out)
    report = S.pretrain_standins(out, seed=3, steps=TINY_STEPS, log=None, copies=1, probe=False,
                                 seconds=1.0, n_train=32, n_test=16)
    return out, report


@pytest.fixture(scope="module")
def pretrained(tiny_bundle, tmp_path_factory):
    return _pretrained(tiny_bundle, tmp_path_factory, "standins_a")


def _weights(folder):
    return load_file(folder / "model.safetensors")


def test_pretrained_folders_load_through_the_real_loaders(tiny_bundle, pretrained):
    from llama.checkpoint import load_meta_llama
    from llama.decoders.musicgen import MusicGenDecoder
    from llama.encoders import ImageEncoder, MusicEncoder, VideoEncoder

    out, report = pretrained
    for name in PARTS + ("LLaMA", "LLaMA/tiny"):     # same files, nothing half-written left over
        assert sorted(f.name for f in (out / name).iterdir()) == \
               sorted(f.name for f in (tiny_bundle / name).iterdir()), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    for name in PARTS:                               # every tensor kept its shape; some moved
        old, new = _weights(tiny_bundle / name), _weights(out / name)
        assert {k: v.shape for k, v in old.items()} == {k: v.shape for k, v in new.items()}, name
        assert any(not torch.equal(old[k], new[k]) for k in old), name
    wave = np.random.default_rng(0).standard_normal(24000).astype(np.float32)
    assert MusicEncoder.from_pretrained(out / "MERT").encode(wave).shape == \
           MusicEncoder.from_pretrained(tiny_bundle / "MERT").encode(wave).shape
    from DataSet.synth import world as W
    p = W.sample_piece(np.random.default_rng(1))
    assert ImageEncoder.from_pretrained(out / "ViT").encode([W.render_picture(p)]).shape == (1, 17, 32)
    assert VideoEncoder.from_pretrained(out / "ViViT").encode([np.stack(W.render_video(p))]).shape == (1, 17, 32)
    cfg_old, w_old = load_meta_llama(tiny_bundle / "LLaMA" / "tiny")
    cfg_new, w_new = load_meta_llama(out / "LLaMA" / "tiny")
    assert cfg_old == cfg_new and list(w_old) == list(w_new)
    assert all(w_old[k].shape == w_new[k].shape for k in w_old)          # base vocabulary rows only
    assert not torch.equal(w_old["tok_embeddings.weight"], w_new["tok_embeddings.weight"])
    assert torch.equal(w_old["rope.freqs"], w_new["rope.freqs"])
    dec = MusicGenDecoder.from_pretrained(out / "MusicGen")
    cond = dec.condition_text(["A slow piano melody in C major, with drums."])
    assert cond.shape == (1, dec.cond_tokens, dec.cond_dim)
    assert report["llama"]["eval_loss_after"] < report["llama"]["eval_loss_before"]
    json.dumps(report)                               # the CLI writes it as JSON


def test_same_seed_same_weights(tiny_bundle, pretrained, tmp_path_factory):
    out, _ = pretrained
    again, _ = _pretrained(tiny_bundle, tmp_path_factory, "standins_b")
    for name in PARTS:
        a, b = _weights(out / name), _weights(again / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    a = torch.load(out / "LLaMA/tiny/consolidated.00.pth", weights_only=True)
    b = torch.load(again / "LLaMA/tiny/consolidated.00.pth", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_probe_scores_signal_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    y = (x[:, 0] > 0).long()
    assert P.linear_probe(x[:100], y[:100], x[100:], y[100:]) > 0.9
    shuffled = y[torch.randperm(200, generator=g)]
    assert P.linear_probe(x[:100], shuffled[:100], x[100:], shuffled[100:]) < 0.7


def test_a_few_steps_make_vit_features_carry_the_attributes(tiny_bundle, tmp_path):
    """Random ViT features barely move with the picture (pieces' pooled features almost
    parallel); 40 steps spread them by attribute, and a held-out probe reads the circles."""
    folder = tmp_path / "ViT"
    shutil.copytree(tiny_bundle / "ViT", folder)
    rng = np.random.default_rng(0)
    train = P.Media.render(P.balanced_pieces(rng)[:96], audio=False)
    test = P.Media.render(P.balanced_pieces(rng, avoid={p.melody_seed for p in train.pieces})[:64],
                          audio=False)
    before = P.probe_bundle({"image": folder}, train, test)["image"]
    torch.manual_seed(0)
    losses = S.pretrain_vit(folder, train, steps=40, seed=0, log=None)
    after = P.probe_bundle({"image": folder}, train, test)["image"]
    assert losses[-1] < 0.5 * losses[0]
    g0, g1 = before["geometry"]["cls_mean"], after["geometry"]["cls_mean"]
    assert g1["mean_cos"] < g0["mean_cos"] - 0.2
    assert g1["class_energy"]["instrument"] > 1.5 * g0["class_energy"]["instrument"]
    assert after["probe"]["cls_mean"]["tempo"] >= 0.9
