"""Hostile input to train.py: reused run folders, bad resumes, unwritable outputs, pickles, bad options.

Every refusal is one line `error: ...` (exit 2, no traceback) naming the option or file; nothing
of an earlier run is lost unless --overwrite asked for it.
"""
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import train
from llama.train_state import latest_checkpoint
from tests.data_fixtures import write_fixture_datasets

SENTINEL_NAME = "pickle-ran"


def _pwn(path):
    """What a code-carrying pickle would run: it must never be called."""
    Path(path).write_text("code in a pickle ran")


class _Evil:
    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (_pwn, (self.sentinel,))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fixture_datasets(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def common(tiny_bundle, data):
    return ["--stage", "1", "--data", str(data), "--ckpt-dir", str(tiny_bundle), "--batch-size", "2"]


@pytest.fixture(scope="module")
def trained_run(common, tmp_path_factory):
    """A finished 2-step run with a checkpoint after each step; tests copy it."""
    out = tmp_path_factory.mktemp("runs") / "base"
    assert train.main([*common, "--out", str(out), "--max-steps", "2", "--save-every", "1"]) == 0
    return out


@pytest.fixture
def run(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    return out


def fails(capsys, *args) -> str:
    """Run train.py expecting a user error; return its one line."""
    capsys.readouterr()
    assert train.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _block_writes(monkeypatch, folder: Path, code: int) -> None:
    """Make every write under `folder` fail with `code`: chmod does not stop root."""
    real = os.open

    def guarded(path, flags, *a, **k):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, flags, *a, **k)
    monkeypatch.setattr(os, "open", guarded)


# ------------------------------------------------------------------ run folder reuse
def test_new_run_into_a_finished_run_is_refused_and_leaves_it_intact(common, run, capsys):
    before = snapshot(run)
    line = fails(capsys, *common, "--out", run, "--max-steps", "1")
    assert str(run) in line and "--resume" in line and "--overwrite" in line
    assert snapshot(run) == before


def test_new_run_into_a_folder_of_other_files_is_refused(common, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    line = fails(capsys, *common, "--out", tmp_path, "--max-steps", "1")
    assert "not empty" in line and "notes.txt" in line


def test_overwrite_replaces_the_old_run(common, run):
    assert train.main([*common, "--out", str(run), "--max-steps", "1", "--overwrite"]) == 0
    assert steps(run) == [1]
    assert [p.name for p in (run / "checkpoints").glob("step_*")] == ["step_000001"]
    assert latest_checkpoint(run).name == "step_000001"
    assert json.loads((run / "summary.json").read_text())["steps"] == 1


def test_overwrite_refuses_a_folder_holding_other_files(common, run, capsys):
    (run / "thesis.tex").write_text("years of work")
    before = snapshot(run)
    line = fails(capsys, *common, "--out", run, "--max-steps", "1", "--overwrite")
    assert "thesis.tex" in line and "--overwrite" in line
    assert snapshot(run) == before


def test_resume_into_a_folder_that_is_not_a_run_is_refused(common, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    line = fails(capsys, *common, "--out", tmp_path, "--max-steps", "1", "--resume")
    assert "notes.txt" in line and "not a run folder" in line
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_checkpoint_cleanup_never_deletes_the_new_checkpoint(common, run):
    """A higher-numbered leftover (here step_000009) once made --keep delete the checkpoint just
    written, leaving `latest` pointing at nothing."""
    (run / "checkpoints" / "step_000001").rename(run / "checkpoints" / "step_000009")
    args = [*common, "--out", str(run), "--max-steps", "3", "--save-every", "1", "--keep", "1", "--resume"]
    assert train.main(args) == 0
    assert latest_checkpoint(run).name == "step_000003"
    assert steps(run) == [1, 2, 3]


def test_resume_and_overwrite_together_are_refused(common, run, capsys):
    assert "contradict" in fails(capsys, *common, "--out", run, "--max-steps", "3", "--resume", "--overwrite")


def test_resume_with_the_same_settings_continues(common, run):
    assert train.main([*common, "--out", str(run), "--max-steps", "3", "--save-every", "1", "--resume"]) == 0
    assert steps(run) == [1, 2, 3]
    assert latest_checkpoint(run).name == "step_000003"


@pytest.mark.parametrize("option,value,saved", [("--stage", "2", "1"), ("--batch-size", "3", "2"),
                                                ("--grad-accum", "2", "1"),
                                                ("--seed", "7", "0"), ("--max-len", "300", "512")])
def test_resume_refuses_a_setting_that_moves_the_data_position(common, run, capsys, option, value, saved):
    before = snapshot(run)
    line = fails(capsys, *common, "--out", run, "--max-steps", "3", "--resume", option, value)
    assert f"--resume: {option} was {saved}" in line and f"now {value}" in line
    assert snapshot(run) == before


def test_resume_refuses_an_edited_data_config(common, data, run, tmp_path, capsys):
    edited = data.parent / "edited.yaml"
    text = data.read_text()
    edited.write_text(text.replace("  - {name: coco", "  # coco dropped\n  - {name: coco_x", 1))
    args = [a if a != str(data) else str(edited) for a in common]
    assert "--data" in fails(capsys, *args, "--out", run, "--max-steps", "3", "--resume")


def test_resume_refuses_other_samples_or_process_count(common, data, run, tmp_path, capsys):
    other = write_fixture_datasets(tmp_path / "data")          # same config text, one caption fewer
    coco = tmp_path / "data" / "COCO" / "captions.json"
    caps = json.loads(coco.read_text())
    coco.write_text(json.dumps(dict(list(caps.items())[1:])))
    args = [a if a != str(data) else str(other) for a in common]
    assert "the training samples" in fails(capsys, *args, "--out", run, "--max-steps", "3", "--resume")
    settings = latest_checkpoint(run) / "run.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "processes": 2}))
    line = fails(capsys, *common, "--out", run, "--max-steps", "3", "--resume")
    assert "the number of processes was 2" in line and "now 1" in line


# ------------------------------------------------------------------ unusable output folders
def test_out_that_is_a_file_or_under_a_file(common, tmp_path, capsys):
    f = tmp_path / "some_file"
    f.write_text("x")
    assert "is a file" in fails(capsys, *common, "--out", f, "--max-steps", "1")
    line = fails(capsys, *common, "--out", f / "run", "--max-steps", "1")
    assert f"under {f}, which is a file" in line


def test_read_only_out_is_refused_before_training(common, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        probe = ro / "probe"
        try:
            probe.write_text("x")              # root ignores the mode: simulate the refusal instead
            probe.unlink()
            _block_writes(monkeypatch, ro, errno.EACCES)
        except PermissionError:
            pass
        line = fails(capsys, *common, "--out", ro / "run", "--max-steps", "1")
    finally:
        ro.chmod(0o755)
    assert "cannot write there" in line and "Permission denied" in line
    assert not (ro / "run" / "final").exists()


def test_full_disk_is_refused_before_training(common, tmp_path, capsys, monkeypatch):
    out = tmp_path / "full"
    _block_writes(monkeypatch, out, errno.ENOSPC)
    assert "No space left on device" in fails(capsys, *common, "--out", out, "--max-steps", "1")


def test_too_little_free_space_is_refused_before_training(common, tmp_path, capsys, monkeypatch):
    from llama import run_dir

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_dir.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    line = fails(capsys, *common, "--out", tmp_path / "run", "--max-steps", "1")
    assert "MiB free" in line and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(common, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    def save(obj, f, *a, **k):
        if Path(f).name == "optimizer.pt" and Path(f).parent.name.startswith("step_000002"):
            Path(f).write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    line = fails(capsys, *common, "--out", out, "--max-steps", "2", "--save-every", "1")
    assert "No space left on device" in line and "step_000001 is intact" in line
    monkeypatch.undo()
    assert latest_checkpoint(out).name == "step_000001"
    assert not list((out / "checkpoints").glob("*.partial"))
    assert train.main([*common, "--out", str(out), "--max-steps", "2", "--save-every", "1", "--resume"]) == 0
    assert steps(out) == [1, 2]


def test_full_disk_when_writing_the_final_weights(common, tmp_path, capsys, monkeypatch):
    from llama import trainer as T

    def no_space(model, folder, names, tensors=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(folder) / "model.safetensors"))
    monkeypatch.setattr(T, "save_trained", no_space)
    out = tmp_path / "run"
    line = fails(capsys, *common, "--out", out, "--max-steps", "1")
    assert "final/model.safetensors: No space left on device" in line
    assert latest_checkpoint(out).name == "step_000001"


# ------------------------------------------------------------------ pickles
def test_code_carrying_optimizer_pt_is_refused_on_resume(common, run, capsys):
    sentinel = run.parent / SENTINEL_NAME
    optimizer = latest_checkpoint(run) / "optimizer.pt"
    torch.save({"state": {}, "param_groups": [], "payload": _Evil(sentinel)}, optimizer)
    line = fails(capsys, *common, "--out", run, "--max-steps", "3", "--resume")
    assert str(optimizer) in line and "weights_only" not in line and "Re-running" not in line
    assert not sentinel.exists()


def test_init_from_a_pytorch_model_bin_is_refused_unread(common, tmp_path, capsys):
    folder = tmp_path / "published"
    folder.mkdir()
    sentinel = tmp_path / SENTINEL_NAME
    torch.save({"w": _Evil(sentinel)}, folder / "pytorch_model.bin")
    line = fails(capsys, *common, "--out", tmp_path / "run", "--max-steps", "1", "--init-from", folder)
    assert "pytorch_model.bin" in line and "not a trained checkpoint" in line and "weights_only" not in line
    assert not sentinel.exists()


# ------------------------------------------------------------------ bad --init-from
def test_init_from_that_is_not_a_trained_checkpoint(common, run, tmp_path, capsys):
    def init(path):
        return fails(capsys, *common, "--out", tmp_path / "new", "--max-steps", "1", "--init-from", path)

    assert "not found" in init(tmp_path / "nowhere")
    assert "is a file" in init(run / "final" / "model.safetensors")
    assert f"pass {run / 'final'}" in init(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no model.safetensors" in init(empty)
    assert "--overwrite would delete" in fails(capsys, *common, "--out", run, "--max-steps", "1", "--overwrite",
                                               "--init-from", run / "final")


def test_init_from_weights_of_another_model_shape(common, tmp_path, capsys):
    from safetensors.torch import save_file

    folder = tmp_path / "other"
    folder.mkdir()
    save_file({"prefix_query.weight": torch.zeros(3, 5)}, str(folder / "model.safetensors"))
    line = fails(capsys, *common, "--out", tmp_path / "run", "--max-steps", "1", "--init-from", folder)
    assert "do not fit this model" in line and "prefix_query.weight" in line


# ------------------------------------------------------------------ bad options
@pytest.mark.parametrize("args,expected", [
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "-1"], "--lr must be a finite number"),
    (["--lr", "0"], "--lr > 0"),
    (["--lr", "1e-4", "--min-lr", "1e-3"], "--min-lr <= --lr"),
    (["--lr", "abc"], "argument --lr: invalid float value"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--grad-accum", "0"], "--grad-accum must be >= 1"),
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--keep", "0"], "--keep must be >= 1"),
    (["--clip", "inf"], "--clip must be a finite number"),
    (["--stage", "4"], "argument --stage: invalid choice"),
    (["--data", "/nonexistent/data.yaml"], "data config not found"),
    (["--ckpt-dir", "/nonexistent/bundle"], "--ckpt-dir /nonexistent/bundle: not a folder"),
    (["--no-such-option"], "unrecognized arguments"),
])
def test_bad_options_are_one_line(common, tmp_path, capsys, args, expected):
    assert expected in fails(capsys, *common, "--out", tmp_path / "run", *args)
    assert not (tmp_path / "run").exists()


def test_data_config_without_the_stage(common, tmp_path, capsys):
    cfg = tmp_path / "d.json"
    cfg.write_text(json.dumps({"stage3": []}))
    args = [a for a in common]
    args[args.index("--data") + 1] = str(cfg)
    assert "no stage1 datasets" in fails(capsys, *args, "--out", tmp_path / "run", "--max-steps", "1")


def test_a_bug_is_not_swallowed(common, tmp_path, monkeypatch):
    """Only UserError becomes a one-line message: a ValueError from a bug keeps its traceback."""
    from llama import trainer as T

    def broken(self):
        raise ValueError("a bug")
    monkeypatch.setattr(T.Trainer, "setup", broken)
    with pytest.raises(ValueError, match="a bug"):
        train.main([*common, "--out", str(tmp_path / "run"), "--max-steps", "1"])
