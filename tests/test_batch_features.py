"""llama/batch_features.py: one encoder call per modality for a batch, each request's features
equal to its own, and a bad file failing alone."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from llama.batch_features import batch_features
from llama.errors import UserError
from llama.examples import write_examples
from llama.pipeline import BundlePaths, MuMuPipeline


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return MuMuPipeline.load(BundlePaths.from_bundle(tiny_bundle))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    write_examples(d)
    wave, sr = sf.read(d / "melody.wav", dtype="float32")
    rng = np.random.default_rng(0)
    for i in range(3):                                      # same length, other content
        sf.write(d / f"same{i}.wav", (wave + 0.05 * rng.standard_normal(wave.shape)).astype(np.float32), sr)
    sf.write(d / "shorter.wav", wave[: len(wave) // 2], sr)
    (d / "corrupt.png").write_bytes((d / "image.png").read_bytes()[:40])
    return d


def counting(pipe, monkeypatch):
    calls = []
    for kind in ("audio", "image", "video"):
        enc = pipe.encoder(kind)
        for name in ("encode", "encode_batch"):
            if hasattr(enc, name):
                real = getattr(enc, name)
                monkeypatch.setattr(enc, name, lambda items, real=real, kind=kind, name=name:
                                    calls.append((kind, name, len(items) if isinstance(items, list) else 1))
                                    or real(items))
    return calls


def test_features_equal_each_requests_own_with_one_call_per_kind(pipe, media, monkeypatch):
    reqs = [{"audio": str(media / f"same{i}.wav"), "image": str(media / "image.png")} for i in range(3)]
    reqs += [{"video": str(media / "video.mp4")}, {"audio": str(media / "shorter.wav")}, {},
             {"video": str(media / "video.mp4"), "image": str(media / "image.png")}]
    alone = [pipe.features(**r) for r in reqs]
    calls = counting(pipe, monkeypatch)
    feats, seconds = batch_features(pipe, reqs)
    assert len(feats) == len(seconds) == len(reqs) and all(s >= 0 for s in seconds)
    for got, want in zip(feats, alone):
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype
            torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)
    # images: one call of 4; videos: one of 2; audio: the three clips of one length in one pass,
    # the shorter one alone (MusicEncoder.encode_batch falls back to encode for it)
    assert ("image", "encode", 4) in calls and ("video", "encode", 2) in calls
    assert ("audio", "encode_batch", 4) in calls
    audio_encodes = [c for c in calls if c[:2] == ("audio", "encode")]
    assert len(audio_encodes) == 4                          # encode_batch: lengths differ -> each alone
    feats3, _ = batch_features(pipe, reqs[:3])
    calls.clear()
    batch_features(pipe, reqs[:3])
    assert [c for c in calls if c[0] == "audio"] == [("audio", "encode_batch", 3)]


def test_a_bad_file_fails_its_request_alone(pipe, media):
    reqs = [{"image": str(media / "image.png")}, {"image": str(media / "corrupt.png")},
            {"image": str(media / "missing.png")}, {"image": str(media / "image.png"), "audio": str(media / "melody.wav")}]
    feats, _ = batch_features(pipe, reqs)
    assert isinstance(feats[1], UserError) and "corrupt.png" in str(feats[1])
    assert isinstance(feats[2], UserError) and "missing.png" in str(feats[2])
    assert set(feats[0]) == {"image"} and set(feats[3]) == {"image", "audio"}
    torch.testing.assert_close(feats[3]["image"], pipe.features(image=str(media / "image.png"))["image"],
                               rtol=1e-4, atol=1e-5)


def test_an_encoder_refusal_inside_a_batch_fails_only_its_request(pipe, media, monkeypatch):
    """A UserError from the batched call: each item is encoded alone to find the one it was."""
    enc = pipe.encoder("image")
    real = enc.encode
    bad = {"n": 0}

    def encode(images):
        if len(images) > 1:
            raise UserError("batched call refused")
        bad["n"] += 1
        if bad["n"] == 2:
            raise UserError("this one is refused")
        return real(images)

    monkeypatch.setattr(enc, "encode", encode)
    feats, _ = batch_features(pipe, [{"image": str(media / "image.png")}] * 3)
    assert [isinstance(f, UserError) for f in feats] == [False, True, False]
    assert "this one is refused" in str(feats[1])
