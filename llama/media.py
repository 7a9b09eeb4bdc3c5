"""Turn user files into the arrays the frozen encoders expect.

    music  -> load_audio -> float32 mono (T,) at 24 kHz        (MERT)
    image  -> load_image -> PIL RGB image                      (ViT; resized by its processor)
    video  -> load_video -> uint8 (F, H, W, 3), F = 32 frames   (ViViT)

Every failure a user can cause (missing, empty, corrupt, truncated or unsupported file) raises
`MediaError`, whose message is one line `"<path>: <reason>"`, so a CLI or a chat app can show it
as is instead of a decoder traceback. Programming errors (a non-positive sample rate) stay
ordinary exceptions.

Decisions:
- Audio is never cut: the published code kept only the first 60 s.
- A truncated file that the decoder notices (FLAC losing sync) is an error, not silently
  shortened audio. Formats that do not record their length reliably (a WAV cut short) decode what
  is there, as every player does.
- soundfile (libsndfile: wav, flac, ogg, mp3, aiff, ...) is tried first; files it cannot open at
  all (m4a, aac, the audio track of an mp4, ...) are decoded with PyAV.
- Images with transparency are composited on white, so a transparent background does not turn
  black; EXIF orientation is applied so a phone photo is seen upright.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import av
import librosa
import numpy as np
import soundfile as sf
from PIL import Image, ImageOps, UnidentifiedImageError
from .errors import UserError

AUDIO_EXTENSIONS = frozenset(
    ".wav .flac .mp3 .ogg .oga .opus .m4a .aac .aif .aiff .au .caf .w64 .wma".split()
)
IMAGE_EXTENSIONS = frozenset(".png .jpg .jpeg .gif .bmp .webp .tif .tiff .ppm .pgm .ico".split())
VIDEO_EXTENSIONS = frozenset(".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .wmv .flv".split())

_AV_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError)
_IMAGE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    ValueError,
    SyntaxError,  # PIL's PNG reader reports broken chunks this way
    EOFError,
    struct.error,
)
_BLOCK = 1 << 20  # audio frames read at a time, so only the mono mix is ever held in memory


class MediaError(UserError, ValueError):
    """A user-supplied media file that cannot be used; `str()` is `"<path>: <reason>"`."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split()) or "unknown error"
        super().__init__(" ".join(f"{self.path}: {self.reason}".splitlines()))

    def __reduce__(self):  # picklable, e.g. across DataLoader worker processes
        return type(self), (self.path, self.reason)


def guess_kind(path: str | os.PathLike) -> str | None:
    """'audio', 'image', 'video' or None, from the file extension only."""
    ext = Path(path).suffix.lower()
    for kind, exts in (("audio", AUDIO_EXTENSIONS), ("image", IMAGE_EXTENSIONS),
                       ("video", VIDEO_EXTENSIONS)):
        if ext in exts:
            return kind
    return None


def is_audio_path(path: str | os.PathLike) -> bool:
    return guess_kind(path) == "audio"


def is_image_path(path: str | os.PathLike) -> bool:
    return guess_kind(path) == "image"


def is_video_path(path: str | os.PathLike) -> bool:
    return guess_kind(path) == "video"


def _reason(exc: BaseException) -> str:
    """A short, one-line cause from a decoder exception."""
    if isinstance(exc, sf.LibsndfileError):
        text = exc.error_string
    elif isinstance(exc, av.FFmpegError):
        text = exc.strerror or str(exc)
    else:
        text = str(exc)
    text = " ".join(str(text).split()).rstrip(".").removeprefix("Error : ")
    return text or type(exc).__name__


def _check_file(path: str | os.PathLike) -> Path:
    """Fail early, with a clear reason, on the cases every loader shares."""
    p = Path(path)
    if not p.exists():
        raise MediaError(path, "file not found")
    if not p.is_file():
        raise MediaError(path, "not a regular file")
    try:
        with p.open("rb") as f:
            head = f.read(1)
    except OSError as e:
        raise MediaError(path, f"cannot read file ({e.strerror or e})") from e
    if not head:
        raise MediaError(path, "file is empty")
    return p


# ----------------------------------------------------------------------------- audio


def _read_soundfile(path: str | os.PathLike, p: Path) -> tuple[np.ndarray, int] | None:
    """Mono float32 (T,) and its rate via libsndfile; None if libsndfile cannot open the file."""
    try:
        f = sf.SoundFile(p)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    try:
        with f:
            # (block, C) -> (block,): the mean over channels, as the published code does
            blocks = [b.mean(axis=1) for b in f.blocks(_BLOCK, dtype="float32", always_2d=True)]
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError) as e:
        raise MediaError(path, f"corrupt or truncated audio ({_reason(e)})") from e
    mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)  # (T,)
    return mono, rate


