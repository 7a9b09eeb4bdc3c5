"""evaluate.py end to end on hand-made results folders, as a user runs it."""
import json

import numpy as np
import pytest
import soundfile as sf

import evaluate


def _results(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _rec(rid, answer=None, wav=None, error=None):
    return {"id": rid, "wav": wav, "prompt": "p", "answer": answer, "error": error}


def _tone(path, hz, seconds=1.0, rate=16000):
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)
    return path


def test_answers_report_counts_missing_ids_and_failures(tmp_path, capsys):
    res = _results(tmp_path / "out", [
        _rec("a", "the tempo is fast"), _rec("b", "it is in g minor"),
        _rec("stray", "an id the references do not have"), _rec("c", error="x.wav: not found"),
        _rec("b", "no drums in this piece")])                          # a rerun: the last record wins
    with (res / "results.jsonl").open("a") as f:
        f.write('{"id": "torn", "answ\n')                                 # line 6, cut by a crash
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"a": "the tempo is fast", "b": ["there are no drums in this piece"], "c": "x"}))
    assert evaluate.main(["answers", "--results", str(res), "--references", str(refs), "--no-progress"]) == 0
    report = json.loads((res / "eval_answers.json").read_text())
    assert report["n"] == 2
    assert report["skipped"]["not_in_references"] == ["stray"]
    assert report["skipped"]["failed_requests"] == {"c": "x.wav: not found"}
    assert report["skipped"]["unreadable_result_lines"] == [6]
    assert report["skipped"]["not_answered"] == ["c"]
    assert 0 < report["metrics"]["bleu_4"] < 1 and report["metrics"]["rouge_l"] > 0.5
    assert "bertscore" in report["unavailable"]
    out = capsys.readouterr().out
    assert "bleu_1" in out and "skipped 1 not in references: stray" in out


