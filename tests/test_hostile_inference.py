"""A hostile user against inference.py: every mistake is one line (`error: ...`, rc 2) or that
request's error in results.jsonl, never a traceback, and every file lands inside --output-dir.

The CLI runs in-process; the tiny pipeline is loaded once and handed to every run.
"""
import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import inference
from llama import safe_paths
from llama.safe_paths import SafeNames, folder_lock

ARGS = ["--max-new-tokens", "3"]


@pytest.fixture(scope="module")
def tiny_pipe(tiny_bundle):
    return inference.load_pipeline(inference.parse_args(["--ckpt-dir", str(tiny_bundle), "--prompt", "x"]))


@pytest.fixture
def cli(tiny_bundle, tiny_pipe, monkeypatch, capsys):
    """inference.main in-process with the pre-loaded tiny pipeline -> (rc, stdout, stderr)."""
    loads = []

    def load(args):
        loads.append(args)
        return tiny_pipe

    monkeypatch.setattr(inference, "load_pipeline", load)

    def run(*argv):
        capsys.readouterr()
        try:
            rc = inference.main(["--ckpt-dir", str(tiny_bundle), *ARGS, *map(str, argv)])
        except SystemExit as e:
            rc = e.code
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return rc, out, err

    run.loads = loads
    return run


def last_error(err: str) -> str:
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: "), err
    return line


def deny_writes(folder: Path, monkeypatch) -> None:
    """Make `folder` read-only; as root (modes do not bind) refuse creating files in it instead."""
    os.chmod(folder, 0o555)
    try:
        probe = folder / "probe"
        probe.touch()
        probe.unlink()
    except PermissionError:
        return                                            # the mode binds: a real read-only folder
    root = folder.resolve()

    def denied(p) -> bool:
        return Path(p).resolve() == root or root in Path(p).resolve().parents

    def fail(p):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))

    real_mkstemp, real_mkdir, real_open = tempfile.mkstemp, os.mkdir, os.open
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, dir=None, **k: fail(dir) if dir and denied(dir)
                        else real_mkstemp(*a, dir=dir, **k))
    monkeypatch.setattr(os, "mkdir", lambda p, *a, **k: fail(p) if denied(p) else real_mkdir(p, *a, **k))
    monkeypatch.setattr(os, "open", lambda p, flags, *a, **k: fail(p) if flags & os.O_CREAT and denied(p)
                        else real_open(p, flags, *a, **k))


def write_jsonl(path: Path, *lines) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else json.dumps(l).encode()) + b"\n" for l in lines))
    return path


# ---------------------------------------------------------------------------------- options
@pytest.mark.parametrize("argv, reason", [
    (["--temperature", "-1"], "--temperature: value must be >= 0"),
    (["--temperature", "nan"], "--temperature: value must be a finite number"),
    (["--top-p", "nan"], "--top-p: value must be a finite number"),
    (["--top-p", "0"], "--top-p: value must be > 0"),
    (["--top-p", "1.5"], "<= 1"),
    (["--duration", "1e9"], "--duration: value must be > 0 and <= 120"),
    (["--duration", "inf"], "finite"),
    (["--duration", "0"], "> 0"),
    (["--seed", "-1"], "--seed"),
    (["--max-new-tokens", "-1"], "--max-new-tokens"),
    (["--guidance-scale", "nan"], "--guidance-scale"),
    (["--output", "x.mp3"], "only .wav files are written (not .mp3"),
    (["--output", "x"], "only .wav files are written"),
    (["--device", "toaster"], "--device 'toaster': not a device name"),
])
def test_bad_option_is_one_line(cli, argv, reason):
    rc, out, err = cli("--prompt", "Describe it.", *argv)
    assert rc == 2 and reason in last_error(err) and not out


def test_prompt_with_undecodable_bytes(cli):
    prompt = b"Describe \xff\xfe it".decode("utf-8", "surrogateescape")       # what argv gives
    rc, _, err = cli("--prompt", prompt)
    assert rc == 2 and "--prompt is not valid UTF-8" in last_error(err) and "\udcff" not in err


