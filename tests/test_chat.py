"""Conversations (llama/chat.py, llama/chat_repl.py) on the tiny bundle: the prompt layout is
training's multi-turn layout, old turns drop out first, media and generated music carry over,
streaming sees the tokens the answer has."""
import io
import subprocess
import sys
from pathlib import Path

import pytest

from llama.chat import ChatSettings, Conversation, Turn
from llama.chat_repl import TextStream, repl
from llama.data.collate import encode_sample
from llama.data.formats import Sample
from llama.errors import UserError
from llama.examples import write_examples
from llama.pipeline import BundlePaths, MuMuPipeline
from llama.tokenizer import format_prompt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return MuMuPipeline.load(BundlePaths.from_bundle(tiny_bundle))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat_media")
    write_examples(d)
    return d


SHORT = ChatSettings(max_new_tokens=4, duration=0.2)


def test_first_turn_is_the_single_request_prompt(pipe, tmp_path):
    conv = Conversation(tmp_path)
    ids = conv.prompt_ids(pipe.tokenizer, "Describe a calm song.", 400)
    assert ids == pipe.tokenizer.encode(format_prompt("Describe a calm song."), bos=True)
    ans = conv.ask(pipe, "Describe a calm song.", settings=SHORT)
    alone = pipe.answer("Describe a calm song.", max_new_tokens=4)
    assert ans.tokens == alone.tokens and conv.turns[0].reply_ids == alone.tokens


def test_history_layout_is_trainings(pipe, tmp_path):
    tok = pipe.tokenizer
    conv = Conversation(tmp_path)
    a1, a2 = tok.encode("first answer", bos=False), tok.encode("second answer", bos=False)
    conv.turns = [Turn("q one", a1), Turn("q two", a2)]
    ids = conv.prompt_ids(tok, "q three", 400)
    sample = Sample(id="s", turns=[("q one", "first answer"), ("q two", "second answer"), ("q three", "x")])
    trained = encode_sample(sample, tok, max_len=400).tokens
    x = tok.encode("x", bos=False, eos=True)
    assert ids == trained[:len(trained) - len(x)]


def test_oldest_turns_dropped_system_prompt_kept(pipe, tmp_path):
    tok = pipe.tokenizer
    conv = Conversation(tmp_path)
    conv.turns = [Turn(f"question number {i} " + "word " * 20, tok.encode(f"answer {i}", bos=False))
                  for i in range(6)]
    full = len(conv.prompt_ids(tok, "now?", 10_000))
    budget = full - 30
    ids = conv.prompt_ids(tok, "now?", budget)
    assert len(ids) <= budget and conv.dropped >= 1
    text = tok.decode(ids)
    assert text.startswith(format_prompt("x").split("### Instruction:")[0].strip())      # system prompt
    assert "question number 0" not in text and "question number 5" in text and text.endswith("now?\n\n### Response:")
    assert conv.prompt_ids(tok, "now?", 10_000) and conv.dropped == 0
    with pytest.raises(UserError, match="does not fit the context"):
        conv.prompt_ids(tok, "word " * 500, 100)


def test_media_carry_over_and_music_becomes_the_audio(pipe, media, tmp_path):
    conv = Conversation(tmp_path / "conv")
    conv.folder.mkdir()
    conv.ask(pipe, "Describe this music.", settings=SHORT, audio=str(media / "melody.wav"))
    question = "What instrument is it?"
    ids = conv.prompt_ids(pipe.tokenizer, question, 400)
    assert len(ids) > len(pipe.tokenizer.encode(format_prompt(question), bos=True))     # history in it
    expected = pipe.answer(question, audio=str(media / "melody.wav"), max_new_tokens=4, prompt_ids=ids)
    second = conv.ask(pipe, question, settings=SHORT)                                   # no upload
    assert second.tokens == expected.tokens
    assert conv.turns[1].media["audio"] == str(media / "melody.wav")
    made = conv.ask(pipe, "Write a tune.", music=True, settings=SHORT)
    assert made.audio is not None and conv.turns[-1].music.is_file()
    assert conv.media["audio"] == str(conv.turns[-1].music)
    conv.ask(pipe, "Now make it slower.", music=True, settings=SHORT)
    assert conv.turns[-1].media["audio"] == str(conv.turns[-2].music)     # the edit heard the last music
    wav = conv.turns[-1].music
    conv.reset()
    assert conv.turns == [] and conv.media == {} and not wav.exists()
    conv.close()
    assert not conv.folder.exists()


def test_error_leaves_conversation_unchanged(pipe, media, tmp_path):
    conv = Conversation(tmp_path)
    conv.ask(pipe, "Hello.", settings=SHORT)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(UserError, match="bad.wav"):
        conv.ask(pipe, "Describe.", settings=SHORT, audio=str(bad))
    assert len(conv.turns) == 1 and "audio" not in conv.media


def test_stream_sees_every_token(pipe):
    seen = []
    pieces = []
    stream = TextStream(pipe.tokenizer, pieces.append)
    ans = pipe.answer("Describe a calm song.", max_new_tokens=12,
                      on_token=lambda row, t: (seen.append(t), stream(row, t)))
    plain = pipe.answer("Describe a calm song.", max_new_tokens=12)
    assert seen == ans.tokens == plain.tokens and ans.text == plain.text
    assert "".join(pieces).strip() == ans.text


def test_repl_commands_and_errors(pipe, media, tmp_path):
    lines = ["Describe a calm song.", f"/audio {media / 'melody.wav'}", "What is this?", "/video nope.mp4",
             "/bogus", "/music", "Write a tune.", "/reset", "Hi again.", "/quit", "never read"]
    out = io.StringIO()
    assert repl(pipe, SHORT, tmp_path, stream=True, lines=iter(lines), out=out) == 0
    text = out.getvalue()
    assert "[audio: melody.wav]" in text and "error: /video nope.mp4: no such file" in text
    assert "error: unknown command /bogus" in text and "[music: 0.20 s at 32000 Hz" in text
    assert "[conversation and media forgotten]" in text
    assert not list(tmp_path.glob("*.wav"))              # /reset removed the music of the temp folder


def test_cli_chat(tiny_bundle, tmp_path):
    out_dir = tmp_path / "music"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "inference.py"), "--ckpt-dir", str(tiny_bundle), "--chat", "--stream",
         "--max-new-tokens", "3", "--duration", "0.2", "--output-dir", str(out_dir)],
        input="/music\nWrite a tune.\nAgain, slower.\n", capture_output=True, text=True, timeout=300,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert f"-> {out_dir / 'turn001.wav'}" in proc.stdout and (out_dir / "turn001.wav").is_file()
    bad = subprocess.run([sys.executable, str(ROOT / "inference.py"), "--chat", "--prompt", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --chat reads its messages")


def test_cli_stream_prints_the_same_answer(tiny_bundle, capsys):
    import inference
    base = ["--ckpt-dir", str(tiny_bundle), "--prompt", "Describe a calm song.", "--max-new-tokens", "10"]
    assert inference.main(base) == 0
    plain = capsys.readouterr().out
    assert inference.main(base + ["--stream"]) == 0
    streamed = capsys.readouterr().out
    assert streamed.strip() == plain.strip() and plain.strip()
