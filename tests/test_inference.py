"""End to end on the tiny bundle: the CLI and the pipeline, including every kind of bad input."""
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import inference
from llama.errors import UserError
from llama.examples import write_examples
from llama.media import MediaError
from llama.pipeline import BundlePaths, MuMuPipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return MuMuPipeline.load(BundlePaths.from_bundle(tiny_bundle))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    write_examples(d)
    sr = 8000
    sf.write(d / "one_sample.wav", np.array([0.5], dtype=np.float32), sr)
    sf.write(d / "ten_minutes.wav", (0.1 * np.sin(np.arange(600 * sr) * 0.05)).astype(np.float32), sr)
    sf.write(d / "song.flac", np.random.default_rng(0).uniform(-0.5, 0.5, (sr * 2, 2)).astype(np.float32), sr)
    (d / "truncated.flac").write_bytes((d / "song.flac").read_bytes()[:3000])
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("this is not audio\n")
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(d / "rgba.png")
    Image.new("RGB", (1, 1), (0, 255, 0)).save(d / "pixel.png")
    (d / "corrupt.mp4").write_bytes((d / "video.mp4").read_bytes()[:2000])
    with av.open(str(d / "audio_only.mp4"), "w") as c:
        s = c.add_stream("aac", rate=sr)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = sr
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return d


def test_answers_about_each_modality_and_media_matter(pipe, media):
    text_only = pipe.answer("Describe it.", max_new_tokens=12)
    for kind, name in (("audio", "melody.wav"), ("image", "image.png"), ("video", "video.mp4")):
        ans = pipe.answer("Describe it.", max_new_tokens=12, **{kind: media / name})
        assert ans.tokens and ans.audio is None
        assert ans.tokens != text_only.tokens, kind      # the tiny bundle's gates are open


def test_music_has_the_requested_length_and_rate(pipe, media):
    ans = pipe.answer("Write music.", music=True, duration=1.5, max_new_tokens=4)
    assert ans.sample_rate == 32000 and ans.audio.shape == (48000,)
    assert np.isfinite(ans.audio).all() and np.abs(ans.audio).max() > 0


@pytest.mark.parametrize("kind,name", [("audio", "one_sample.wav"), ("audio", "ten_minutes.wav"),
                                       ("image", "rgba.png"), ("image", "pixel.png")])
def test_edge_media_give_answers(pipe, media, kind, name):
    assert pipe.answer("Describe it.", max_new_tokens=3, **{kind: media / name}).tokens


def test_ten_minute_audio_is_encoded_whole(pipe, media):
    from llama.media import load_audio
    enc = pipe.encoder("audio")
    feats = enc.encode(load_audio(media / "ten_minutes.wav", enc.sampling_rate))
    assert feats.shape[1] > 0.99 * 600 * 75          # 75 frames per second, all ten minutes


@pytest.mark.parametrize("kind,name,reason", [
    ("audio", "missing.wav", "missing.wav"), ("audio", "empty.wav", "empty"),
    ("audio", "text.wav", "text.wav"), ("audio", "truncated.flac", "truncated.flac"),
    ("video", "corrupt.mp4", "corrupt.mp4"), ("video", "audio_only.mp4", "no video stream"),
])
def test_bad_media_are_one_line_errors(pipe, media, kind, name, reason):
    with pytest.raises(MediaError) as e:
        pipe.answer("Describe it.", max_new_tokens=3, **{kind: media / name})
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_prompt_longer_than_the_context_is_refused(pipe):
    with pytest.raises(UserError, match="context"):
        pipe.answer("music " * 2000, max_new_tokens=3)


def test_batch_writes_results_and_skips_done_requests(tiny_bundle, media, tmp_path, capsys):
    reqs = tmp_path / "requests.jsonl"
    lines = [json.dumps({"id": "a", "prompt": "Describe it.", "image": str(media / "image.png")}),
             json.dumps({"id": "m", "prompt": "Music please.", "music": True, "duration": 0.5}),
             json.dumps({"id": "bad", "prompt": "Describe it.", "audio": str(media / "text.wav")}),
             "{not json", json.dumps({"id": "a", "prompt": "duplicate id"})]
    reqs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["--ckpt-dir", str(tiny_bundle), "--input", str(reqs), "--output-dir", str(out), "--max-new-tokens", "5"]
    assert inference.main(argv) == 1                 # one request failed, two lines unreadable
    err = capsys.readouterr().err
    assert "requests.jsonl:4: invalid JSON" in err and "duplicate id" in err and "text.wav" in err
    recs = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["a", "m", "bad"]
    assert recs[0]["answer"] and recs[2]["error"] and recs[1]["wav"] == "m.wav"
    info = sf.info(out / "m.wav")
    assert info.samplerate == 32000 and info.frames == 16000
    inference.main(argv)                             # rerun: only the failed one runs again
    assert "2 already done, 1 to run" in capsys.readouterr().err


def test_cli_error_is_one_line_without_traceback(tiny_bundle, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 100)
    proc = subprocess.run([sys.executable, str(ROOT / "inference.py"), "--ckpt-dir", str(tiny_bundle),
                           "--prompt", "What happens?", "--video", str(bad)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "clip.mp4" in proc.stderr