def test_prompt_longer_than_context(cli):
    rc, _, err = cli("--prompt", "music " * 3000)
    assert rc == 2 and "exceeds the context" in last_error(err)


def test_duration_beyond_what_musicgen_renders(cli, tmp_path):
    # past MusicGen's 41 s position table pieces render in windows (llama/long_music.py), up to 120 s
    rc, _, err = cli("--prompt", "Music.", "--music", "--duration", "121", "--output", tmp_path / "o.wav")
    assert rc == 2 and "must be > 0 and <= 120" in last_error(err)
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("case", ["folder", "under_file", "read_only"])
def test_output_checked_before_generating(cli, tmp_path, monkeypatch, case):
    if case == "folder":
        output, reason = tmp_path / "dir.wav", "is a folder"
        output.mkdir()
    elif case == "under_file":
        (tmp_path / "file").write_text("x")
        output, reason = tmp_path / "file" / "o.wav", "file: the folder of the output file is a file"
    else:
        (tmp_path / "ro").mkdir()
        deny_writes(tmp_path / "ro", monkeypatch)
        output, reason = tmp_path / "ro" / "o.wav", "not writable"
    rc, out, err = cli("--prompt", "Music.", "--music", "--duration", "0.05", "--output", output)
    assert rc == 2 and reason in last_error(err) and not out
    assert not cli.loads                                       # refused before any model work


def test_single_output_full_disk(cli, tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safe_paths, "_write", full)
    rc, _, err = cli("--prompt", "Music.", "--music", "--duration", "0.05", "--output", tmp_path / "o.wav")
    assert rc == 2 and "o.wav: cannot write (No space left on device)" in last_error(err)
    assert os.listdir(tmp_path) == []                          # no stray temp file


def test_answer_is_shown_without_control_characters(cli, tiny_pipe, monkeypatch):
    real = tiny_pipe.answer

    def answer(*a, **k):
        ans = real(*a, **k)
        ans.text = "\x1b[31mred\x1b[0m\x00 text\r\nsecond\x07 line  "
        return ans

    monkeypatch.setattr(tiny_pipe, "answer", answer)
    rc, out, _ = cli("--prompt", "Describe it.")
    assert rc == 0 and out == " [31mred [0m  text\nsecond  line\n".lstrip()


# ---------------------------------------------------------------------------------- checkpoints
def _evil(path: Path, zip_format: bool = True) -> Path:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Evil()}, path, _use_new_zipfile_serialization=zip_format)
    return path


@pytest.mark.parametrize("name, make, reason", [
    ("checkpoint.pth", lambda p: _evil(p), "not a plain weights file (it contains pickled code, refused)"),
    ("legacy.pth", lambda p: _evil(p, zip_format=False), "not a plain weights file (it contains pickled code"),
    ("pytorch_model.bin", lambda p: _evil(p), "not a plain weights file"),
    ("optimizer.pt", lambda p: _evil(p), "not a plain weights file"),
    ("text.pth", lambda p: p.write_text("hello"), "cannot be read as a weights file (not a torch save)"),
    ("empty.pth", lambda p: p.write_bytes(b""), "not a torch save"),
    ("folder.pth", lambda p: p.mkdir(), "cannot be read as a weights file (Is a directory)"),
    ("missing.pth", lambda p: None, "No such file"),
])
def test_checkpoint_refused_in_one_line(tiny_bundle, tmp_path, capsys, name, make, reason):
    path = tmp_path / name
    make(path)
    rc = inference.main(["--ckpt-dir", str(tiny_bundle), "--prompt", "Hi.", "--checkpoint", str(path)])
    err = capsys.readouterr().err
    line = last_error(err)
    assert rc == 2 and reason in line and name in line
    assert "Traceback" not in err and "weights_only" not in err and "pwned" not in err


