"""A hostile user against the chat demo: each mistake is a one-line warning naming the user's own
file (never the server's upload folder), the app keeps going, shown text has no control chars."""
from unittest import mock

import pytest

gr = pytest.importorskip("gradio")

import gradio_app  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return gradio_app.load_pipeline(gradio_app.parse_args(["--ckpt-dir", str(tiny_bundle)]))


def respond(pipe, message, **kwargs):
    """(history, audio, the warnings the app showed): only the app's own, not any library's."""
    kwargs.setdefault("max_new_tokens", 2)
    shown: list[str] = []
    with mock.patch.object(gradio_app, "_warn", shown.append):
        history, audio = gradio_app.respond(pipe, message, [], **kwargs)
    return history, audio, shown


def assert_error(history, audio, warned, reason):
    err = history[-1]["content"]
    assert audio is None and err.startswith("Error: ") and reason in err, err
    assert "\n" not in err and err.isprintable() and any(reason in w for w in warned)


@pytest.fixture
def upload(tmp_path):
    """A broken upload where gradio puts them: <temp dir>/<hash>/<original name>."""
    folder = tmp_path / "gradio" / "3f2a9c0d1e"
    folder.mkdir(parents=True)
    path = folder / "my song.wav"
    path.write_text("not audio at all\n")
    return path


def test_upload_error_names_the_file_not_the_server_path(pipe, upload):
    history, audio, warned = respond(pipe, "Describe this music.", audio=str(upload))
    assert_error(history, audio, warned, "my song.wav")
    assert str(upload.parent) not in history[-1]["content"] and not any(str(upload.parent) in w for w in warned)
    assert "3f2a9c0d1e" not in history[-1]["content"] and "3f2a9c0d1e" not in history[0]["content"]


@pytest.mark.parametrize("kwargs, reason", [
    ({"duration": float("nan")}, "duration must be a finite number"),
    ({"duration": "abc"}, "duration must be a number, got 'abc'"),
    ({"duration": 1e9}, "duration must be > 0 and <= 120"),
    ({"duration": 121}, "duration must be > 0 and <= 120"),
    ({"duration": None}, "duration must be a number, got None"),
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"temperature": -1}, "temperature must be >= 0"),
    ({"top_p": 0}, "top_p must be > 0"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"max_new_tokens": float("inf")}, "max_new_tokens must be an integer, got inf"),
    ({"music": "yes"}, "make music must be true or false"),
])
def test_bad_number_is_one_line(pipe, kwargs, reason):
    kwargs = {"music": True, **kwargs}
    history, audio, warned = respond(pipe, "Write music.", **kwargs)
    assert_error(history, audio, warned, reason)


def test_undecodable_message(pipe):
    history, audio, warned = respond(pipe, "caf\udce9 music")
    assert_error(history, audio, warned, "message is not valid UTF-8")
    assert history[0]["content"].isprintable()


def test_shown_text_has_no_control_characters(pipe, monkeypatch):
    real = pipe.answer

    def answer(*a, **k):
        ans = real(*a, **k)
        ans.text = "\x1b[2Jcleared\x00 screen\r\nline two\x07"
        return ans

    monkeypatch.setattr(pipe, "answer", answer)
    history, audio, warned = respond(pipe, "Hello\x1b[31m red\x08")
    assert history[0]["content"] == "Hello [31m red"
    assert history[1]["content"] == "[2Jcleared  screen\nline two" and not warned


def test_keeps_working_after_errors(pipe, upload):
    respond(pipe, "Describe.", audio=str(upload))
    history, audio, warned = respond(pipe, "Write music.", music=True, duration=0.05, seed=3.0)
    assert audio is not None and audio[1].shape == (1600,) and not warned, warned


def test_bad_bundle_is_one_line(tmp_path, capsys):
    assert gradio_app.main(["--ckpt-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bundle.json" in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        gradio_app.parse_args(["--port", "http"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: argument --port") and err.count("\n") == 1


def test_port_in_use_is_one_line(monkeypatch, tiny_bundle, capsys):
    class Demo:
        def queue(self, **kwargs):
            return self

        def launch(self, **kwargs):
            raise OSError("Cannot find empty port in range: 7860-7860.")

    monkeypatch.setattr(gradio_app, "load_pipeline", lambda args: object())
    monkeypatch.setattr(gradio_app, "build_demo", lambda pipe, cfg=None: Demo())
    assert gradio_app.main(["--ckpt-dir", str(tiny_bundle)]) == 2
    assert capsys.readouterr().err == "error: cannot serve on 127.0.0.1:7860 (Cannot find empty port in range: 7860-7860.)\n"
