"""The run folder (--out): one run per folder, checked writable before any training starts.

A new run needs an empty (or absent) folder. `--resume` continues the run already there;
`--overwrite` deletes the files a training run writes (RUN_FILES) and starts anew, and refuses a
folder that holds anything else, so a mistyped `--out` never deletes a person's own files.
Each checkpoint records the settings that give its saved data position a meaning (`run.json`);
`--resume` refuses to change them, since the same step would then point at other samples.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

from .errors import UserError

RUN_FILES = ("checkpoints", "final", "tb", "metrics.jsonl", "loss.png", "summary.json")
SETTINGS_FILE = "run.json"
_PROBE = ".write-probe-"

# setting -> how to name it in a message; their order is the order they are checked in
SETTING_NAMES = {
    "stage": "--stage", "batch_size": "--batch-size", "grad_accum": "--grad-accum", "seed": "--seed",
    "max_len": "--max-len", "processes": "the number of processes",
    "data_config": "--data (the data config's content)",
    "samples": "the training samples (the annotation files changed)",
}


class OutputError(UserError):
    """The run folder cannot be used: another run is there, it cannot be written, or the disk is full."""


def describe_os_error(e: OSError) -> str:
    """'<file>: No space left on device' - the OS reason and the file, on one line."""
    reason = e.strerror or errno.errorcode.get(e.errno or 0, "") or str(e) or type(e).__name__
    return f"{e.filename}: {reason}" if e.filename else reason


def _entries(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if not p.name.startswith(_PROBE))


def _check_is_folder(out: Path) -> None:
    for p in (out, *out.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == out else f"is under {p}, which is a file"
                raise OutputError(f"--out {out}: {where}, not a folder")
            return


def probe_writable(out: Path) -> None:
    """Create the folder and write, sync and delete a small file in it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f"{_PROBE}{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputError(f"--out {out}: cannot write there ({describe_os_error(e)})") from e


def check_free_space(out: Path, need_bytes: int) -> None:
    """Refuse a run whose checkpoints would not fit on the disk (a rough lower bound)."""
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise OutputError(f"--out {out}: only {free / 2**20:.1f} MiB free, the run needs about "
                          f"{need_bytes / 2**20:.1f} MiB (checkpoints, final weights); free space or lower --keep")


def prepare(out: Path, resume: bool, overwrite: bool, is_main: bool = True) -> None:
    """Refuse a folder another run uses (unless --resume/--overwrite), clear it for --overwrite,
    and check it is a writable folder."""
    if resume and overwrite:
        raise OutputError("--resume and --overwrite contradict each other: pick one")
    _check_is_folder(out)
    probe_writable(out)
    entries = _entries(out)
    if not entries:
        return
    foreign = [p.name for p in entries if p.name not in RUN_FILES]
    if resume and foreign:
        raise OutputError(f"--resume: {out} holds {foreign[0]!r}, which training never writes: not a run folder")
    if resume:
        return
    names = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
    if not overwrite:
        raise OutputError(f"--out {out} is not empty ({names}); pass --resume to continue the run there "
                          "or --overwrite to replace it")
    if foreign:
        raise OutputError(f"--overwrite: {out} holds {foreign[0]!r}, which training never writes; refusing "
                          "to clear it (move it away or pick another --out)")
    if is_main:
        clear_run(out)


def clear_run(out: Path) -> None:
    """Delete a run's files, checkpoints first: if this is interrupted nothing resumable is left
    half-deleted (a later --resume starts afresh, a later --overwrite finishes the job)."""
    try:
        for name in RUN_FILES:
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    except OSError as e:
        raise OutputError(f"--overwrite: cannot clear {out} ({describe_os_error(e)})") from e


# ------------------------------------------------------------------ settings of a run
def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def samples_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def read_settings(ckpt: Path) -> dict | None:
    """The settings saved with a checkpoint; None for a checkpoint written before they were."""
    path = ckpt / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OutputError(f"{path}: unreadable ({e})") from e
    if not isinstance(data, dict):
        raise OutputError(f"{path}: expected a JSON object of run settings")
    return data


def _show(key: str, value) -> str:
    return f"sha256 {str(value)[:12]}" if key in ("data_config", "samples") and value else repr(value)


def check_resume(saved: dict, now: dict, ckpt: Path) -> None:
    """Refuse a resume whose settings change what the saved data position means."""
    for key, label in SETTING_NAMES.items():
        if key in saved and saved[key] != now.get(key):
            raise OutputError(f"--resume: {label} was {_show(key, saved[key])} in {ckpt}, now "
                              f"{_show(key, now.get(key))}; resume with the saved value, or pass "
                              "--overwrite to start a new run")