def test_ckpt_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "bundle").write_text("{}")
    rc = inference.main(["--ckpt-dir", str(tmp_path / "bundle"), "--prompt", "Hi."])
    err = capsys.readouterr().err
    assert rc == 2 and "bundle: not a folder" in last_error(err) and "Traceback" not in err


def test_torch_load_reads_plain_weights(tmp_path):
    from llama.checkpoint import torch_load
    torch.save({"w": torch.ones(2)}, tmp_path / "new.pth")
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert all(torch_load(tmp_path / n)["w"].sum() == 2 for n in ("new.pth", "old.pth"))


# ---------------------------------------------------------------------------------- batch file
BATCH = [
    {"id": "../../../x", "prompt": "Music.", "music": True, "duration": 0.05},
    {"id": "/abs/path/x", "prompt": "Music.", "music": True, "duration": 0.05},
    {"id": "a/../../x", "prompt": "Music.", "music": True, "duration": 0.05},
    {"id": "Song", "prompt": "Music.", "music": True, "duration": 0.05},
    {"id": "song", "prompt": "Music.", "music": True, "duration": 0.05},
    {"id": "CON", "prompt": "Music.", "music": True, "duration": 0.05},
    {"id": "plain", "prompt": "Describe it."},
]
BAD = [   # (request, error in results.jsonl)
    ({"id": "music-str", "prompt": "Music.", "music": "false"}, "music must be true or false, got 'false'"),
    ({"id": "dur-null", "prompt": "Music.", "duration": None}, "duration must not be null"),
    ({"id": "audio-int", "prompt": "Describe.", "audio": 5}, "audio must be a file path string, got 5"),
    ({"id": "temp-nan", "prompt": "Describe.", "temperature": float("nan")}, "temperature must be a finite number"),
    ({"id": "top-p", "prompt": "Describe.", "top_p": 2}, "top_p must be > 0 and <= 1"),
    ({"id": "seed-float", "prompt": "Describe.", "seed": 1.5}, "seed must be an integer"),
    ({"id": "tokens-str", "prompt": "Describe.", "max_new_tokens": "5"}, "max_new_tokens must be an integer"),
    ({"id": "dur-huge", "prompt": "Music.", "music": True, "duration": 1e9}, "duration must be > 0 and <= 120"),
    ({"id": "typo", "prompt": "Music.", "durration": 3}, "unknown field 'durration'"),
    ({"id": "edit-mode", "prompt": "Music.", "edit_mode": "remix"}, "edit_mode must be one of auto, prompt, melody"),
    ({"id": "edit-strength", "prompt": "Music.", "edit_strength": 1.5}, "edit_strength must be >= 0 and <= 1"),
    ({"id": "no-prompt"}, "prompt must be a string, got None"),
    ({"id": "blank", "prompt": "   "}, "prompt is empty"),
    ({"id": "nul-path", "prompt": "Describe.", "image": "a\u0000b.png"}, "image contains a NUL character"),
    ({"id": "missing", "prompt": "Describe.", "image": "nope.png"}, "nope.png"),
    ({"id": "long", "prompt": "music " * 3000}, "exceeds the context"),
]
UTF8_LINE = b'{"id": "bad-utf8", "prompt": "caf\xe9 \xff"}'


@pytest.fixture(scope="module")
def batch_run(tiny_bundle, tiny_pipe, tmp_path_factory):
    """One hostile batch, run once; cases below read its results."""
    root = tmp_path_factory.mktemp("hostile_batch")
    out = root / "deep" / "out"
    reqs = write_jsonl(root / "requests.jsonl", *BATCH, *(r for r, _ in BAD), UTF8_LINE)
    real = inference.load_pipeline
    inference.load_pipeline = lambda args: tiny_pipe
    try:
        rc = inference.main(["--ckpt-dir", str(tiny_bundle), *ARGS, "--input", str(reqs), "--output-dir", str(out)])
    finally:
        inference.load_pipeline = real
    recs = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    return root, out, rc, recs


