"""Example requests for `make demo`, taken from the held-out world (never seen in training).

    python -m DataSet.synth.demo WORLD_SPLIT OUT_DIR          # write the requests
    python -m DataSet.synth.demo check RESULTS_JSONL TRUTH_JSON  # grade the answers

`write_demo` copies a few held-out clips, one picture and one video into OUT_DIR and writes
OUT_DIR/requests.jsonl (media paths relative to it) plus OUT_DIR/truth.json: what each answer
should say and the attributes it must name. The requests are the first of each kind in the
held-out split, not picked by how the model answers them. `check` prints each answer beside the
truth and which attributes it names right or wrong, so the demo's reader can judge it.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from llama.errors import UserError, one_line

from . import world as W
from .evaluate import named_right

DESCRIBED = ("instrument", "tempo", "key", "drums")     # what a description of music must name


def _first(records, dataset: str, **match) -> dict:
    for r in records:
        if r["dataset"] == dataset and all(r.get(k) == v for k, v in match.items()):
            return r
    raise LookupError(f"no {dataset} record with {match}")


def write_demo(split: str | Path, out: str | Path) -> Path:
    split, out = Path(split), Path(out)
    records = json.loads((split / "world.json").read_text())["records"]
    qa = [r for r in records if r["dataset"] == "musicqa"]
    picks, used = [], set()
    for attribute in ("instrument", "tempo", "key"):      # each asked of another piece when there is one
        r = _first([r for r in qa if r["piece"] not in used] or qa, "musicqa", attribute=attribute)
        picks.append((attribute, r))
        used.add(r["piece"])
    requests, truth = [], {}
    (out / "media").mkdir(parents=True, exist_ok=True)

    def media(rel: str) -> str:
        shutil.copy2(split / rel, out / "media" / Path(rel).name)
        return f"media/{Path(rel).name}"

    def expect(rid: str, text: str, rec: dict, names) -> None:
        truth[rid] = {"expected": text, "names": list(names), "attributes": rec["attributes"]}

    for name, r in picks:
        requests.append({"id": f"ask-{name}", "prompt": r["instruction"], "audio": media(r["file"])})
        expect(f"ask-{name}", r["answer"], r, [r["attribute"]])
    cap = _first(records, "mucaps")
    requests.append({"id": "describe-music", "prompt": "Describe the music.", "audio": media(cap["file"])})
    expect("describe-music", cap["caption"], cap, DESCRIBED)
    for dataset, kind in (("muimage", "image"), ("muvideo", "video")):
        r = _first(records, dataset)
        rid = f"music-for-{'picture' if kind == 'image' else 'video'}"
        requests.append({"id": rid, "prompt": r["instruction"], kind: media(r["input_file"]),
                         "music": True, "duration": 2})
        expect(rid, r["answer"], r, r["inferable"])
    gen = [r for r in records if r["dataset"] == "mucaps"][-1]     # a caption no other request uses
    requests.append({"id": "music-from-text", "prompt": f"Generate a music: {gen['caption']}", "music": True,
                     "duration": 2})
    expect("music-from-text", gen["caption"], gen, DESCRIBED)
    (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return out


def _load_json(path: Path, lines: bool = False):
    try:
        text = path.read_text(encoding="utf-8")
        return [json.loads(x) for x in text.splitlines() if x.strip()] if lines else json.loads(text)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: {one_line(e)}") from e


def grade(answer: str, truth: dict) -> dict[str, bool]:
    """attribute -> whether the answer names it with the true value."""
    return {a: named_right(answer, truth["attributes"], a) for a in truth["names"]}


def check(results: str | Path, truth_file: str | Path, out=sys.stdout) -> tuple[int, int]:
    """Print every answer beside the truth; returns (attributes named right, attributes asked)."""
    truth = _load_json(Path(truth_file))
    right = asked = 0
    for rec in _load_json(Path(results), lines=True):
        t = truth.get(rec.get("id"))
        if t is None:
            continue
        if rec.get("error"):
            print(f"{rec['id']:<18} error: {one_line(rec['error'])}", file=out)
            asked += len(t["names"])
            continue
        answer = one_line(rec.get("answer", ""))
        marks = grade(answer, t)
        right, asked = right + sum(marks.values()), asked + len(marks)
        verdict = ", ".join(f"{a} {'right' if ok else 'WRONG'}" for a, ok in marks.items())
        print(f"{rec['id']:<18} {answer}", file=out)
        print(f"{'':<18} truth: {t['expected']}   [{verdict}]"
              + (f"   music: {rec['wav']}" if rec.get("wav") else ""), file=out)
    print(f"{right} of {asked} attributes named right", file=out)
    return right, asked


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) == 3 and argv[0] == "check":
            check(argv[1], argv[2])
            return 0
        if len(argv) == 2:
            print(write_demo(*argv) / "requests.jsonl")
            return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("usage: python -m DataSet.synth.demo WORLD_SPLIT OUT_DIR\n"
          "       python -m DataSet.synth.demo check RESULTS_JSONL TRUTH_JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
