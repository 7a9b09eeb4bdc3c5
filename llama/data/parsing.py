"""Helpers shared by the per-format readers: reading JSON / JSON Lines files, checking text
fields, conversation turns and media paths, the deterministic instruction pick and the
[AUD0]...[AUD7] run.

A record that cannot be used raises `_Skip(reason)`; `load_dataset` counts it in the report.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .spec import BAD_ORDER, EMPTY_ANSWER, EMPTY_INSTRUCTION, MALFORMED, MEDIA_MISSING, DataError

N_AUD = 8
AUD_TOKENS = [f"[AUD{i}]" for i in range(N_AUD)]
AUD_RUN = "".join(AUD_TOKENS)  # "[AUD0][AUD1]...[AUD7]", each a single id for the Tokenizer
_AUD_RUN_LOOSE = re.compile(r"\s*".join(re.escape(t) for t in AUD_TOKENS))

_HUMAN, _GPT = ("human", "user"), ("gpt", "assistant")


class _Skip(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def read_json(path: str | Path) -> Any:
    """The parsed file (JSON, or a list of records for .jsonl); DataError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found" if not p.exists() else f"{p}: not a regular file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read ({e})") from e
    if p.suffix.lower() == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{p}: not valid JSON Lines (line {n}: {e.msg})") from e
        return records
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Skip(MALFORMED)
    return value.strip()


def _conversation(record: dict) -> list[dict]:
    conv = record.get("conversation", record.get("conversations"))
    if not isinstance(conv, list) or not conv:
        raise _Skip(MALFORMED)
    for turn in conv:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise _Skip(MALFORMED)
        role = turn.get("from")
        if not isinstance(role, str) or role.lower() not in _HUMAN + _GPT:
            raise _Skip(MALFORMED)
    return conv


def _turns(conv: list[dict]) -> list[tuple[str, str]]:
    """[{from, value}, ...] -> [(instruction, answer), ...]; strict human/gpt alternation."""
    roles = ["human" if t["from"].lower() in _HUMAN else "gpt" for t in conv]
    if len(roles) % 2 or any(r != ("human" if i % 2 == 0 else "gpt") for i, r in enumerate(roles)):
        raise _Skip(BAD_ORDER)
    turns = []
    for q, a in zip(conv[0::2], conv[1::2]):
        question, answer = q["value"].strip(), a["value"].strip()
        if not question:
            raise _Skip(EMPTY_INSTRUCTION)
        if not answer:
            raise _Skip(EMPTY_ANSWER)
        turns.append((question, answer))
    return turns


def _media(media_dir: Path, name: Any) -> Path:
    if not isinstance(name, str) or not name.strip():
        raise _Skip(MALFORMED)
    path = media_dir / name
    if not path.is_file():
        raise _Skip(MEDIA_MISSING)
    return path


def pick(options: list[str], key: str) -> str:
    """A stable choice (same on every run and process, unlike hash()) from `options` by `key`."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def with_aud_run(answer: str) -> str:
    """The answer ending in the canonical " [AUD0]...[AUD7]" run (added, or normalised if the
    eight tokens are already there, possibly with spaces between them)."""
    m = None
    for m in _AUD_RUN_LOOSE.finditer(answer):
        pass
    if m is None:
        return f"{answer} {AUD_RUN}"
    return answer[:m.start()] + AUD_RUN + answer[m.end():]
