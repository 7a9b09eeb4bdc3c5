"""Write the synthetic world: OUT/train and OUT/heldout, each complete or absent.

    build_world("data/synth", seed=0, size=200)      # or: python -m DataSet.synth OUT --size 200

Each split is a folder with its own `data.yaml` (stage1/stage2/stage3, relative paths, the
layout of README "Training"), media (audio/*.wav 24 kHz mono 16-bit, images/*.png 64 x 64,
videos/*.mp4 64 x 64, 32 frames at 8 fps), the annotation files of every published format
(annotations.py) and `world.json`. train has `size` pieces, heldout `max(1, size // 5)`; the two
share no melody seed and no caption text (plan.py says how; checked here before writing).
Same (seed, size) -> the same bytes (MP4s: the same decoded frames; see llama.examples.write_video).

A split is written into OUT/.SPLIT.partial and renamed to OUT/SPLIT when complete, so a killed
run leaves no half split; a rerun deletes the leftovers and writes what is missing. A rerun with
the same seed and size finds both splits complete and writes nothing. An OUT holding files not
made here is refused unless `force` (they are left alone); a split of another seed or size is
replaced only with `force`; a SPLIT folder that is not a world split is always refused.

world.json (one JSON object per split; all paths relative to the split folder):

    generator "DataSet.synth", schema 1, seed, size, split, n_pieces
    audio {sample_rate, seconds, format}, picture {size, format}, video {size, frames, fps, format}
    conventions  {colour: {instrument: colour}, shade: {mode: shade}, circles: {tempo: n},
                  bpm: {tempo: bpm}, mood: {"MODE TEMPO": mood}}
    pieces   {piece id: {instrument, tempo, bpm, key, mode, drums, mood, melody_seed, seconds}}
             "p000000" for each piece, "p000000_edit" for its edited version (same melody seed)
    media    {path: {modality, piece, ...}} for every media file; images add colour, shade,
             circles; videos colour, shade, tempo
    records  one per record of every annotation file, in file order:
             sample_id  the id the trainer's reader gives the sample (`Sample.id`,
                        "dataset:key", key = file name for {file: caption} sets, the COCO
                        annotation id, the list index otherwise)
             dataset, stages (the stages of data.yaml that read it), piece (whose truth the
             text states; for muedit the edited piece, with source_piece the original)
             captions:  file, caption
             musicqa:   file, attribute (instrument|tempo|key|drums|mood), instruction, answer
             alpaca:    kind, instruction, answer
             instruct:  input_file, output_file, instruction, answer, caption (of the target
                        music); muimage/muvideo add inferable (the attributes the picture or
                        video shows); muedit adds source_piece and kind (the changed attribute)
             attributes the truth the text states: music -> instrument, tempo, bpm, key, mode,
                        drums, mood; pictures -> colour, shade, circles; videos -> colour, tempo;
                        alpaca -> the attributes its question names
    Compare `world.attributes_in(text)` (and `world.drums_in`) with `attributes`: every word it
    finds in a reference text agrees with them.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from llama.errors import UserError

from . import world
from .annotations import build_annotations, data_yaml, world_media, world_pieces
from .plan import SPLITS, Item, plan_split
from .render import make_media_dirs, write_item_media

GENERATOR, SCHEMA = "DataSet.synth", 1
_TEMP_SUFFIXES = (".partial", ".old")


@dataclass
class SplitResult:
    split: str
    folder: Path
    pieces: int
    files: int
    written: bool          # False: it was already complete


def split_sizes(size: int) -> dict[str, int]:
    return {"train": size, "heldout": max(1, size // 5)}


def _check_args(seed, size) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"--size must be a positive integer (pieces in the train split), got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")


def _stamp(folder: Path) -> dict | None:
    """The header of a split's world.json, or None when `folder` is not a world split."""
    try:
        data = json.loads((folder / "world.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("generator") != GENERATOR:
        return None
    return {k: data.get(k) for k in ("schema", "seed", "size", "split")}


def _ours(name: str) -> bool:
    return name in SPLITS or any(name == f".{s}{x}" for s in SPLITS for x in _TEMP_SUFFIXES)


def _lock(out: Path) -> int:
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{out}: another build is writing this folder right now") from None
    return fd


def check_disjoint(plans: dict[str, list[Item]]) -> None:
    """No melody seed and no caption text in both splits (plan.py makes it so; this checks)."""
    def seeds(items):
        return {it.piece.melody_seed for it in items}

    def captions(items):
        return {c for it in items for c in (it.caption, it.picture_caption, it.video_caption,
                                            it.edit.target_caption)}
    train, heldout = plans["train"], plans["heldout"]
    shared_seeds, shared_caps = seeds(train) & seeds(heldout), captions(train) & captions(heldout)
    if shared_seeds or shared_caps:
        raise RuntimeError(f"train and heldout share melody seeds {sorted(shared_seeds)[:3]} or "
                           f"captions {sorted(shared_caps)[:3]}")


def _dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def world_header(seed: int, size: int, split: str, n: int) -> dict:
    return {
        "generator": GENERATOR, "schema": SCHEMA, "seed": seed, "size": size, "split": split,
        "n_pieces": n,
        "audio": {"sample_rate": world.AUDIO_RATE, "seconds": 4.0, "format": "WAV PCM_16 mono"},
        "picture": {"size": world.PICTURE_SIZE, "format": "PNG"},
        "video": {"size": world.PICTURE_SIZE, "frames": world.VIDEO_FRAMES, "fps": world.VIDEO_FPS,
                  "format": "MP4"},
        "conventions": {"colour": dict(world.COLOUR_NAMES), "shade": {"major": "bright", "minor": "dark"},
                        "circles": dict(world.SHAPES), "bpm": dict(world.TEMPI),
                        "mood": {f"{m} {t}": mood for (m, t), mood in world.MOODS.items()}},
    }


def write_split(folder: Path, items: list[Item], seed: int, size: int, split: str,
                progress: bool = True) -> int:
    """Write every file of the split into `folder` (created); returns the number of files."""
    folder.mkdir(parents=True)
    make_media_dirs(folder)
    bar = _progress(items, split, progress)
    for item in bar:
        write_item_media(folder, item)
    files, records = build_annotations(items)
    for rel, obj in files.items():
        _dump_json(folder / rel, obj)
    (folder / "data.yaml").write_text(data_yaml(split, seed, size), encoding="utf-8")
    _dump_json(folder / "world.json", {**world_header(seed, size, split, len(items)),
                                       "pieces": world_pieces(items), "media": world_media(items),
                                       "records": records})
    return 4 * len(items) + len(files) + 2


def _progress(items, split: str, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return _counter(items, split)
    return tqdm(items, desc=split, unit="piece", file=sys.stderr, leave=True)


def _counter(items, split):
    for n, item in enumerate(items, 1):
        yield item
        print(f"\r{split}: {n}/{len(items)} pieces", end="\n" if n == len(items) else "",
              file=sys.stderr, flush=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def build_world(out, seed: int = 0, size: int = 200, force: bool = False,
                progress: bool = True) -> list[SplitResult]:
    """Write whatever of OUT/train and OUT/heldout is missing; one SplitResult per split."""
    _check_args(seed, size)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the folder ({e.strerror})") from e
    fd = _lock(out)
    try:
        others = sorted(p.name for p in out.iterdir() if not _ours(p.name))
        if others and not force:
            raise UserError(f"{out}: folder holds files this generator did not write (e.g. "
                            f"{others[0]!r}); choose an empty folder or pass --force")
        sizes = split_sizes(size)
        todo = []
        for split in SPLITS:
            target = out / split
            if not target.exists():
                todo.append(split)
                continue
            stamp = _stamp(target)
            if stamp is None:
                raise UserError(f"{target}: exists and is not a split of a synthetic world "
                                f"(no world.json from {GENERATOR}); remove it or choose another folder")
            if stamp != {"schema": SCHEMA, "seed": seed, "size": size, "split": split}:
                if not force:
                    raise UserError(f"{target}: holds a world of seed {stamp['seed']}, size "
                                    f"{stamp['size']} (not seed {seed}, size {size}); pass --force "
                                    f"to replace it")
                todo.append(split)
        for split in SPLITS:                          # leftovers of a killed run
            for suffix in _TEMP_SUFFIXES:
                _remove(out / f".{split}{suffix}")
        plans = {s: plan_split(seed, s, sizes[s]) for s in SPLITS}
        check_disjoint(plans)
        results = []
        for split in SPLITS:
            target, items = out / split, plans[split]
            if split not in todo:
                results.append(SplitResult(split, target, len(items), _count_files(target), False))
                continue
            partial = out / f".{split}.partial"
            n_files = write_split(partial, items, seed, size, split, progress)
            if target.exists():                        # --force over another seed/size
                old = out / f".{split}.old"
                os.rename(target, old)
                os.rename(partial, target)
                shutil.rmtree(old)
            else:
                os.rename(partial, target)
            results.append(SplitResult(split, target, len(items), n_files, True))
        return results
    finally:
        os.close(fd)


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())
