"""Frozen encoders on the tiny MERT / ViT / ViViT folders written by llama.tiny."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from llama import tiny
from llama.config import preset
from llama.encoders import EncoderError, ImageEncoder, MusicEncoder, VideoEncoder
from llama.errors import UserError

CFG = preset("tiny")


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {"mert": tiny.write_mert(root / "MERT", CFG, 1), "vit": tiny.write_vit(root / "ViT", CFG, 2),
            "vivit": tiny.write_vivit(root / "ViViT", CFG, 3)}


@pytest.fixture(scope="session")
def music(folders):
    return MusicEncoder.from_pretrained(folders["mert"])


@pytest.fixture(scope="session")
def image(folders):
    return ImageEncoder.from_pretrained(folders["vit"])


@pytest.fixture(scope="session")
def video(folders):
    return VideoEncoder.from_pretrained(folders["vivit"])


def test_sizes_match_the_preset_adapters(music, image, video):
    a, i, v = CFG.audio_adapter, CFG.image_adapter, CFG.video_adapter
    assert (music.n_layers, music.width) == (a.n_pool, a.in_dim) == (3, 32)
    assert (image.n_tokens, image.width) == (i.n_pool, i.in_dim) == (17, 32)
    assert (video.n_tokens, video.width) == (v.n_pool, v.in_dim) == (17, 32)
    music.check_adapter(a)
    image.check_adapter(i)
    video.check_adapter(v)
    with pytest.raises(EncoderError, match="expects 197 x 768"):
        image.check_adapter(preset("7b").image_adapter)
    assert music.sampling_rate == 24000 and video.num_frames == 32


def test_music_one_second(music):
    wave = np.random.default_rng(0).standard_normal(music.sampling_rate).astype(np.float32)
    out = music.encode(wave)
    assert out.shape == (3, 74, 32)  # 75 Hz, minus the conv's edge
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_music_tiny_inputs_give_one_frame(music):
    for n in (1, 10, music.min_samples - 1):
        assert music.encode(np.ones(n, np.float32)).shape == (3, 1, 32)
    with pytest.raises(ValueError, match="empty"):
        music.encode(np.zeros(0, np.float32))


def test_music_long_clip_is_encoded_whole(music):
    sr, seconds = music.sampling_rate, 70
    wave = np.random.default_rng(1).standard_normal(seconds * sr).astype(np.float32) * 0.1
    out = music.encode(wave)
    windows = -(-seconds // int(music.window_seconds))  # 3 windows of 30 s
    expected = seconds * sr // music.hop
    assert expected - windows <= out.shape[1] <= expected  # every window kept, not just the first
    # The first window's frames are exactly those of encoding the first 30 s alone.
    first = music.encode(wave[: int(music.window_seconds) * sr])
    torch.testing.assert_close(out[:, : first.shape[1]], first)


def test_image(image):
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    assert image.encode([rgb]).shape == (1, 17, 32)
    assert image.encode([rgb, Image.new("L", (16, 16))]).shape == (2, 17, 32)  # greyscale -> RGB


def test_video(video):
    clip = np.random.default_rng(3).integers(0, 255, (32, 16, 16, 3), dtype=np.uint8)
    out = video.encode([clip])
    assert out.shape == (1, 17, 32) and torch.isfinite(out).all()
    assert video.encode([clip, clip[:, :, ::-1]]).shape == (2, 17, 32)
    with pytest.raises(ValueError, match=r"\(32, H, W, 3\)"):
        video.encode([clip[:8]])


def test_encoders_are_frozen(music, image, video):
    for enc in (music, image, video):
        assert not any(p.requires_grad for p in enc.parameters())
        enc.train()
        assert not enc.training and not enc.model.training


def test_outputs_usable_by_a_trainable_adapter(image):
    x = image.encode([Image.new("RGB", (16, 16))])
    layer = torch.nn.Linear(32, 4)
    layer(x).sum().backward()  # would fail on inference-mode tensors
    assert layer.weight.grad is not None


def test_remote_code_needs_the_flag(folders, tmp_path):
    folder = tmp_path / "MERT-remote"
    shutil.copytree(folders["mert"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_MERT.MERTModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EncoderError, match="--trust-remote-code") as err:
        MusicEncoder.from_pretrained(folder)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cls", [MusicEncoder, ImageEncoder, VideoEncoder])
def test_missing_folder(cls, tmp_path):
    with pytest.raises(EncoderError, match="nowhere") as err:
        cls.from_pretrained(tmp_path / "nowhere")
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="empty.*config.json"):
        cls.from_pretrained(tmp_path / "empty")


def damage_weights(src, dst, drop: str | None = None, reshape: str | None = None) -> str:
    """Copy the model folder `src` to `dst` and rewrite its one safetensors file without the
    weight `drop` (default: the first), or with `reshape` given a wrong shape; the key touched."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    (path,) = dst.glob("*.safetensors")
    with safe_open(path, "pt") as f:
        meta, weights = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    key = drop or reshape or sorted(weights)[0]
    if reshape:
        weights[key] = torch.zeros(*weights[key].shape, 2)  # one axis too many
    else:
        del weights[key]
    save_file(weights, path, metadata=meta)
    return key


ENCODERS = [("mert", MusicEncoder), ("vit", ImageEncoder), ("vivit", VideoEncoder)]


@pytest.mark.parametrize("name, cls", ENCODERS)
@pytest.mark.parametrize("how", ["drop", "reshape"])
def test_half_loaded_weights_are_an_error(folders, tmp_path, name, cls, how):
    key = max(k for k in safe_keys(folders[name]) if not k.startswith("pooler."))  # pooler: unused
    damage_weights(folders[name], tmp_path / name, **{how: key})
    with pytest.raises(EncoderError) as err:
        cls.from_pretrained(tmp_path / name)
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert str(tmp_path / name) in msg and key in msg
    assert ("missing" if how == "drop" else "wrong shape") in msg


def safe_keys(folder):
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        return list(f.keys())


def test_unexpected_weight_is_an_error_but_an_unused_head_is_not(folders, tmp_path):
    from safetensors.torch import load_file, save_file

    for extra, ok in (("classifier.weight", True), ("stray.weight", False)):
        folder = tmp_path / extra
        shutil.copytree(folders["vit"], folder)
        weights = load_file(folder / "model.safetensors")
        weights[extra] = torch.zeros(3, 32)  # a Kinetics/ImageNet-style head, or a stray layer
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        if ok:
            assert ImageEncoder.from_pretrained(folder).n_tokens == 17
        else:
            with pytest.raises(EncoderError, match=rf"unexpected {extra}"):
                ImageEncoder.from_pretrained(folder)


def test_corrupt_weights_or_config_are_one_line_errors(folders, tmp_path):
    for name, content in (("model.safetensors", b"not safetensors"), ("config.json", b"{oops")):
        folder = tmp_path / name
        shutil.copytree(folders["vit"], folder)
        (folder / name).write_bytes(content)
        with pytest.raises(EncoderError) as err:
            ImageEncoder.from_pretrained(folder)
        assert str(folder) in str(err.value) and "\n" not in str(err.value)
