"""Frechet distance vs an independent scipy implementation; audio vectors, KL and CLAP score from
tiny local models; wrong model folders and unreadable clips."""
import json

import numpy as np
import pytest
import soundfile as sf

from llama.errors import UserError
from llama.metrics.audio import AudioConfig, AudioModel, clap_score, kl_divergence
from llama.metrics.frechet import frechet_distance
from llama.metrics.models import ModelFolderError, check_kind


def frechet_scipy(a, b):
    """The usual FAD formula in scipy terms (pytorch-fid / audioldm_eval)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(linalg.sqrtm(s1.dot(s2)))
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("n,m,k,shift", [(50, 40, 8, 0.5), (200, 300, 16, 2.0), (30, 30, 4, 0.0)])
def test_frechet_equals_scipy_sqrtm_formula(n, m, k, shift):
    rng = np.random.default_rng(n + k)
    mix = rng.standard_normal((k, k))
    a = rng.standard_normal((n, k)) @ mix
    b = rng.standard_normal((m, k)) @ (mix + 0.3 * rng.standard_normal((k, k))) + shift
    assert frechet_distance(a, b) == pytest.approx(frechet_scipy(a, b), abs=1e-6)


def test_frechet_known_answers():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((100, 6))
    assert abs(frechet_distance(a, a)) < 1e-9
    # same covariance, mean moved by d: FD = |d|^2
    assert frechet_distance(a, a + 3.0) == pytest.approx(6 * 9.0, abs=1e-9)
    with pytest.raises(ValueError, match="widths differ"):
        frechet_distance(a, a[:, :3])


def test_kl_and_clap_score_known_answers():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert np.allclose(kl_divergence(p, p), 0, atol=1e-12)
    q = np.array([[0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    by_hand = 0.7 * np.log(0.7 / 0.2) + 0.2 * np.log(0.2 / 0.7)
    assert kl_divergence(p, q)[0] == pytest.approx(by_hand, abs=1e-7)
    x = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert clap_score(x, 2 * x) == pytest.approx([1.0, 1.0])
    assert clap_score(x, np.array([[0.0, 1.0], [-1.0, -1.0]])) == pytest.approx([0.0, -1.0])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from llama.metrics.tiny_models import write_all

    return write_all(tmp_path_factory.mktemp("evalmodels"))


@pytest.fixture
def clips(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i, seconds in enumerate((0.5, 1.0, 2.5, 0.7)):
        t = np.arange(int(16000 * seconds)) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.size)
        paths.append(tmp_path / f"c{i}.wav")
        sf.write(paths[-1], wav.astype(np.float32), 16000)
    return paths


@pytest.mark.parametrize("kind", ["clap", "ast", "audio"])
def test_vectors_batched_equal_one_at_a_time_and_cached(models, clips, kind, tmp_path):
    folder = {"clap": models["clap"], "ast": models["ast"], "audio": models["hubert"]}[kind]
    cache = tmp_path / "cache"
    batched = AudioModel(folder, kind, AudioConfig(batch_size=8, cache_dir=cache, progress=False)).vectors(clips)
    single = AudioModel(folder, kind, AudioConfig(batch_size=1, progress=False))
    for p in clips:
        assert np.allclose(batched.by_file[p], single.vectors([p]).by_file[p], atol=1e-5)
    if kind == "ast":
        assert all(v.sum() == pytest.approx(1.0) for v in batched.by_file.values())
    # on-disk cache: a fresh model object reads the .npy files instead of computing
    assert len(list(cache.glob("*.npy"))) == len(clips)
    fresh = AudioModel(folder, kind, AudioConfig(cache_dir=cache, progress=False))
    fresh._forward = None                                          # any computation would fail
    again = fresh.vectors(clips)
    assert all(np.array_equal(again.by_file[p], batched.by_file[p]) for p in clips)


def test_long_clip_is_averaged_over_equal_windows(models, clips):
    m = AudioModel(models["clap"], "clap", AudioConfig(progress=False))       # 1 s windows
    wins = m._windows(np.zeros(int(2.5 * 16000)))
    assert len(wins) == 3 and len({len(w) for w in wins}) == 1
    assert sum(len(w) for w in wins) > 2.5 * 16000 - 3


def test_unreadable_clip_is_a_counted_skip_naming_the_file(models, clips):
    bad = clips[0].parent / "broken.wav"
    bad.write_text("not audio")
    out = AudioModel(models["clap"], "clap", AudioConfig(progress=False)).vectors(clips + [bad])
    assert set(out.by_file) == set(clips)
    assert list(out.skipped) == [str(bad)] and "broken.wav" in out.skipped[str(bad)]


def test_wrong_model_folders_are_one_line_errors(models, tmp_path):
    with pytest.raises(ModelFolderError, match=rf"{models['bert']}: model_type 'bert' is not a CLAP model"):
        check_kind(models["bert"], "clap")
    with pytest.raises(ModelFolderError, match=rf"{models['clap']}: model_type 'clap' is not an audio classifier"):
        AudioModel(models["clap"], "ast")
    with pytest.raises(ModelFolderError, match=rf"{tmp_path}: no config.json; expected an audio encoder"):
        check_kind(tmp_path, "audio")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "mert_model", "auto_map": {"AutoModel": "x.M"}}))
    with pytest.raises(ModelFolderError, match="needs its own model code"):
        check_kind(remote, "audio")
    assert issubclass(ModelFolderError, UserError)
