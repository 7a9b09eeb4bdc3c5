"""Example requests for `make demo`, taken from the held-out world (never seen in training).

    python -m DataSet.synth.demo WORLD_SPLIT OUT_DIR

copies a few held-out clips, one picture and one video into OUT_DIR and writes
OUT_DIR/requests.jsonl (media paths relative to it) plus OUT_DIR/truth.json, what each answer
should say, so a reader of the demo output can check it.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from . import world as W


def _first(records, dataset: str, **match) -> dict:
    for r in records:
        if r["dataset"] == dataset and all(r.get(k) == v for k, v in match.items()):
            return r
    raise LookupError(f"no {dataset} record with {match}")


def write_demo(split: str | Path, out: str | Path) -> Path:
    split, out = Path(split), Path(out)
    records = json.loads((split / "world.json").read_text())["records"]
    qa = [r for r in records if r["dataset"] == "musicqa"]
    picks = [("instrument", qa[0]), ("tempo", _first(qa[5:], "musicqa", attribute="tempo")),
             ("key", _first(qa[10:], "musicqa", attribute="key"))]
    requests, truth = [], {}
    (out / "media").mkdir(parents=True, exist_ok=True)

    def media(rel: str) -> str:
        shutil.copy2(split / rel, out / "media" / Path(rel).name)
        return f"media/{Path(rel).name}"

    for name, r in picks:
        requests.append({"id": f"ask-{name}", "prompt": r["instruction"], "audio": media(r["file"])})
        truth[f"ask-{name}"] = r["answer"]
    cap = _first(records, "mucaps")
    requests.append({"id": "describe-music", "prompt": "Describe the music.", "audio": media(cap["file"])})
    truth["describe-music"] = cap["caption"]
    img = _first(records, "muimage")
    requests.append({"id": "music-for-picture", "prompt": img["instruction"], "image": media(img["input_file"]),
                     "music": True, "duration": 2})
    truth["music-for-picture"] = img["answer"] + f"  (inferable from the picture: {', '.join(img['inferable'])})"
    vid = _first(records, "muvideo")
    requests.append({"id": "music-for-video", "prompt": vid["instruction"], "video": media(vid["input_file"]),
                     "music": True, "duration": 2})
    truth["music-for-video"] = vid["answer"] + f"  (inferable from the video: {', '.join(vid['inferable'])})"
    gen = _first(records, "mucaps", piece=records[-1]["piece"]) if records else cap
    requests.append({"id": "music-from-text", "prompt": f"Generate a music: {gen['caption']}", "music": True,
                     "duration": 2})
    truth["music-from-text"] = gen["caption"] + " [AUD0]...[AUD7]"
    (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m DataSet.synth.demo WORLD_SPLIT OUT_DIR", file=sys.stderr)
        return 2
    print(write_demo(*argv) / "requests.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["write_demo", "W"]