def test_identical_answers_score_one(tmp_path):
    texts = {"q1": "the instrument is the violin", "q2": "the mood is calm and the tempo is slow"}
    res = _results(tmp_path / "out", [_rec(k, v) for k, v in texts.items()])
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": k, "answer": v}) + "\n" for k, v in texts.items()))
    assert evaluate.main(["answers", "--results", str(res / "results.jsonl"), "--references", str(refs),
                          "--report", str(tmp_path / "r.json")]) == 0
    m = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert all(m[f"bleu_{n}"] == pytest.approx(1.0) for n in range(1, 5))
    assert m["rouge_l"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from llama.metrics.tiny_models import write_all

    return write_all(tmp_path_factory.mktemp("evalmodels"))


def test_music_identical_sets_give_fad_and_kl_zero_and_skip_a_broken_reference(tmp_path, models):
    out = tmp_path / "out"
    out.mkdir()
    refs = tmp_path / "refs"
    refs.mkdir()
    recs = []
    for i, hz in enumerate((220, 330, 440, 550)):
        _tone(out / f"g{i}.wav", hz, 0.5 + 0.3 * i)
        _tone(refs / f"g{i}.wav", hz, 0.5 + 0.3 * i)
        recs.append(_rec(f"g{i}", "music", f"g{i}.wav"))
    (refs / "broken.wav").write_bytes(b"RIFF....not a wav")
    _results(out, recs)
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({f"g{i}": "a calm piano piece" for i in range(4)}))
    code = evaluate.main(["music", "--results", str(out), "--reference-audio", str(refs), "--captions", str(caps),
                          "--embed-model", str(models["hubert"]), "--embed-kind", "audio",
                          "--classifier", str(models["ast"]), "--clap", str(models["clap"]),
                          "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    report = json.loads((out / "eval_music.json").read_text())
    assert abs(report["metrics"]["fad"]) < 1e-6
    assert report["metrics"]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert -1 <= report["metrics"]["clap_score"] <= 1
    assert list(report["skipped"]["unreadable_clips"]) == [str(refs / "broken.wav")]
    assert report["n"]["fad"] == {"generated": 4, "references": 4}


def test_edit_compares_each_clip_with_its_own_target(tmp_path, models):
    out = tmp_path / "out"
    out.mkdir()
    targets = {}
    for i, hz in enumerate((220, 880, 330)):
        _tone(out / f"e{i}.wav", hz)
        targets[f"e{i}"] = str(_tone(tmp_path / f"t{i}.wav", (880, 220, 330)[i]))
    _results(out, [_rec(f"e{i}", "here it is", f"e{i}.wav") for i in range(3)])
    (tmp_path / "t.json").write_text(json.dumps(targets))
    assert evaluate.main(["edit", "--results", str(out), "--reference-audio", str(tmp_path / "t.json"),
                          "--classifier", str(models["ast"]), "--no-progress"]) == 0
    report = json.loads((out / "eval_edit.json").read_text())
    assert report["n"]["kl"] == 3 and report["metrics"]["kl"] > 0
    assert "fad" in report["unavailable"] and "clap_score" in report["unavailable"]


@pytest.mark.parametrize("case", ["wrong_kind", "no_results", "bad_refs"])
def test_user_mistakes_are_one_line_errors(tmp_path, models, capsys, case):
    out = _results(tmp_path / "out", [_rec("a", "x", None)])
    refs = tmp_path / "refs"
    refs.mkdir()
    _tone(refs / "a.wav", 440)
    if case == "wrong_kind":
        argv = ["music", "--results", str(out), "--reference-audio", str(refs), "--classifier", str(models["bert"])]
        expected = f"{models['bert']}: model_type 'bert' is not an audio classifier"
    elif case == "no_results":
        argv = ["answers", "--results", str(tmp_path / "nowhere"), "--references", str(refs / "a.wav")]
        expected = f"{tmp_path / 'nowhere'}: not found"
    else:
        (tmp_path / "r.jsonl").write_text('{"id": "a"}\n')
        argv = ["answers", "--results", str(out), "--references", str(tmp_path / "r.jsonl")]
        expected = f"{tmp_path / 'r.jsonl'}:1: expected"
    assert evaluate.main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err


def test_synth_requests_and_references_agree(tmp_path):
    from llama.metrics.synth import references, write_requests

    split = tmp_path / "split"
    (split / "audio").mkdir(parents=True)
    recs = []
    for i in range(10):
        recs.append({"sample_id": f"musicqa:{i}", "dataset": "musicqa", "file": f"audio/p{i}.wav",
                     "attribute": ("instrument", "tempo")[i % 2], "instruction": f"q{i}?", "answer": f"a{i}."})
        recs.append({"sample_id": f"mucaps:p{i}.wav", "dataset": "mucaps", "file": f"audio/p{i}.wav",
                     "caption": f"caption {i}"})
    (split / "world.json").write_text(json.dumps({"records": recs}))
    req = write_requests(split, tmp_path / "req", n_qa=4, n_music=3)
    lines = [json.loads(x) for x in req.read_text().splitlines()]
    refs = references(split, n_qa=4, n_music=3)
    asked = {x["id"] for x in lines if not x.get("music")}
    assert asked == set(refs.answers) and len(asked) == 4
    assert {refs.answers[x["id"]] for x in lines if x["id"] in asked} == {f"a{i}." for i in (0, 1, 4, 5)}
    made = [x for x in lines if x.get("music")]
    assert [refs.captions[x["id"]] for x in made] == [x["prompt"].split(": ", 1)[1] for x in made]
    for x in lines:
        if "audio" in x:
            assert (req.parent / x["audio"]).resolve().parent == (split / "audio").resolve()
    assert all(p.parent == (split / "audio").resolve() for p in refs.audio.values())


def test_compare_puts_reports_side_by_side(tmp_path, capsys):
    texts = {"q1": "the instrument is the violin", "q2": "the mood is calm and the tempo is slow"}
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(texts))
    good = _results(tmp_path / "good", [_rec(k, v) for k, v in texts.items()])
    bad = _results(tmp_path / "bad", [_rec(k, "piano") for k in texts])
    for res in (good, bad):
        assert evaluate.main(["answers", "--results", str(res), "--references", str(refs), "--no-progress"]) == 0
    capsys.readouterr()
    assert evaluate.main(["compare", f"trained={good / 'eval_answers.json'}", f"random={bad / 'eval_answers.json'}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", "trained", "random"]
    bleu1 = next(line.split() for line in lines if line.startswith("bleu_1"))
    assert float(bleu1[1]) == pytest.approx(1.0) and float(bleu1[2]) < 0.5
    for spec, what in (("noequals", "expected NAME=REPORT.json"), (f"x={tmp_path / 'none.json'}", "cannot read"),
                       (f"x={refs}", "not an evaluate.py report")):
        assert evaluate.main(["compare", spec]) == 2
        err = capsys.readouterr().err
        assert what in err and len(err.strip().splitlines()) == 1
