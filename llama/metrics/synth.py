"""Requests and references for evaluating a model on a synthetic-world split (DataSet/synth).

`write_requests` picks held-out MusicQA questions (answer from audio) and caption -> music
requests, writes an `inference.py --input` file, and `references` rebuilds, from the split's
world.json truth, what each answer should say and which clip each piece of music should sound
like. Both are pure functions of the split and the counts, so two runs (trained and random
bundle) are scored on the same requests.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from llama.errors import UserError

GENERATE = "Generate a music: {caption}"      # the first stage-2 template (llama/data/formats.py)


@dataclass
class SynthReferences:
    answers: dict[str, str]          # id -> reference answer (MusicQA)
    captions: dict[str, str]         # id -> caption the music was asked for
    audio: dict[str, Path]           # id -> the world's clip for that caption


def _records(split: Path) -> list[dict]:
    path = Path(split) / "world.json"
    try:
        return json.loads(path.read_text())["records"]
    except FileNotFoundError:
        raise UserError(f"{path}: not found; --world must be a synthetic-world split folder") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a synthetic-world truth file ({type(e).__name__}: {e})") from None


def _spread(items: list, n: int) -> list:
    """n items spread evenly over the list (covers every attribute, not just the first pieces)."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def _picks(records: list[dict], n_qa: int, n_music: int) -> tuple[list[dict], list[dict]]:
    questions = [r for r in records if r["dataset"] == "musicqa"]
    kinds = sorted({r["attribute"] for r in questions})
    per_kind = [_spread([r for r in questions if r["attribute"] == k], -(-n_qa // len(kinds))) for k in kinds]
    qa = [r for group in zip(*per_kind) for r in group][:n_qa]          # every attribute asked
    gen = _spread([r for r in records if r["dataset"] == "mucaps"], n_music)
    return qa, gen


def _id(prefix: str, r: dict) -> str:
    return f"{prefix}-{r['sample_id'].replace(':', '-')}"


def write_requests(split: str | Path, out_dir: str | Path, n_qa: int = 20, n_music: int = 10,
                   duration: float = 2.0) -> Path:
    """OUT_DIR/requests.jsonl; media paths point into the split (relative to OUT_DIR)."""
    split, out = Path(split).resolve(), Path(out_dir)
    qa, gen = _picks(_records(split), n_qa, n_music)
    out.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(split, out.resolve()))
    lines = [{"id": _id("qa", r), "prompt": r["instruction"], "audio": str(rel / r["file"])} for r in qa]
    lines += [{"id": _id("gen", r), "prompt": GENERATE.format(caption=r["caption"]), "music": True,
               "duration": duration} for r in gen]
    path = out / "requests.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def references(split: str | Path, n_qa: int = 20, n_music: int = 10) -> SynthReferences:
    split = Path(split).resolve()
    qa, gen = _picks(_records(split), n_qa, n_music)
    return SynthReferences(answers={_id("qa", r): r["answer"] for r in qa},
                           captions={_id("gen", r): r["caption"] for r in gen},
                           audio={_id("gen", r): split / r["file"] for r in gen})