def _read_pyav(path: str | os.PathLike, p: Path) -> tuple[np.ndarray, int]:
    """Mono float32 (T,) and its rate via FFmpeg, for what libsndfile cannot open."""
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")  # planar float32, same layout and rate
            chunks, rate = [], stream.codec_context.sample_rate
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))  # (C, n) -> (n,)
                    rate = out.sample_rate
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
    except MediaError:
        raise
    except _AV_ERRORS as e:
        raise MediaError(path, f"not a readable audio file ({_reason(e)})") from e
    mono = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return mono, rate


def load_audio(path: str | os.PathLike, sample_rate: int = 24000) -> np.ndarray:
    """Decode any audio file to float32 mono (T,) at `sample_rate`, whole length, never cut.

    Channels are averaged, then the signal is resampled with soxr (librosa.resample). A file
    with one sample is valid (the encoder pads short audio); zero samples or NaN/inf is not.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    p = _check_file(path)
    mono, rate = _read_soundfile(path, p) or _read_pyav(path, p)  # (T,)
    if mono.size == 0:
        raise MediaError(path, "audio has no samples")
    if not np.isfinite(mono).all():
        raise MediaError(path, "audio contains NaN or infinite samples")
    if rate <= 0:
        raise MediaError(path, f"invalid sample rate {rate}")
    if rate != sample_rate:
        # length ceil(T * sr / rate) in exact integers (librosa's float ratio can add a sample)
        n_out = -(-mono.size * sample_rate // rate)
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate)
        mono = librosa.util.fix_length(mono, size=n_out)  # (n_out,)
    return np.ascontiguousarray(mono, dtype=np.float32)


# ----------------------------------------------------------------------------- image


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; alpha composited on white, 16-bit grey scaled, not clipped."""
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        grey = np.asarray(img, dtype=np.float64)  # (H, W)
        if grey.size and grey.max() > 255:
            grey = grey / 257.0  # 16-bit range -> 8-bit (65535 -> 255)
        img = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), mode="L")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image fully (truncated files fail here, not later) and return it as RGB."""
    p = _check_file(path)
    try:
        with Image.open(p) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except _IMAGE_ERRORS as e:
        if isinstance(e, UnidentifiedImageError):
            reason = "not a readable image file"
        else:
            reason = f"corrupt or unsupported image ({_reason(e)})"
        raise MediaError(path, reason) from e
    if rgb.width < 1 or rgb.height < 1:
        raise MediaError(path, "image has no pixels")
    return rgb


# ----------------------------------------------------------------------------- video


def _spread(total: int, n: int) -> list[int]:
    """n indices spread evenly over [0, total); repeats indices when total < n."""
    return np.linspace(0, total - 1, n).round().astype(int).tolist()


def _decode_frames(p: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode the first video stream; keep only the `wanted` frames as RGB (H, W, 3)."""
    frames: dict[int, np.ndarray] = {}
    count, size = 0, None
    with av.open(str(p)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            count = i + 1
            if i in wanted:
                size = size or (frame.width, frame.height)  # all frames at the first's size
                frames[i] = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
    return frames, count


def load_video(path: str | os.PathLike, n_frames: int = 32) -> np.ndarray:
    """Decode `n_frames` RGB frames spread evenly over the whole clip: uint8 (F, H, W, 3).

    Only the chosen frames are converted and kept, so long clips do not fill memory. Clips with
    fewer than `n_frames` frames repeat frames at the same evenly spread indices.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    p = _check_file(path)
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            total = stream.frames or sum(1 for pkt in container.demux(stream) if pkt.size)
        idx = _spread(total, n_frames) if total > 0 else []
        frames, count = _decode_frames(p, set(idx))
        if count and count != total:  # the container's frame count was wrong; pick again
            idx = _spread(count, n_frames)
            if not set(idx) <= frames.keys():
                frames, count = _decode_frames(p, set(idx))
    except MediaError:
        raise
    except _AV_ERRORS as e:
        raise MediaError(path, f"not a readable video file ({_reason(e)})") from e
    if count == 0:
        raise MediaError(path, "no video frames could be decoded")
    return np.stack([frames[i] for i in idx])  # (F, H, W, 3)
