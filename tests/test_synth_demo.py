"""The demo's held-out requests and its grader (DataSet/synth/demo.py): requests point at copied
held-out media, the truth names the attributes each answer must carry, and the grader marks a
right answer right, a wrong one wrong, a failed request as missed, and prints no control bytes."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from DataSet.synth.build import build_world
from DataSet.synth.demo import check, main, write_demo
from llama.request_schema import from_json, request_id


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    build_world(root / "world", seed=1, size=5, progress=False)
    return write_demo(root / "world" / "heldout", root / "demo")


def _requests(demo_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (demo_dir / "requests.jsonl").read_text().splitlines()]


def test_requests_are_valid_and_their_media_exist(demo_dir):
    reqs = _requests(demo_dir)
    assert len({r["id"] for r in reqs}) == len(reqs) == 7
    for n, r in enumerate(reqs):
        from_json(r, request_id(r, n), {}, demo_dir)
        for kind in ("audio", "image", "video"):
            if kind in r:
                assert (demo_dir / r[kind]).is_file()
    assert sum(bool(r.get("music")) for r in reqs) == 3


def test_truth_describes_the_held_out_pieces(demo_dir):
    truth = json.loads((demo_dir / "truth.json").read_text())
    world = json.loads((demo_dir.parent / "world" / "heldout" / "world.json").read_text())
    qa = next(r for r in world["records"] if r["dataset"] == "musicqa")
    assert truth["ask-instrument"]["attributes"]["instrument"] == qa["attributes"]["instrument"]
    assert truth["ask-instrument"]["names"] == [qa["attribute"]]
    assert set(truth["describe-music"]["names"]) == {"instrument", "tempo", "key", "drums"}


def _results(tmp_path: Path, answers: dict[str, str | None]) -> Path:
    path = tmp_path / "results.jsonl"
    lines = [{"id": i, "answer": a, "error": None if a is not None else "bad file", "wav": None}
             for i, a in answers.items()]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_grader_tells_right_from_wrong(demo_dir, tmp_path):
    truth = json.loads((demo_dir / "truth.json").read_text())
    t = truth["ask-instrument"]["attributes"]
    other = next(i for i in ("piano", "guitar", "violin", "flute") if i != t["instrument"])
    out = io.StringIO()
    right, asked = check(_results(tmp_path, {"ask-instrument": f"It is the {t['instrument']}.\x1b[2J",
                                             "ask-tempo": None}), demo_dir / "truth.json", out=out)
    assert (right, asked) == (1, 2)
    assert "\x1b" not in out.getvalue() and "instrument right" in out.getvalue()
    right, _ = check(_results(tmp_path, {"ask-instrument": f"It is the {other}."}), demo_dir / "truth.json",
                     out=io.StringIO())
    assert right == 0


def test_unreadable_results_is_one_line_error(demo_dir, tmp_path, capsys):
    bad = tmp_path / "results.jsonl"
    bad.write_text("{not json\n")
    assert main(["check", str(bad), str(demo_dir / "truth.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(bad) in err and "\n" not in err
