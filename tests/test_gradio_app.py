"""The chat demo's request handling on the tiny bundle, without starting a server."""
import warnings

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

import gradio_app  # noqa: E402
from llama.examples import write_examples  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return gradio_app.load_pipeline(gradio_app.parse_args(["--ckpt-dir", str(tiny_bundle)]))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("app_media")
    write_examples(d)
    (d / "text.wav").write_text("this is not audio\n")
    return d


def _respond(*args, **kwargs):
    """respond() with gradio's console fallback for gr.Warning captured; returns (out, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = gradio_app.respond(*args, **kwargs)
    return out, [str(w.message) for w in caught]


def test_text_only(pipe):
    (history, audio), _ = _respond(pipe, "Describe a calm song.", [], max_new_tokens=4)
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["content"] == "Describe a calm song."
    assert isinstance(history[1]["content"], str) and not history[1]["content"].startswith("Error")
    assert audio is None


def test_image_keeps_history(pipe, media):
    earlier = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    (history, audio), _ = _respond(pipe, "What is in this picture?", earlier, image=str(media / "image.png"),
                                   max_new_tokens=4)
    assert history[:2] == earlier and len(history) == 4
    assert "image.png" in history[2]["content"]
    assert not history[3]["content"].startswith("Error")
    assert audio is None


def test_make_music(pipe):
    duration = 0.5
    (history, audio), _ = _respond(pipe, "Write a cheerful tune.", None, music=True, duration=duration,
                                   max_new_tokens=2, seed=3)
    assert audio is not None
    sr, wave = audio
    assert sr == 32000
    assert wave.shape == (round(duration * sr),) and wave.dtype == np.int16
    assert "music: 0.50 s at 32000 Hz" in history[-1]["content"]


def test_bad_media_is_one_line_error(pipe, media):
    bad = str(media / "text.wav")
    (history, audio), warned = _respond(pipe, "Describe this music.", [], audio=bad, max_new_tokens=2)
    assert audio is None
    err = history[-1]["content"]
    assert history[-1]["role"] == "assistant" and err.startswith("Error: ") and "\n" not in err
    assert "text.wav" in err
    assert any("text.wav" in w for w in warned)
    # the app keeps working afterwards
    (history, _), _ = _respond(pipe, "And now?", history, max_new_tokens=2)
    assert len(history) == 4 and not history[-1]["content"].startswith("Error")


def test_bad_numbers_and_empty_message(pipe):
    (history, audio), warned = _respond(pipe, "Music!", [], music=True, duration=0)
    assert history[-1]["content"].startswith("Error: ") and audio is None
    (history, audio), warned = _respond(pipe, "   ", [{"role": "user", "content": "x"}])
    assert history == [{"role": "user", "content": "x"}] and audio is None and warned


def test_build_demo(pipe):
    demo = gradio_app.build_demo(pipe)
    assert isinstance(demo, gr.Blocks)


def test_cli_defaults():
    args = gradio_app.parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.ckpt_dir is None
    assert args.device == "cpu" and args.dtype == "float32" and not args.trust_remote_code
    assert gradio_app.parse_args(["--host", "0.0.0.0"]).host == "0.0.0.0"


def test_never_shares(monkeypatch, tiny_bundle):
    seen = {}

    class FakeDemo:
        def queue(self, **kwargs):
            seen.update(kwargs)
            return self

        def launch(self, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(gradio_app, "load_pipeline", lambda args: object())
    monkeypatch.setattr(gradio_app, "build_demo", lambda pipe, cfg=None: FakeDemo())
    assert gradio_app.main(["--ckpt-dir", str(tiny_bundle), "--concurrency", "2"]) == 0
    assert seen["share"] is False and seen["server_name"] == "127.0.0.1"
    assert seen["default_concurrency_limit"] == 2 and seen["max_file_size"] == 100_000_000
