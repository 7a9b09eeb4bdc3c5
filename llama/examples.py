"""Example media the project makes itself, so demos and tests need no downloads.

    python -m llama.examples OUT_DIR

writes, deterministically (same bytes on every run), into OUT_DIR:
    melody.wav      4 s synthesized melody with harmonics, 44.1 kHz stereo (exercises the
                    resampling and channel-mixing path of `llama.media.load_audio`)
    image.png       224 x 224 RGBA drawing (sun, house, tree) with a transparent margin
    video.mp4       2 s, 24 fps, 160 x 120, a ball bouncing across a gradient (H.264, or
                    MPEG-4 part 2 when this FFmpeg has no libx264)
    requests.jsonl  four example requests, one JSON object per line:
                    {"id", "prompt", "audio"?, "image"?, "video"?, "music", "duration"}
                    a media key is absent when the request has no such input; media paths are
                    ABSOLUTE (OUT_DIR resolved), so any consumer can open them from any working
                    directory. `music` asks for a generated clip of `duration` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import av
from fractions import Fraction

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

AUDIO_RATE = 44100
VIDEO_FPS, VIDEO_SECONDS, VIDEO_SIZE = 24, 2, (160, 120)  # (W, H), even for yuv420p


def melody(sample_rate: int = AUDIO_RATE) -> np.ndarray:
    """A C-major tune with three harmonics and a soft envelope: float32 (T, 2) stereo."""
    notes = [60, 64, 67, 72, 71, 67, 64, 65, 69, 72, 74, 72, 67, 64, 62, 60]  # MIDI numbers
    beat = 0.25  # seconds per note
    n = int(beat * sample_rate)
    t = np.arange(n) / sample_rate  # (n,)
    attack, release = int(0.01 * sample_rate), int(0.08 * sample_rate)
    env = np.exp(-3.0 * t)
    env[:attack] *= np.linspace(0.0, 1.0, attack)
    env[-release:] *= np.linspace(1.0, 0.0, release)
    parts = []
    for i, midi in enumerate(notes):
        f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
        tone = sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
        pan = 0.5 + 0.3 * np.sin(i * np.pi / 4)  # the tune wanders between the speakers
        parts.append(np.stack([(1 - pan) * tone, pan * tone], axis=1) * env[:, None])
    bass = 0.3 * np.sin(2 * np.pi * 65.41 * np.arange(n * len(notes)) / sample_rate)  # C2 drone
    audio = np.concatenate(parts) + bass[:, None]  # (T, 2)
    return (0.9 * audio / np.abs(audio).max()).astype(np.float32)


def picture(size: int = 224) -> Image.Image:
    """A small RGBA drawing with a transparent margin (exercises alpha handling)."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    s = size / 224
    box = lambda *xy: [round(v * s) for v in xy]  # noqa: E731 - drawn for 224, scaled
    draw.rounded_rectangle(box(8, 8, 216, 216), radius=round(16 * s), fill=(135, 200, 250, 255))
    draw.rectangle(box(8, 160, 216, 216), fill=(70, 160, 60, 255))  # grass
    draw.ellipse(box(150, 24, 196, 70), fill=(255, 210, 40, 255))  # sun
    draw.rectangle(box(40, 110, 120, 170), fill=(200, 60, 50, 255))  # house
    draw.polygon(box(32, 112, 80, 70, 128, 112), fill=(120, 60, 30, 255))  # roof
    draw.rectangle(box(70, 135, 90, 170), fill=(90, 50, 20, 255))  # door
    draw.rectangle(box(160, 120, 170, 170), fill=(110, 70, 30, 255))  # trunk
    draw.ellipse(box(140, 85, 190, 130), fill=(40, 120, 40, 255))  # tree top
    return img


