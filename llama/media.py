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
- Memory is bounded by the output, not the file (issue 13; figures in benchmarks/README.md).
  Audio is read in blocks, mixed to mono and resampled as it streams (soxr's stream gives the
  very samples librosa's one-shot resample gives). Images much larger than the encoder's input
  (`target`, 224 px) are shrunk while loading: JPEGs decode at 1/2..1/8 scale (libjpeg's
  draft mode), then any image is box-reduced by an integer factor that keeps at least twice
  `target` pixels on its short side, before mode conversion. Images under 4 x `target` on the
  short side are untouched; larger ones differ slightly from a full-size decode followed by the
  processor's resize (a box pre-filter), which the encoder cannot tell apart.
- Size limit: Pillow's decompression-bomb limit is kept on purpose. Up to 2 x
  Image.MAX_IMAGE_PIXELS (179 MP; 12000 x 12000 = 144 MP is accepted, without Pillow's warning,
  since loading it is now cheap) loads; larger is a MediaError "image too large", decided from
  the header before any pixel is decoded.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr
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
_BLOCK = 1 << 20  # audio frames read at a time, so only the mono output is ever held whole
_MAX_PRESIZE = 1 << 27  # output samples allocated up front from a header (512 MB, ~93 min at 24 kHz)
IMAGE_TARGET = 224  # ViT's input side: what load_image shrinks huge images towards
_REDUCING_GAP = 2   # keep >= 2 x target pixels for the processor's own (bicubic) resize
_REDUCIBLE = frozenset("L LA La RGB RGBA RGBa I F".split())  # modes Image.reduce averages properly


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


class _MonoStream:
    """Collects mono float32 blocks at `rate` as float32 (n,) at `sample_rate`, resampling each
    block as it arrives, so the input is never held whole. `expected` input samples, if known,
    size the output once; more samples grow it."""

    def __init__(self, path, rate: int, sample_rate: int, expected: int = 0):
        if rate <= 0:
            raise MediaError(path, f"invalid sample rate {rate}")
        self.path, self.rate, self.sample_rate = path, rate, sample_rate
        self.stream = None if rate == sample_rate else \
            soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
        # a header can claim any length: pre-size at most _MAX_PRESIZE, grow past it if real
        self.out = np.empty(min(self._n_out(expected), _MAX_PRESIZE), np.float32)  # (n_out,)
        self.n_in = self.n = 0

    def _n_out(self, n_in: int) -> int:
        """ceil(n_in * sample_rate / rate) in exact integers (librosa's float ratio can add one)."""
        return -(-n_in * self.sample_rate // self.rate)

    def add(self, block: np.ndarray, last: bool = False) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32)  # (n,)
        if not np.isfinite(block).all():
            raise MediaError(self.path, "audio contains NaN or infinite samples")
        self.n_in += block.size
        if self.stream is not None:
            block = self.stream.resample_chunk(block, last=last)
        if self.n + block.size > self.out.size:
            self.out = np.resize(self.out, max(self.n + block.size, 2 * self.out.size))
        self.out[self.n:self.n + block.size] = block
        self.n += block.size

    def result(self) -> np.ndarray:
        """float32 (ceil(T * sample_rate / rate),): trimmed or zero-padded to the exact length."""
        if self.stream is not None:
            self.add(np.zeros(0, np.float32), last=True)  # flush the resampler
        if self.n_in == 0:
            raise MediaError(self.path, "audio has no samples")
        want = self._n_out(self.n_in)
        if want > self.out.size:
            self.out = np.resize(self.out, want)
        self.out[self.n:want] = 0
        return self.out[:want] if want == self.out.size else self.out[:want].copy()


def _read_soundfile(path, p: Path, sample_rate: int) -> np.ndarray | None:
    """Mono float32 (T,) at `sample_rate` via libsndfile; None if libsndfile cannot open the file."""
    try:
        f = sf.SoundFile(p)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    try:
        with f:
            mono = _MonoStream(path, f.samplerate, sample_rate, max(f.frames, 0))
            for block in f.blocks(_BLOCK, dtype="float32", always_2d=True):
                mono.add(block.mean(axis=1))  # (block, C) -> (block,), as the published code mixes
    except (sf.LibsndfileError, RuntimeError) as e:
        raise MediaError(path, f"corrupt or truncated audio ({_reason(e)})") from e
    return mono.result()


def _read_pyav(path, p: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 (T,) at `sample_rate` via FFmpeg, for what libsndfile cannot open."""
    mono = None
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")  # planar float32, same layout and rate
            frames = container.decode(stream)
            for out in (o for frame in frames for o in resampler.resample(frame)):
                mono = mono or _MonoStream(path, out.sample_rate, sample_rate)
                mono.add(out.to_ndarray().mean(axis=0))  # (C, n) -> (n,)
            for out in resampler.resample(None):
                mono = mono or _MonoStream(path, out.sample_rate, sample_rate)
                mono.add(out.to_ndarray().mean(axis=0))
    except MediaError:
        raise
    except _AV_ERRORS as e:
        raise MediaError(path, f"not a readable audio file ({_reason(e)})") from e
    if mono is None:
        raise MediaError(path, "audio has no samples")
    return mono.result()


def load_audio(path: str | os.PathLike, sample_rate: int = 24000) -> np.ndarray:
    """Decode any audio file to float32 mono (T,) at `sample_rate`, whole length, never cut.

    Channels are averaged, then the signal is resampled with soxr (HQ, as librosa.resample),
    block by block. A file with one sample is valid (the encoder pads short audio); zero
    samples or NaN/inf is not.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    p = _check_file(path)
    mono = _read_soundfile(path, p, sample_rate)
    return mono if mono is not None else _read_pyav(path, p, sample_rate)  # (T,)


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


def _shrink(img: Image.Image, target: int | None) -> Image.Image:
    """Decode `img` (an opened file), as small as `target` allows: JPEG draft mode, then an
    integer box reduction keeping >= _REDUCING_GAP * target pixels on the short side."""
    floor = _REDUCING_GAP * target if target else 0
    if floor and img.format == "JPEG" and min(img.size) >= 2 * floor:
        img.draft(None, (floor, floor))  # libjpeg scales by 1/2, 1/4 or 1/8, never below floor
    img.load()
    factor = min(img.size) // floor if floor else 1
    if factor >= 2:
        if img.mode not in _REDUCIBLE:  # palette indices or 1-bit cannot be averaged
            img = _to_rgb(img)
        img = img.reduce(factor)
    return img


def load_image(path: str | os.PathLike, target: int | None = IMAGE_TARGET) -> Image.Image:
    """Open an image fully (truncated files fail here, not later) and return it as RGB.

    `target` is the side the encoder resizes to (224 for ViT): images at least twice
    `_REDUCING_GAP * target` on their short side come back shrunk, never below that
    (see the module notes); None keeps the full resolution.
    """
    p = _check_file(path)
    try:
        with warnings.catch_warnings():
            # up to Pillow's error limit is accepted on purpose (module notes): no warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                img = ImageOps.exif_transpose(_shrink(img, target))
                rgb = _to_rgb(img)
    except _IMAGE_ERRORS as e:
        if isinstance(e, UnidentifiedImageError):
            reason = "not a readable image file"
        elif isinstance(e, Image.DecompressionBombError):
            reason = f"image too large ({_reason(e)})"
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
