"""llama.media: user files -> model-ready arrays, and one-line MediaError for every bad file.

Fixtures are generated into tmp_path (soundfile, Pillow, PyAV); the real clips in
../shared/media are used when that folder exists.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from llama.media import (
    MediaError,
    guess_kind,
    is_audio_path,
    is_image_path,
    is_video_path,
    load_audio,
    load_image,
    load_video,
)

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def assert_media_error(fn, path, *args):
    """The loader raises MediaError with one line naming the file."""
    with pytest.raises(MediaError) as info:
        fn(path, *args)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert Path(path).name in msg, msg
    return msg


def tone(n: int, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(n) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)  # (T,)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)  # (T, C)


def write_mp4(path: Path, n: int, size=(64, 48), fps: int = 24) -> None:
    """n frames of a white bar moving right; mpeg4 (always in FFmpeg) keeps it portable."""
    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            x = int(i * (w - 8) / max(n - 1, 1))
            img[:, x : x + 8] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_aac(container, seconds: float = 0.5, rate: int = 24000):
    s = container.add_stream("aac", rate=rate)
    s.layout = "mono"
    x = tone(int(seconds * rate), rate)[:, 0]
    for k in range(0, len(x), 1024):
        frame = av.AudioFrame.from_ndarray(x[None, k : k + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, k
        for p in s.encode(frame):
            container.mux(p)
    for p in s.encode():
        container.mux(p)
    return s


# ----------------------------------------------------------------------------- shared errors


@pytest.mark.parametrize("loader", [load_audio, load_image, load_video])
def test_missing_and_empty_files(tmp_path, loader):
    msg = assert_media_error(loader, tmp_path / "nope.wav")
    assert "not found" in msg
    empty = tmp_path / "empty.bin"
    empty.touch()
    assert "empty" in assert_media_error(loader, empty)
    assert_media_error(loader, tmp_path)  # a folder


def test_message_is_path_colon_reason(tmp_path):
    err = MediaError(tmp_path / "song.wav", "bad\nthing\r\n  here")
    assert str(err) == f"{tmp_path / 'song.wav'}: bad thing here"
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.path == err.path


def test_guess_kind():
    assert guess_kind("a/b/Song.FLAC") == "audio" and is_audio_path("x.mp3")
    assert guess_kind("cat.jpeg") == "image" and is_image_path("x.png")
    assert guess_kind("clip.mp4") == "video" and is_video_path("x.webm")
    assert guess_kind("notes.txt") is None and not is_audio_path("x")


# ----------------------------------------------------------------------------- audio


def test_text_file_named_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\n" * 20)
    assert "not a readable audio file" in assert_media_error(load_audio, p)


@pytest.mark.parametrize("keep", [0.4, "header"])
def test_truncated_flac_is_an_error(tmp_path, keep):
    """Decision: a FLAC the decoder finds truncated is rejected, not silently shortened."""
    full = tmp_path / "full.flac"
    sf.write(full, tone(48000, 48000, 2), 48000)
    data = full.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: int(len(data) * keep)] if keep != "header" else data[:100])
    assert_media_error(load_audio, cut)
    cut.write_bytes(data[:4])  # only the "fLaC" magic
    assert_media_error(load_audio, cut)


def test_zero_samples_and_nan(tmp_path):
    p = tmp_path / "silent.wav"
    sf.write(p, np.zeros((0, 1), np.float32), 16000)
    assert "no samples" in assert_media_error(load_audio, p)
    bad = tmp_path / "nan.wav"
    sf.write(bad, np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")
    assert "NaN" in assert_media_error(load_audio, bad)
    inf = tmp_path / "inf.wav"
    sf.write(inf, np.array([0.0, np.inf], np.float32), 24000, subtype="FLOAT")
    assert_media_error(load_audio, inf)


@pytest.mark.parametrize("rate,expected", [(24000, 1), (16000, 2), (48000, 1)])
def test_one_sample_wav_is_valid(tmp_path, rate, expected):
    p = tmp_path / "one.wav"
    sf.write(p, np.array([0.25], np.float32), rate)
    x = load_audio(p)
    assert x.dtype == np.float32 and x.ndim == 1 and len(x) == expected


def test_ten_minutes_are_not_cut(tmp_path):
    p = tmp_path / "long.wav"
    sf.write(p, tone(600 * 8000, 8000), 8000, subtype="PCM_16")
    x = load_audio(p)
    assert x.dtype == np.float32 and x.shape == (600 * 24000,)
    assert np.abs(x[-24000:]).max() > 0.3  # the last second is still the tone


def test_stereo_48k_to_mono_24k(tmp_path):
    p = tmp_path / "stereo.flac"
    sf.write(p, tone(48000 + 7, 48000, 2), 48000)  # left 0.5 x, right 1.0 x the tone
    x = load_audio(p)
    assert x.dtype == np.float32 and x.shape == (math.ceil((48000 + 7) / 2),)
    assert np.isclose(np.abs(x[1000:-1000]).max(), 0.75 * 0.5, atol=0.02)  # mean of channels
    same_rate = load_audio(p, sample_rate=48000)
    np.testing.assert_allclose(same_rate, tone(48000 + 7, 48000, 2).mean(axis=1), atol=1e-4)


def test_mp3(tmp_path):
    p = tmp_path / "tone.mp3"
    try:
        sf.write(p, tone(44100, 44100), 44100)
    except (sf.LibsndfileError, TypeError, ValueError):
        pytest.skip("this libsndfile cannot write mp3")
    x = load_audio(p)
    # mp3 adds encoder delay/padding: about one second, give or take a few frames
    assert x.dtype == np.float32 and abs(len(x) - 24000) < 3000


def test_audio_track_of_mp4_via_pyav(tmp_path):
    p = tmp_path / "voice.m4a"
    with av.open(str(p), "w", format="mp4") as c:
        write_aac(c)
    x = load_audio(p)
    assert x.dtype == np.float32 and abs(len(x) - 12000) < 3000


def test_video_without_audio(tmp_path):
    p = tmp_path / "silent.mp4"
    write_mp4(p, 4)
    assert "no audio stream" in assert_media_error(load_audio, p)


@pytest.mark.parametrize("name", ["car_audio.wav", "classic_music.flac", "guitar_sound.flac"])
def test_real_audio(name):
    path = SHARED_MEDIA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    info = sf.info(path)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == math.ceil(info.frames * 24000 / info.samplerate)
    assert np.isfinite(x).all() and np.abs(x).max() > 0.01


# ----------------------------------------------------------------------------- image


def test_rgba_png_to_rgb_on_white(tmp_path):
    img = Image.new("RGBA", (6, 4), (0, 0, 0, 0))
    img.putpixel((1, 1), (255, 0, 0, 255))
    p = tmp_path / "a.png"
    img.save(p)
    rgb = load_image(p)
    assert rgb.mode == "RGB" and rgb.size == (6, 4)
    assert rgb.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert rgb.getpixel((1, 1)) == (255, 0, 0)


def test_one_pixel_and_p_mode_gif(tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (1, 2, 3)).save(p)
    assert load_image(p).getpixel((0, 0)) == (1, 2, 3)
    g = tmp_path / "pal.gif"
    Image.new("RGB", (5, 3), (0, 128, 255)).convert("P").save(g)
    with Image.open(g) as raw:
        assert raw.mode == "P"
    out = load_image(g)
    assert out.mode == "RGB" and out.size == (5, 3)


@pytest.mark.parametrize("mode", ["L", "LA", "CMYK", "I;16", "1"])
def test_other_modes(tmp_path, mode):
    p = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img = Image.new(mode, (3, 2))
    if mode == "I;16":
        img = Image.fromarray(np.full((2, 3), 65535, np.uint16))
    img.save(p)
    out = load_image(p)
    assert out.mode == "RGB" and out.size == (3, 2)
    if mode == "I;16":
        assert out.getpixel((0, 0)) == (255, 255, 255)


def test_bad_images(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("hello")
    assert "not a readable image" in assert_media_error(load_image, text)
    good = tmp_path / "good.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:2000])
    assert_media_error(load_image, cut)  # truncated: .load() fails inside the loader
    jpg = tmp_path / "cut.jpg"
    with Image.open(good) as raw:
        raw.save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[:600])
    assert_media_error(load_image, jpg)


@pytest.mark.parametrize("name", ["cat.jpg", "dog_image.jpg"])
def test_real_images(name):
    path = SHARED_MEDIA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    img = load_image(path)
    assert img.mode == "RGB" and min(img.size) > 16


# ----------------------------------------------------------------------------- video


def test_normal_mp4(tmp_path):
    p = tmp_path / "clip.mp4"
    write_mp4(p, 48)
    v = load_video(p)
    assert v.dtype == np.uint8 and v.shape == (32, 48, 64, 3)
    columns = v.mean(axis=(1, 3)).argmax(axis=1)  # (F,) where the bar is
    assert columns[0] < 10 and columns[-1] > 50
    assert np.all(np.diff(columns) >= 0) and len(set(columns.tolist())) > 20


def test_short_clip_repeats_frames(tmp_path):
    p = tmp_path / "short.mp4"
    write_mp4(p, 5)
    v = load_video(p)
    assert v.shape == (32, 48, 64, 3)
    distinct = {frame.tobytes() for frame in v}
    assert len(distinct) == 5
    np.testing.assert_array_equal(v[0], load_video(p, n_frames=1)[0])
    assert load_video(p, n_frames=3).shape == (3, 48, 64, 3)


def test_corrupt_mp4(tmp_path):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).bytes(4000))
    assert "not a readable video" in assert_media_error(load_video, noise)
    good = tmp_path / "good.mp4"
    write_mp4(good, 24)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_media_error(load_video, cut)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    assert_media_error(load_video, text)


def test_audio_only_mp4(tmp_path):
    p = tmp_path / "music.mp4"
    with av.open(str(p), "w") as c:
        write_aac(c)
    assert "no video stream" in assert_media_error(load_video, p)
    wav = tmp_path / "music.wav"
    sf.write(wav, tone(100, 8000), 8000)
    assert "no video stream" in assert_media_error(load_video, wav)


def test_video_stream_without_frames(tmp_path):
    """A Matroska file whose video stream has no packets (mp4 would drop the stream)."""
    p = tmp_path / "empty_video.mkv"
    with av.open(str(p), "w") as c:
        v = c.add_stream("mpeg4", rate=24)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        write_aac(c)
        for packet in v.encode():
            c.mux(packet)
    assert "no video frames" in assert_media_error(load_video, p)


# ----------------------------------------------------------------------------- huge media


def test_audio_longer_than_a_block_equals_one_shot_resample(tmp_path):
    import librosa

    p = tmp_path / "long.flac"
    x = tone(3 * (1 << 20) + 11, 48000, 2)  # three read blocks and a bit
    sf.write(p, x, 48000)
    whole = sf.read(p, dtype="float32", always_2d=True)[0].mean(axis=1)
    ref = librosa.util.fix_length(librosa.resample(whole, orig_sr=48000, target_sr=24000),
                                  size=math.ceil(len(whole) / 2))
    np.testing.assert_array_equal(load_audio(p), ref)  # streamed, yet the same samples


def _photo(w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1).astype(np.uint8)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_huge_image_is_shrunk_while_loading(tmp_path, suffix):
    p = tmp_path / f"big{suffix}"
    _photo(2400, 1800).save(p)
    full = load_image(p, target=None)
    small = load_image(p)  # target 224: short side kept >= 448
    assert full.size == (2400, 1800) and small.mode == "RGB"
    assert 448 <= min(small.size) < 900 and small.size[0] / small.size[1] == pytest.approx(4 / 3, rel=0.01)
    # what the encoder sees after its own resize to 224 x 224 is (nearly) the same
    a = np.asarray(full.resize((224, 224), Image.BICUBIC), dtype=float)
    b = np.asarray(small.resize((224, 224), Image.BICUBIC), dtype=float)
    assert np.abs(a - b).mean() < 2.0


def test_normal_images_are_not_shrunk(tmp_path):
    for name, img in (("a.jpg", _photo(880, 660)), ("b.png", _photo(1000, 890))):
        img.save(tmp_path / name)
        assert np.array_equal(np.asarray(load_image(tmp_path / name)),
                              np.asarray(load_image(tmp_path / name, target=None)))


def test_huge_palette_image_is_converted_before_reducing(tmp_path):
    p = tmp_path / "pal.png"
    img = Image.new("P", (1000, 1000))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, 1 blue
    img.paste(1, (0, 0, 1000, 500))
    img.save(p)
    out = np.asarray(load_image(p))
    assert out.shape[:2] == (500, 500)
    assert tuple(out[10, 10]) == (0, 0, 255) and tuple(out[-10, 10]) == (255, 0, 0)  # no index mixing


def test_decompression_bomb_limit_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 40)).save(tmp_path / "ok.png")      # 1600 px: over the warning limit only
    Image.new("RGB", (50, 50)).save(tmp_path / "bomb.png")    # 2500 px > 2 x the limit
    assert load_image(tmp_path / "ok.png").size == (40, 40)
    assert "image too large" in assert_media_error(load_image, tmp_path / "bomb.png")
