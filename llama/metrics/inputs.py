"""Reading what is evaluated: inference.py's results.jsonl and the user's references.

results.jsonl (written by `inference.py --input ... --output-dir DIR`) has one record per
request: "id", "answer", "wav" (a file name inside DIR, or null) and "error" (null when it
worked). A rerun appends, so the last record of an id wins. Failed requests, unreadable lines and
ids without a reference are counted and listed in the report, never dropped silently.
References: answers/captions as a JSON object {id: text or [texts]}, or JSONL lines
{"id": ..., "answer"|"answers"|"caption"|"text": ...}; reference audio as a folder (every
audio file in it; paired with results by file stem == id) or a JSON object {id: path}.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llama.errors import UserError, one_line
from llama.media import is_audio_path


class InputError(UserError):
    """A results or reference file that cannot be used."""


@dataclass
class Results:
    folder: Path
    answers: dict[str, str] = field(default_factory=dict)       # id -> answer text
    wavs: dict[str, Path] = field(default_factory=dict)         # id -> generated music file
    failed: dict[str, str] = field(default_factory=dict)        # id -> its error
    bad_lines: list[int] = field(default_factory=list)          # unreadable line numbers


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: not found ({what})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; expected {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or type(e).__name__}); "
                         f"expected {what}") from None


def read_results(path: str | Path) -> Results:
    """`path` is the output folder or its results.jsonl."""
    path = Path(path)
    file = path / "results.jsonl" if path.is_dir() else path
    res = Results(folder=file.parent)
    for n, line in enumerate(_read_text(file, "inference.py's results.jsonl").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rid = str(rec["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            res.bad_lines.append(n)
            continue
        res.answers.pop(rid, None), res.wavs.pop(rid, None), res.failed.pop(rid, None)
        if rec.get("error") is not None:
            res.failed[rid] = one_line(rec["error"], 200)
            continue
        if isinstance(rec.get("answer"), str):
            res.answers[rid] = rec["answer"]
        if isinstance(rec.get("wav"), str):
            wav = (res.folder / rec["wav"]).resolve()
            if wav.parent != res.folder.resolve():
                raise InputError(f"{file}:{n}: wav {one_line(rec['wav'], 80)!r} is outside {res.folder}")
            res.wavs[rid] = wav
    if not (res.answers or res.wavs or res.failed):
        raise InputError(f"{file}: no results records (expected inference.py --output-dir's results.jsonl)")
    return res


def _texts(value, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise InputError(f"{where}: a reference must be a text or a non-empty list of texts")
    return values


def read_texts(path: str | Path, what: str = "references") -> dict[str, list[str]]:
    """{id: [reference texts]} from a JSON object or a JSONL file."""
    path = Path(path)
    text = _read_text(path, f"{what} (JSON {{id: text}} or JSONL)")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and "id" not in obj:       # {"id": ...} is a one-line JSONL file
        return {str(k): _texts(v, f"{path}: id {one_line(k, 60)!r}") for k, v in obj.items()}
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rid = str(rec["id"])
            value = next(rec[k] for k in ("answers", "answer", "captions", "caption", "text") if k in rec)
        except (json.JSONDecodeError, KeyError, TypeError, StopIteration):
            raise InputError(f"{path}:{n}: expected {{\"id\": ..., \"answer\": ...}} (or a JSON object "
                             f"{{id: text}} for the whole file)") from None
        out[rid] = _texts(value, f"{path}:{n}")
    if not out:
        raise InputError(f"{path}: no {what} in it")
    return out


def read_audio_refs(path: str | Path) -> tuple[dict[str, Path], list[Path]]:
    """({id: clip} for pairing, [all reference clips]) from a folder or a JSON {id: path}."""
    path = Path(path)
    if path.is_dir():
        clips = sorted(p for p in path.rglob("*") if p.is_file() and is_audio_path(p))
        if not clips:
            raise InputError(f"{path}: no audio files in this reference folder")
        return {p.stem: p for p in clips}, clips
    obj = read_texts(path, "reference audio (folder, or JSON {id: path})")
    by_id = {}
    for rid, (rel, *_) in obj.items():
        p = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        by_id[rid] = p
    return by_id, list(by_id.values())


@dataclass
class Matched:
    ids: list[str]
    not_in_references: list[str]      # answered ids with no reference: counted skip
    not_answered: list[str]           # reference ids without a usable result


def match(have: dict, refs: dict) -> Matched:
    ids = [i for i in have if i in refs]
    return Matched(ids, sorted(i for i in have if i not in refs), sorted(i for i in refs if i not in have))
