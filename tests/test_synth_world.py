"""The synthetic world writer (DataSet/synth): deterministic, disjoint splits, every record readable
by the trainer's readers, truth that agrees with the texts, and safe about folders and kills."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from DataSet.synth import world
from DataSet.synth.__main__ import main
from DataSet.synth.build import build_world
from DataSet.synth.world import Piece, attributes_in, drums_in
from llama.data.config import load_data_config
from llama.data.formats import load_datasets
from llama.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 6
MUSIC_TEXT_SETS = ("mucaps", "musicqa", "muimage", "muvideo", "muedit")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "world"
    build_world(out, seed=0, size=SIZE, progress=False)
    return out


def _content(path: Path) -> bytes:
    """A file's bytes; for an MP4, its decoded frames. x264 (even on one thread) sometimes encodes
    the same frames with different but equivalent choices (seen: 49 bytes of one slice differ,
    the decoded pixels are identical), and the decoded frames are what the trainer reads."""
    if path.suffix != ".mp4":
        return path.read_bytes()
    import av
    import numpy as np
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).tobytes()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): _content(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _world(folder: Path, split: str) -> dict:
    return json.loads((folder / split / "world.json").read_text(encoding="utf-8"))


def test_two_builds_write_identical_bytes(world_dir, tmp_path):
    build_world(tmp_path / "again", seed=0, size=SIZE, progress=False)
    first, second = _files(world_dir), _files(tmp_path / "again")
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []
    assert sorted(os.listdir(world_dir)) == ["heldout", "train"]
    counts = {split: sum(1 for k in first if k.startswith(split + "/")) for split in ("train", "heldout")}
    assert counts == {"train": 4 * SIZE + 11, "heldout": 4 * 1 + 11}   # media + 9 annotations + yaml + world


def test_splits_share_no_melody_seed_and_no_caption(world_dir):
    train, heldout = _world(world_dir, "train"), _world(world_dir, "heldout")
    assert len(train["pieces"]) == 2 * SIZE and len(heldout["pieces"]) == 2   # pieces + edited ones

    def seeds(w):
        return {p["melody_seed"] for p in w["pieces"].values()}

    def captions(w):
        return {r["caption"] for r in w["records"] if "caption" in r}
    assert seeds(train) and seeds(heldout) and not seeds(train) & seeds(heldout)
    assert captions(train) and captions(heldout) and not captions(train) & captions(heldout)


def test_every_record_loads_through_the_trainer_readers(world_dir):
    for split in ("train", "heldout"):
        truth = _world(world_dir, split)
        by_dataset: dict[str, list[dict]] = {}
        for r in truth["records"]:
            by_dataset.setdefault(r["dataset"], []).append(r)
        stages = load_data_config(world_dir / split / "data.yaml")
        assert sorted(stages) == [1, 2, 3]
        seen = set()
        for stage, specs in stages.items():
            samples, reports = load_datasets(specs, stage)
            for report in reports:
                expected = by_dataset[report.dataset]
                assert stage in expected[0]["stages"]
                assert (report.read, report.kept, report.skipped) == (len(expected), len(expected), {}), \
                    report.details()
                seen.add(report.dataset)
            records = {r["sample_id"]: r for r in truth["records"]}
            for s in samples:
                rec = records[s.id]
                if s.writes_music:
                    assert s.target_caption == rec["caption"]
                    assert s.target_audio is not None and s.target_audio.is_file()
                for media in (s.audio, s.image, s.video):
                    if media is not None:
                        assert media.is_file()
        assert seen == set(by_dataset)
        for rel, info in truth["media"].items():
            assert (world_dir / split / rel).is_file(), rel
            assert info["piece"] in truth["pieces"]


def test_media_decode_with_the_project_loaders(world_dir):
    from llama.media import load_audio, load_image, load_video
    folder = world_dir / "train"
    wave = load_audio(folder / "audio/p000000.wav", sample_rate=world.AUDIO_RATE)
    assert wave.shape[-1] == int(4.0 * world.AUDIO_RATE) and abs(wave).max() > 0.5
    assert load_image(folder / "images/p000000.png").size == (world.PICTURE_SIZE, world.PICTURE_SIZE)
    assert load_video(folder / "videos/p000000.mp4", n_frames=8).shape[0] == 8


def test_world_truth_agrees_with_every_text(world_dir):
    for split in ("train", "heldout"):
        truth = _world(world_dir, split)
        for rec in truth["records"]:
            attrs = rec["attributes"]
            for field in ("caption", "answer"):
                text = rec.get(field)
                if text is None:
                    continue
                found = {k: v for k, v in attributes_in(text).items() if v is not None}
                assert all(attrs.get(k) == v for k, v in found.items()), (rec["sample_id"], text, attrs)
                if drums_in(text) is not None:
                    assert drums_in(text) == attrs["drums"], (rec["sample_id"], text)
                if field == "caption" and rec["dataset"] in MUSIC_TEXT_SETS:
                    assert set(found) >= {"instrument", "tempo", "key", "mode"}, text
                    assert drums_in(text) == attrs["drums"], text
            if rec["dataset"] in ("coco", "muvideo_caps"):
                assert attrs["colour"] in rec["caption"]
            if rec["dataset"] != "alpaca":
                piece = truth["pieces"][rec["piece"]]
                assert all(piece[k] == v for k, v in attrs.items() if k in piece), rec["sample_id"]
            if rec["dataset"] == "muedit":
                src, dst = truth["pieces"][rec["source_piece"]], truth["pieces"][rec["piece"]]
                assert src["melody_seed"] == dst["melody_seed"]
                changed = {k for k in ("instrument", "tempo", "key", "mode", "drums") if src[k] != dst[k]}
                assert changed == {rec["kind"]}


def test_attributes_in_reads_hand_written_sentences():
    assert attributes_in("A slow, sad violin piece in D minor.") == {
        "instrument": "violin", "tempo": "slow", "key": "D", "mode": "minor", "mood": "sad"}
    assert attributes_in("Piano or guitar, fast; G major.") == {
        "instrument": None, "tempo": "fast", "key": "G", "mode": "major", "mood": None}
    assert attributes_in("A cheerful tune.") == {
        "instrument": None, "tempo": None, "key": None, "mode": None, "mood": "cheerful"}
    assert drums_in("Flute in C major, without drums.") is False
    assert drums_in("Yes, there are drums.") is True and drums_in("A calm piano piece.") is None
    p = Piece("piano", "medium", "C", "major", False, 1)        # variant 0 keeps the original text
    assert world.describe_picture(p) == "A bright red picture with 2 white circles."
    assert world.describe_video(p) == "A white ball bouncing at a medium pace on a bright red background."
    assert world.scale_notes("F", "major") == ["F", "G", "A", "Bb", "C", "D", "E"]


@pytest.mark.parametrize("size", ["0", "-3"])
def test_size_must_be_positive(tmp_path, capsys, size):
    assert main([str(tmp_path / "w"), "--size", size, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--size" in err
    assert not (tmp_path / "w").exists()
    with pytest.raises(UserError):
        build_world(tmp_path / "w", size=int(size))


def test_folder_with_other_files_is_refused_unless_forced(tmp_path, capsys):
    out = tmp_path / "w"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([str(out), "--size", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.txt" in err and "--force" in err
    assert sorted(os.listdir(out)) == ["notes.txt"]
    assert main([str(out), "--size", "1", "--quiet", "--force"]) == 0
    assert sorted(os.listdir(out)) == ["heldout", "notes.txt", "train"]
    assert (out / "notes.txt").read_text() == "mine"


def test_rerun_is_a_no_op_and_another_seed_needs_force(world_dir, tmp_path, capsys):
    before = {p: p.stat().st_mtime_ns for p in world_dir.rglob("*")}
    assert main([str(world_dir), "--size", str(SIZE), "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in world_dir.rglob("*")} == before
    with pytest.raises(UserError, match="seed 0, size 6.*--force"):
        build_world(world_dir, seed=1, size=SIZE, progress=False)
    small = tmp_path / "small"
    build_world(small, seed=0, size=1, progress=False)
    results = build_world(small, seed=1, size=1, force=True, progress=False)
    assert all(r.written for r in results) and _world(small, "train")["seed"] == 1
    assert sorted(os.listdir(small)) == ["heldout", "train"]
    (small / "heldout" / "world.json").unlink()                 # not a world split any more
    with pytest.raises(UserError, match="not a split"):
        build_world(small, seed=1, size=1, force=True, progress=False)


_DIE_AT = """
import os, sys
import DataSet.synth.build as b
real, calls = b.write_item_media, [0]
def dying(folder, item):
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):
        os._exit(137)                       # like kill -9: no cleanup runs
    real(folder, item)
b.write_item_media = dying
b.build_world(sys.argv[1], seed=0, size=int(sys.argv[3]), progress=False)
"""


@pytest.mark.parametrize("die_at,left", [(3, []), (SIZE + 1, ["train"])])
def test_killed_build_leaves_no_half_split_and_rerun_completes(world_dir, tmp_path, die_at, left):
    out = tmp_path / "w"
    run = subprocess.run([sys.executable, "-c", _DIE_AT, str(out), str(die_at), str(SIZE)], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert run.returncode == 137, run.stderr
    assert sorted(p for p in os.listdir(out) if not p.startswith(".")) == left
    assert (out / (".heldout.partial" if left else ".train.partial")).is_dir()   # the half split
    results = build_world(out, seed=0, size=SIZE, progress=False)
    assert [r.written for r in results] == [not left, True]
    assert sorted(os.listdir(out)) == ["heldout", "train"]
    assert _files(out) == _files(world_dir)
