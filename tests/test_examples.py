"""llama.examples: the project's own example media load through llama.media, deterministically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from llama.examples import write_examples
from llama.media import load_audio, load_image, load_video

NAMES = ("melody.wav", "image.png", "video.mp4", "requests.jsonl")


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    return write_examples(tmp_path_factory.mktemp("examples") / "out")


def test_files_load_through_media(examples):
    folder = examples.parent
    assert examples.name == "requests.jsonl" and all((folder / n).is_file() for n in NAMES)

    info = sf.info(folder / "melody.wav")
    assert (info.samplerate, info.channels) == (44100, 2) and 2 <= info.duration <= 10
    audio = load_audio(folder / "melody.wav")  # (T,) at 24 kHz
    assert audio.dtype == np.float32 and len(audio) == round(info.duration * 24000)
    assert 0.1 < np.abs(audio).max() <= 1.0

    image = load_image(folder / "image.png")
    assert image.mode == "RGB" and image.size[0] >= 64
    assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 4  # a drawing, not flat

    video = load_video(folder / "video.mp4")  # (32, H, W, 3)
    assert video.shape[0] == 32 and video.shape[-1] == 3 and video.dtype == np.uint8
    assert np.abs(video[0].astype(int) - video[-1].astype(int)).mean() > 1  # something moves


def test_requests_jsonl(examples):
    lines = examples.read_text(encoding="utf-8").splitlines()
    reqs = [json.loads(line) for line in lines]
    assert len(reqs) == 4 and len({r["id"] for r in reqs}) == 4
    for r in reqs:
        assert isinstance(r["prompt"], str) and r["prompt"]
        assert isinstance(r["music"], bool) and r["duration"] > 0
        for key in ("audio", "image", "video"):
            if key in r:
                assert Path(r[key]).is_absolute() and Path(r[key]).is_file()
    by_kind = {k: [r for r in reqs if k in r] for k in ("audio", "image", "video")}
    assert all(len(v) == 1 for v in by_kind.values())
    assert by_kind["audio"][0]["prompt"] == "Describe this music."
    text_only = [r for r in reqs if not {"audio", "image", "video"} & r.keys()]
    assert len(text_only) == 1 and text_only[0]["music"] is True
    assert text_only[0]["duration"] == 2.0


def _decoded_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # (F, H, W, 3)


def test_deterministic(examples, tmp_path):
    again = write_examples(tmp_path)
    for name in ("melody.wav", "image.png"):
        assert (again.parent / name).read_bytes() == (examples.parent / name).read_bytes(), name
    # the video's pictures, not its bytes: an encoder may vary container bytes that never
    # reach a decoded frame (the writer pins what it can: one thread, bit-exact flags)
    np.testing.assert_array_equal(_decoded_frames(again.parent / "video.mp4"),
                                  _decoded_frames(examples.parent / "video.mp4"))
    write_examples(tmp_path)  # overwriting in place gives the same bytes too
    assert (tmp_path / "melody.wav").read_bytes() == (examples.parent / "melody.wav").read_bytes()


def test_cli(tmp_path):
    out = tmp_path / "cli"
    run = subprocess.run(
        [sys.executable, "-m", "llama.examples", str(out)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert all((out / n).is_file() for n in NAMES)
    assert str(out / "requests.jsonl") in run.stdout
