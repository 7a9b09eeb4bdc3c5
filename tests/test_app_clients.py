"""The chat app served on 127.0.0.1 and used through gradio_client, as a remote visitor would:
questions, uploads, music, follow-ups that need the previous turn, bad uploads, 8 visitors at once.
Expected answers come from the same pipeline driven directly (llama/chat.py), never from literals."""
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
sf = pytest.importorskip("soundfile")

import gradio_app  # noqa: E402
from llama.chat import ChatSettings, Conversation  # noqa: E402
from llama.examples import write_examples  # noqa: E402

TOKENS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return gradio_app.load_pipeline(gradio_app.parse_args(["--ckpt-dir", str(tiny_bundle)]))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("client_media")
    write_examples(d)
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    (d / "notes.txt").write_text("a text file, not music\n")
    big = np.zeros(750_000, np.float32)     # 3 MB of 32-bit samples: over the 2 MB chat limit, under the hard cap
    sf.write(d / "big.wav", big, 24000, subtype="FLOAT")
    return d


@pytest.fixture(scope="module")
def app(pipe, tmp_path_factory):
    cfg = gradio_app.AppConfig(max_upload_mb=2.0, workdir=tmp_path_factory.mktemp("app_work"))
    demo = gradio_app.build_demo(pipe, cfg)
    port = _free_port()
    gradio_app.serve(demo, cfg, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/", cfg
    demo.close()


def _client(url, tmp_path):
    return gradio_client.Client(url, verbose=False, download_files=str(tmp_path))


def _ask(client, message, history=None, audio=None, music=False, duration=0.2, seed=0):
    """One turn through the API; returns (history, wav path or None)."""
    upload = None if audio is None else gradio_client.handle_file(str(audio))
    out = client.predict(message, history or [], upload, None, None, music, duration, 0, 0.9, seed, TOKENS,
                         api_name="/chat")
    return out[0], out[1]


def _expected(pipe, turns, tmp_path):
    """What the same conversation gives when driven directly: answers per turn."""
    conv = Conversation(tmp_path)
    answers = []
    for message, kwargs in turns:
        music = kwargs.pop("music", False)
        ans = conv.ask(pipe, message, music=music, settings=ChatSettings(max_new_tokens=TOKENS, duration=0.2),
                       **kwargs)
        answers.append(gradio_app.inference.display_text(ans.text) or "(no text)")
    conv.close()
    return answers


def _text(message) -> str:
    """A chat message's text (gradio 6 sends content as a list of typed parts)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")


def test_text_question(app, pipe, tmp_path):
    url, _ = app
    history, wav = _ask(_client(url, tmp_path), "Describe a calm song.")
    assert [m["role"] for m in history] == ["user", "assistant"] and wav is None
    assert _text(history[1]) == _expected(pipe, [("Describe a calm song.", {})], tmp_path / "x")[0]


def test_question_about_audio_and_follow_up(app, pipe, media, tmp_path):
    url, _ = app
    client = _client(url, tmp_path)
    history, _ = _ask(client, "Describe this music.", audio=media / "melody.wav")
    history, _ = _ask(client, "What instrument plays?", history)            # no upload: carried over
    want = _expected(pipe, [("Describe this music.", {"audio": str(media / "melody.wav")}),
                            ("What instrument plays?", {})], tmp_path / "x")
    fresh = _expected(pipe, [("What instrument plays?", {})], tmp_path / "y")[0]
    assert [_text(m) for m in history[1::2]] == want
    assert want[1] != fresh          # the follow-up depends on the earlier turn and its audio


def test_music_request_returns_wav(app, tmp_path):
    url, _ = app
    history, wav = _ask(_client(url, tmp_path), "Write a cheerful tune.", music=True, duration=0.5, seed=3)
    assert wav is not None and Path(wav).suffix == ".wav"
    data, rate = sf.read(wav)
    assert rate == 32000 and len(data) == round(0.5 * 32000)
    assert "music: 0.50 s at 32000 Hz" in _text(history[-1])


@pytest.mark.parametrize("name, reason", [("corrupt.wav", "corrupt.wav"), ("notes.txt", "not a audio file type"),
                                          ("big.wav", "uploads are limited to 2 MB")])
def test_bad_upload_is_a_chat_message_and_the_next_request_is_answered(app, media, tmp_path, name, reason):
    url, _ = app
    client = _client(url, tmp_path)
    history, wav = _ask(client, "Describe this music.", audio=media / name)
    err = _text(history[-1])
    assert err.startswith("Error: ") and reason in err and wav is None and "\n" not in err
    history, _ = _ask(client, "Describe a calm song.", history)
    assert len(history) == 4 and not _text(history[-1]).startswith("Error")


def test_eight_clients_at_once(app, pipe, media, tmp_path):
    url, _ = app
    asks = [(f"Describe song number {i}.", {"audio": str(media / "melody.wav")} if i % 2 else {})
            for i in range(8)]
    want = [_expected(pipe, [(m, dict(k))], tmp_path / f"w{i}")[0] for i, (m, k) in enumerate(asks)]
    got, errors = [None] * 8, []

    def visit(i):
        try:
            message, kwargs = asks[i]
            history, _ = _ask(_client(url, tmp_path / f"c{i}"), message, audio=kwargs.get("audio"))
            got[i] = (_text(history[0]), _text(history[1]))
        except Exception as e:        # noqa: BLE001  reported below with the client's number
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    assert all(g is not None for g in got)                          # every answer arrived
    for i, (question, answer) in enumerate(got):                    # each to its own question
        assert question.startswith(asks[i][0]) and answer == want[i], i
    assert len(set(want)) > 1                                       # different inputs, different answers


def test_sessions_are_separate_and_cleaned(app, pipe, tmp_path):
    url, cfg = app
    a, b = _client(url, tmp_path / "a"), _client(url, tmp_path / "b")
    before = set(cfg.workdir.iterdir())
    _ask(a, "Write a tune.", music=True)
    mine = [f for f in set(cfg.workdir.iterdir()) - before if list(f.glob("*.wav"))]
    assert len(mine) == 1                                          # a's own folder holds a's music
    history_b, _ = _ask(b, "Describe a calm song.")               # b has no history of a's
    assert _text(history_b[1]) == _expected(pipe, [("Describe a calm song.", {})], tmp_path / "x")[0]
    assert len(history_b) == 2
    a.predict(api_name="/clear")
    assert not list(mine[0].glob("*.wav"))                         # Clear deletes that session's music