def test_batch_files_stay_inside_the_output_dir(batch_run):
    root, out, rc, recs = batch_run
    assert rc == 1                                               # the bad requests failed
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert all(p.startswith("deep/out/") or p == "requests.jsonl" for p in written), written
    assert not Path("/abs/path/x.wav").exists()
    wavs = [r["wav"] for r in recs.values() if r["wav"]]
    assert len(wavs) == 6 and len({w.lower() for w in wavs}) == 6       # no case-insensitive clash
    assert all((out / w).is_file() and "/" not in w and not w.startswith(".") for w in wavs)


@pytest.mark.parametrize("rid, wav", [("../../../x", r"_\._\._x-[0-9a-f]{8}\.wav"),
                                      ("/abs/path/x", r"_abs_path_x-[0-9a-f]{8}\.wav"),
                                      ("a/../../x", r"a_\._\._x-[0-9a-f]{8}\.wav"),
                                      ("Song", r"Song\.wav"), ("song", r"song-[0-9a-f]{8}\.wav"),
                                      ("CON", r"CON-[0-9a-f]{8}\.wav")])
def test_batch_id_maps_to_a_safe_recorded_name(batch_run, rid, wav):
    import re
    rec = batch_run[3][rid]
    assert rec["error"] is None and re.fullmatch(wav, rec["wav"]) and rec["sample_rate"] == 32000


def test_request_edit_modes_are_the_renderers():
    from llama.long_music import EDIT_MODES
    from llama.request_schema import EDIT_MODES as REQUEST_EDIT_MODES
    assert REQUEST_EDIT_MODES == EDIT_MODES


@pytest.mark.parametrize("req, reason", BAD, ids=[r["id"] for r, _ in BAD])
def test_bad_request_fails_alone(batch_run, req, reason):
    rec = batch_run[3][req["id"]]
    assert reason in rec["error"] and "\n" not in rec["error"] and rec["answer"] is None
    assert batch_run[3]["plain"]["error"] is None              # the batch went on


def test_batch_undecodable_prompt_fails_alone(batch_run):
    rec = batch_run[3]["bad-utf8"]
    assert "prompt is not valid UTF-8" in rec["error"]


@pytest.mark.parametrize("name", ["", ".", "..", "...", "a" * 300, "CON.txt", "nul", "x y", "é"])
def test_safe_names(name):
    got = SafeNames()(name)
    assert got.endswith(".wav") and "/" not in got and not got.startswith(".") and ".." not in got
    assert len(got) < 100 and got.split(".")[0].upper() not in ("CON", "NUL")


def test_safe_names_never_collide():
    names = SafeNames()
    ids = ["a", "A", "a_b", "a/b", "a b", "a-" + safe_paths._hash("a/b"), "a_b-" + safe_paths._hash("a/b")]
    got = [names(i) for i in ids]
    assert len({g.lower() for g in got}) == len(ids) and names("a/b") == got[3]


# ---------------------------------------------------------------------------------- faults
def test_torn_results_line_is_repaired_and_redone(cli, tmp_path):
    reqs = write_jsonl(tmp_path / "r.jsonl", {"id": "a", "prompt": "Hi."}, {"id": "b", "prompt": "Hi."})
    out = tmp_path / "out"
    out.mkdir()
    done = json.dumps({"id": "a", "wav": None, "prompt": "Hi.", "answer": "x", "error": None})
    torn = json.dumps({"id": "b", "wav": None, "prompt": "Hi.", "answer": "y", "error": None})[:25]
    (out / "results.jsonl").write_text(done + "\n" + torn)
    (out / ".mumu-tmp-stale.wav").write_bytes(b"RIFF")            # left by a killed run
    rc, _, err = cli("--input", reqs, "--output-dir", out)
    assert rc == 0 and "repaired 1 torn last line" in err and "1 already done, 1 to run" in err
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(l)["id"] for l in lines] == ["a", "b"]
    assert not list(out.glob(".mumu-tmp-*"))


