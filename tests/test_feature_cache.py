"""Feature cache: same loss as the live encoders, resume, and stale caches refused in one line."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import train
from llama.feature_cache import FeatureCache, FeatureCacheError
from tests.data_fixtures import write_fixture_datasets


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fixture_datasets(tmp_path_factory.mktemp("data"))


def _stage1_config(root: Path, data: Path) -> Path:
    """Stage 1 over the fixture's captions (audio, image, video), in a folder we may edit."""
    shutil.copytree(data.parent, root / "d")
    cfg = root / "d" / "s1.json"
    cfg.write_text(json.dumps({"stage1": [
        {"name": "mucaps", "format": "captions", "modality": "audio", "annotations": "MUCaps/MUCapsCaptions.json",
         "media_dir": "MUCaps/audios"},
        {"name": "coco", "format": "captions", "modality": "image", "annotations": "COCO/captions.json",
         "media_dir": "COCO/images"},
        {"name": "vid", "format": "captions", "modality": "video", "annotations": "MUVideo/captions.json",
         "media_dir": "MUVideo/videos"}]}))
    return cfg


def fails(capsys, *args) -> str:
    assert train.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    return err[-1]


def test_cached_and_live_give_the_same_loss_and_the_cache_resumes(tiny_bundle, data, tmp_path, capsys):
    from llama.train_features import BatchFeatures
    from llama.trainer import TrainConfig, Trainer

    cfg = _stage1_config(tmp_path, data)
    cache = tmp_path / "cache"
    t = Trainer(TrainConfig(stage=1, data=cfg, out=tmp_path / "run", ckpt_dir=tiny_bundle, cpu=True,
                            cache_features=cache))
    t.setup()
    assert "encoding 3" in capsys.readouterr().err      # one audio, one image, one video content
    assert t.feats.cache is not None
    idx = list(range(len(t.samples)))                     # every modality in one batch
    torch.manual_seed(0)
    cached = t.batch_loss(idx)[0]
    t.feats = BatchFeatures(t.pipe, t.acc.device, t.scale, t.log)
    live = t.batch_loss(idx)[0]
    diff = (cached.loss - live.loss).abs().item()
    print(f"cached vs live max abs diff: {diff}")
    assert diff == 0.0 and torch.equal(cached.logits, live.logits)
    assert t.feats.memo.misses == len(idx) == 6            # the live path encoded every file
    # a second build encodes nothing; a lost shard is re-encoded alone
    from llama.feature_cache import build
    assert "encoding 0" in _build_log(build, t.pipe, t.samples, cache)
    next((cache / "image").glob("shard_*")).unlink()
    (cache / "audio" / "shard_000009.safetensors.tmp").write_bytes(b"half")   # a killed write
    assert "encoding 1" in _build_log(build, t.pipe, t.samples, cache)
    assert not list(cache.rglob("*.tmp"))


def _build_log(build, pipe, samples, cache) -> str:
    lines = []
    build(pipe, samples, cache, log=lines.append)
    return "\n".join(lines)


def test_train_from_the_cache_then_refuse_stale_ones(tiny_bundle, data, tmp_path, capsys):
    cfg = _stage1_config(tmp_path, data)
    cache = tmp_path / "cache"
    common = ["--stage", 1, "--data", cfg, "--ckpt-dir", tiny_bundle, "--max-steps", 1, "--batch-size", 2]
    assert train.main([str(a) for a in [*common, "--out", tmp_path / "a", "--cache-features", cache]]) == 0
    assert train.main([str(a) for a in [*common, "--out", tmp_path / "b", "--features", cache]]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["feature_cache"] == str(cache)
    capsys.readouterr()

    # another encoder: the same bundle with its ViT folder copied (other files, other mtimes)
    spec = json.loads((tiny_bundle / "bundle.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    shutil.copytree(tiny_bundle / spec["vit"], other / "vit")
    (other / "vit" / "note.txt").write_text("retrained")
    spec = {k: (str(tiny_bundle / v) if k not in ("preset", "llama_type") else v) for k, v in spec.items()}
    spec["vit"] = str(other / "vit")
    (other / "bundle.json").write_text(json.dumps(spec))
    line = fails(capsys, "--stage", 1, "--data", cfg, "--ckpt-dir", other, "--max-steps", 1,
                 "--out", tmp_path / "c", "--features", cache)
    assert str(cache / "cache.json") in line and "another image encoder" in line and str(other / "vit") in line

    # a media file changed after caching
    from PIL import Image
    img = cfg.parent / "COCO" / "images" / "c0.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(img)
    line = fails(capsys, *common, "--out", tmp_path / "run_d", "--features", cache)
    assert str(img) in line and "changed since it was cached" in line
    # ... which --cache-features simply re-encodes
    assert train.main([str(a) for a in [*common, "--out", tmp_path / "run_e", "--cache-features", cache]]) == 0
    capsys.readouterr()

    # a truncated shard
    shard = sorted((cache / "video").glob("shard_*"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    line = fails(capsys, *common, "--out", tmp_path / "run_f", "--features", cache)
    assert str(shard) in line and "truncated" in line


def test_a_shard_from_another_cache_is_refused(tmp_path):
    from safetensors.torch import save_file
    (tmp_path / "image").mkdir()
    (tmp_path / "cache.json").write_text(json.dumps({"format": "mumu-feature-cache", "version": 1,
                                                     "encoders": {"image": {"id": "aaa", "folder": "vit"}}}))
    save_file({"x": torch.zeros(2)}, str(tmp_path / "image" / "shard_000000.safetensors"), metadata={"encoder": "bbb"})
    with pytest.raises(FeatureCacheError, match="shard_000000.safetensors: written by another image encoder"):
        FeatureCache.open(tmp_path, {"image": "aaa"}, {"image": "vit"})
    with pytest.raises(FeatureCacheError, match="cache.json: missing"):
        FeatureCache.open(tmp_path / "nope", {"image": "aaa"}, {"image": "vit"})
