"""Writing results so that a hostile id, a kill, a full disk or a second run cannot do harm.

- `SafeNames` maps request ids to file names that stay inside the output folder.
- WAVs are written to a temp file of ours in the same folder, fsynced and renamed: a kill never
  leaves a truncated or half-named file, and `clean_stale_temps` removes what a kill left.
- `Journal` appends one JSON record per line in a single write + fsync, and repairs a line torn
  by a crash or a full disk, so that request is redone instead of lost.
- `folder_lock` keeps two runs from answering into the same folder.
Every OS failure becomes an `OutputError` (a UserError) naming the path and the reason.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path

from .errors import UserError, one_line

TMP_PREFIX = ".mumu-tmp-"              # our temp files; safe names never start with a dot
LOCK_NAME = ".mumu.lock"
MAX_STEM = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}


class OutputError(UserError):
    """An output cannot be written (read-only, not a folder, disk full, folder in use): fatal."""


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def _write(fd: int, data: bytes) -> int:
    """The one low-level write (tests replace it to simulate a full disk)."""
    return os.write(fd, data)


# ------------------------------------------------------------------ names
def _hash(original: str) -> str:
    return hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def safe_stem(original: str) -> str:
    """[A-Za-z0-9._-] only, no leading/trailing dots, no '..', bounded; may be empty."""
    stem = _UNSAFE.sub("_", original)
    stem = re.sub(r"\.{2,}", ".", stem).strip(".")
    return stem[:MAX_STEM]


class SafeNames:
    """Allocates `<stem>.wav` names: the id itself when it is already a safe, free name, else
    the cleaned id plus a short hash of the original (so 'a/b' and 'a_b' never share a file).
    Collisions are judged case-insensitively (macOS/Windows folders fold case)."""

    def __init__(self, suffix: str = ".wav"):
        self.suffix = suffix
        self._taken: set[str] = set()
        self._by_id: dict[str, str] = {}

    def __call__(self, original: str) -> str:
        if original in self._by_id:
            return self._by_id[original]
        stem = safe_stem(original)
        reserved = stem.split(".")[0].upper() in _WINDOWS_RESERVED
        if reserved:                             # 'CON.txt' is reserved too: break the first part
            stem = stem.replace(".", "_", 1)
        if not stem or stem != original or reserved or stem.lower() in self._taken:
            stem = f"{stem or 'id'}-{_hash(original)}"
        base, n = stem, 1
        while stem.lower() in self._taken:      # a crafted id that hits another's hashed name
            n += 1
            stem = f"{base}-{n}"
        self._taken.add(stem.lower())
        self._by_id[original] = stem + self.suffix
        return self._by_id[original]


def inside(folder: Path, name: str) -> Path:
    """folder/name, refused unless it resolves inside folder (names come from SafeNames, so a
    refusal here means a bug or a symlinked folder pointing elsewhere)."""
    root = folder.resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise OutputError(f"{one_line(name)}: refusing to write outside {folder}")
    return path


# ------------------------------------------------------------------ folders
def ensure_writable_dir(folder: Path, what: str = "output folder") -> Path:
    """Create `folder` if needed and prove a file can be created in it, before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: the {what} is a file, not a folder") from None
    except NotADirectoryError:
        raise OutputError(f"{folder}: cannot create the {what} (a parent is a file)") from None
    except OSError as e:
        raise OutputError(f"{folder}: cannot create the {what} ({_reason(e)})") from None
    if not folder.is_dir():
        raise OutputError(f"{folder}: the {what} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{folder}: the {what} is not writable ({_reason(e)})") from None
    return folder


def check_output_file(path: Path) -> None:
    """`path` can be (re)written: not a folder, its folder writable, the file itself writable."""
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name ending in .wav")
    ensure_writable_dir(path.parent if str(path.parent) else Path("."), "folder of the output file")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: is not writable")


def clean_stale_temps(folder: Path) -> int:
    """Remove temp files of ours that a killed run left behind; the count removed."""
    removed = 0
    for stale in folder.glob(TMP_PREFIX + "*"):
        try:
            stale.unlink()
            removed += 1
        except OSError as e:
            raise OutputError(f"{stale}: cannot remove a stale temp file ({_reason(e)})") from None
    return removed


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold an exclusive, non-blocking lock on `folder` for a whole run."""
    lock_path = folder / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OutputError(f"{lock_path}: cannot create the lock file ({_reason(e)})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{folder}: another run is writing to this folder "
                              f"(it holds {LOCK_NAME}); wait for it or use another --output-dir") from None
        yield lock_path
    finally:
        os.close(fd)                             # closing releases the lock


# ------------------------------------------------------------------ files
def _write_fully(fd: int, data: bytes, path: Path) -> None:
    done = 0
    while done < len(data):
        n = _write(fd, data[done:])
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        done += n


def write_wav(path: Path, audio, sample_rate: int) -> None:
    """16-bit PCM WAV via a temp file of ours in the same folder + fsync + rename."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="PCM_16")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=".wav")
        try:
            _write_fully(fd, buf.getvalue(), path)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({_reason(e)})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


class Journal:
    """results.jsonl: one record per line, each appended in one write + fsync."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def read(self) -> tuple[list[dict], int, int]:
        """(records, torn, unreadable): a last line without its newline (a crash or a full disk
        cut it) is truncated away and counted as torn; other unparsable lines are counted."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], 0, 0
        except OSError as e:
            raise OutputError(f"{self.path}: cannot be read ({_reason(e)})") from None
        torn = 0
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            try:
                with open(self.path, "r+b") as f:
                    f.truncate(keep)
                    os.fsync(f.fileno())
            except OSError as e:
                raise OutputError(f"{self.path}: cannot repair its torn last line ({_reason(e)})") from None
            data, torn = data[:keep], 1
        records, bad = [], 0
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                bad += 1
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                bad += 1
        return records, torn, bad

    def __enter__(self) -> "Journal":
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"{self.path}: cannot be opened for writing ({_reason(e)})") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def append(self, record: dict) -> None:
        """One write of the whole line; on failure the partial line is cut off again (and if
        even that fails, the next start repairs it)."""
        data = (json.dumps(record, allow_nan=False) + "\n").encode("ascii")
        size = os.fstat(self.fd).st_size
        try:
            n = _write(self.fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(self.fd)
        except OSError as e:
            with contextlib.suppress(OSError):  # best effort: Journal.read repairs a torn line
                os.ftruncate(self.fd, size)
            raise OutputError(f"{self.path}: cannot write ({_reason(e)})") from None