def test_second_run_into_the_same_folder_is_refused(cli, tmp_path):
    reqs = write_jsonl(tmp_path / "r.jsonl", {"id": "a", "prompt": "Hi."})
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out):
        rc, _, err = cli("--input", reqs, "--output-dir", out)
    assert rc == 2 and "another run is writing to this folder" in last_error(err) and str(out) in err
    assert not (out / "results.jsonl").exists() and not cli.loads


@pytest.mark.parametrize("case", ["read_only", "under_file", "is_file", "results_is_folder"])
def test_unusable_output_dir_is_one_line(cli, tmp_path, monkeypatch, case):
    reqs = write_jsonl(tmp_path / "r.jsonl", {"id": "a", "prompt": "Hi."})
    out = tmp_path / "out"
    if case == "read_only":
        out.mkdir()
        deny_writes(out, monkeypatch)
        reason = "is not writable"
    elif case == "under_file":
        (tmp_path / "f").write_text("x")
        out, reason = tmp_path / "f" / "out", "a parent is a file"
    elif case == "is_file":
        out.write_text("x")
        reason = "is a file, not a folder"
    else:
        (out / "results.jsonl").mkdir(parents=True)
        reason = "results.jsonl: cannot be read"
    rc, _, err = cli("--input", reqs, "--output-dir", out)
    assert rc == 2 and reason in last_error(err)


@pytest.mark.parametrize("what", ["wav", "journal"])
def test_full_disk_stops_the_batch_without_a_torn_record(cli, tmp_path, monkeypatch, what):
    reqs = write_jsonl(tmp_path / "r.jsonl", {"id": "m", "prompt": "Music.", "music": True, "duration": 0.05},
                       {"id": "n", "prompt": "Hi."})
    out = tmp_path / "out"
    real = safe_paths._write

    def full(fd, data):
        if (what == "wav") == data.startswith(b"RIFF"):
            real(fd, data[:7])                                   # a partial write, then the error
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(safe_paths, "_write", full)
    rc, _, err = cli("--input", reqs, "--output-dir", out)
    assert rc == 2 and "No space left on device" in last_error(err)
    assert not list(out.glob(".mumu-tmp-*")) and (what == "journal" or not list(out.glob("*.wav")))
    assert (out / "results.jsonl").read_text() == ""             # nothing torn, nothing lost: m reruns
    monkeypatch.setattr(safe_paths, "_write", real)
    rc, _, err = cli("--input", reqs, "--output-dir", out)
    assert rc == 0 and "0 already done, 2 to run" in err and (out / "m.wav").is_file()


def test_unreadable_input_file(cli, tmp_path):
    rc, _, err = cli("--input", tmp_path, "--output-dir", tmp_path / "out")
    assert rc == 2 and "cannot be read (Is a directory)" in last_error(err)


def test_batch_display_has_no_control_characters(cli, tiny_pipe, tmp_path, monkeypatch):
    real = tiny_pipe.answer

    def answer(*a, **k):
        ans = real(*a, **k)
        ans.text = "one\x1b]0;title\x07\ntwo"
        return ans

    monkeypatch.setattr(tiny_pipe, "answer", answer)
    reqs = write_jsonl(tmp_path / "r.jsonl", {"id": "id\x1b[2J", "prompt": "Hi."})
    rc, out, _ = cli("--input", reqs, "--output-dir", tmp_path / "out")
    assert rc == 0 and out == "[id [2J] one ]0;title / two\n"
    rec = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert rec["answer"] == "one\x1b]0;title\x07\ntwo" and rec["id"] == "id\x1b[2J"     # raw, JSON-escaped
    assert "\\u001b" in (tmp_path / "out" / "results.jsonl").read_text()


def test_wav_written_is_complete(tmp_path):
    import soundfile as sf
    safe_paths.write_wav(tmp_path / "a.wav", np.zeros(100, dtype=np.float32), 8000)
    assert sf.info(tmp_path / "a.wav").frames == 100 and os.listdir(tmp_path) == ["a.wav"]