def video_frames() -> list[np.ndarray]:
    """A red ball bouncing left to right over a blue-green gradient: uint8 (H, W, 3) each."""
    w, h = VIDEO_SIZE
    n = VIDEO_FPS * VIDEO_SECONDS
    yy, xx = np.mgrid[0:h, 0:w]  # (H, W)
    background = np.stack([20 + 40 * xx / w, 80 + 100 * yy / h, 200 - 80 * yy / h], axis=-1)
    frames = []
    for i in range(n):
        cx = 15 + (w - 30) * i / (n - 1)
        cy = h - 20 - (h - 45) * abs(np.sin(3 * np.pi * i / (n - 1)))
        frame = background.copy()
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= 12**2] = (230, 40, 40)
        frames.append(frame.astype(np.uint8))
    return frames


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H * 3 // 2, W) uint8 planar Y, U, V (BT.601 limited range, 2x2
    chroma means), the layout `av.VideoFrame.from_ndarray(format="yuv420p")` takes.

    Done here, in numpy, so the encoder's input depends on nothing but the frame (PyAV's swscale
    conversion picks SIMD paths and threads at run time). H and W must be even."""
    f = frame.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape

    def half(c):                                                          # (H, W) -> (H/2, W/2)
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [np.clip(np.rint(c), 0, 255).astype(np.uint8).ravel() for c in (y, half(u), half(v))]
    return np.concatenate(planes).reshape(h * 3 // 2, w)


def _yuv_frame(yuv: np.ndarray, w: int, h: int) -> av.VideoFrame:
    """A yuv420p VideoFrame whose every byte is set, row padding included (edge pixels repeated;
    `from_ndarray` leaves the padding after each row uninitialised)."""
    frame = av.VideoFrame(w, h, "yuv420p")
    y = yuv[:h]                                                           # (H, W)
    u, v = yuv[h:].reshape(2, h // 2, w // 2)                             # 2 x (H/2, W/2)
    for plane, rows in zip(frame.planes, (y, u, v)):
        buf = np.repeat(rows[:, -1:], plane.line_size, axis=1)             # (rows, line_size)
        buf[:, :rows.shape[1]] = rows
        plane.update(np.ascontiguousarray(buf).tobytes())
    return frame


def write_video(path: Path, frames: list[np.ndarray], fps: int = VIDEO_FPS) -> None:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    h, w = frames[0].shape[:2]
    # bit-exact muxer and encoder: no library version strings in the file
    with av.open(str(path), mode="w", options={"fflags": "+bitexact"}) as container:
        # lossless (qp 0): x264 does not always make the same choices for the same frames, but
        # lossless, any choice decodes to exactly the input, so the decoded frames never vary
        options = {"flags": "+bitexact", **({"qp": "0"} if codec == "libx264" else {})}
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1        # slice threading would vary run to run
        for i, frame in enumerate(frames):
            yuv = _yuv_frame(rgb_to_yuv420p(frame), w, h)
            yuv.pts, yuv.time_base = i, Fraction(1, fps)
            for packet in stream.encode(yuv):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)


def requests(out_dir: Path) -> list[dict]:
    """The four example requests; media paths are absolute."""
    audio, image, video = (str(out_dir / name) for name in ("melody.wav", "image.png", "video.mp4"))
    return [
        {"id": "describe-music", "prompt": "Describe this music.", "audio": audio,
         "music": False, "duration": 2.0},
        {"id": "describe-image", "prompt": "Describe this image.", "image": image,
         "music": False, "duration": 2.0},
        {"id": "describe-video", "prompt": "What happens in this video?", "video": video,
         "music": False, "duration": 2.0},
        {"id": "generate-music", "prompt": "Generate a cheerful piano melody in C major.",
         "music": True, "duration": 2.0},
    ]


def write_examples(out_dir: str | os.PathLike) -> Path:
    """Write all example files into `out_dir` (created if needed); returns requests.jsonl."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sf.write(out / "melody.wav", melody(), AUDIO_RATE, subtype="PCM_16")
    picture().save(out / "image.png")
    write_video(out / "video.mp4", video_frames())
    jsonl = out / "requests.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in requests(out)), encoding="utf-8")
    return jsonl


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the example files into")
    jsonl = write_examples(parser.parse_args(argv).out_dir)
    for path in sorted(jsonl.parent.glob("*")):
        if path.name in {"melody.wav", "image.png", "video.mp4", "requests.jsonl"}:
            print(path)


if __name__ == "__main__":
    main()
