"""The media files of one item: its audio, its edited audio, its picture and its video.

Byte-for-byte deterministic: WAV as 16-bit PCM (libsndfile writes a time-stamped PEAK chunk for
float WAVs), PNG through PIL (no time stamp), MP4 through `llama.examples.write_video` (one
encoder thread, no creation time).
"""
from __future__ import annotations

from pathlib import Path

import soundfile as sf

from llama.examples import write_video

from . import world
from .plan import Item

AUDIO_DIR, IMAGE_DIR, VIDEO_DIR = "audio", "images", "videos"


def audio_name(item: Item) -> str:
    return f"{item.id}.wav"


def edit_audio_name(item: Item) -> str:
    return f"{item.id}_edit.wav"


def picture_name(item: Item) -> str:
    return f"{item.id}.png"


def video_name(item: Item) -> str:
    return f"{item.id}.mp4"


def make_media_dirs(folder: Path) -> None:
    for name in (AUDIO_DIR, IMAGE_DIR, VIDEO_DIR):
        (folder / name).mkdir(parents=True, exist_ok=True)


def write_wav(path: Path, piece: world.Piece) -> None:
    sf.write(path, world.render_audio(piece), world.AUDIO_RATE, subtype="PCM_16", format="WAV")


def write_item_media(folder: Path, item: Item) -> None:
    """audio/ID.wav, audio/ID_edit.wav, images/ID.png, videos/ID.mp4 under `folder`."""
    write_wav(folder / AUDIO_DIR / audio_name(item), item.piece)
    write_wav(folder / AUDIO_DIR / edit_audio_name(item), item.edit.target)
    world.render_picture(item.piece).save(folder / IMAGE_DIR / picture_name(item), format="PNG")
    write_video(folder / VIDEO_DIR / video_name(item), world.render_video(item.piece), fps=world.VIDEO_FPS)
