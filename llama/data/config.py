"""The data config: which datasets each training stage reads.

A YAML (.yaml/.yml) or JSON (.json) file with one list per stage:

    stage1:
      - {name: mucaps, format: captions, modality: audio,
         annotations: data/MUCaps/MUCapsCaptions.json, media_dir: data/MUCaps/audios}
    stage2:
      - {name: mucaps, format: captions, modality: audio, annotations: ..., media_dir: ...}
    stage3:
      - {name: muedit, format: instruct, modality: audio, annotations: ..., media_dir: ...,
         output_dir: ..., captions: data/MUEdit/captions.json, limit: 1000, weight: 0.5}

Keys of an entry: name, format, annotations (required); modality, media_dir, output_dir,
captions, task, limit, weight (see `DatasetSpec`). Relative paths resolve against the config
file's folder; "~" and $VARS are expanded. Any mistake (unknown key, format, modality, a dataset
that makes no sense in its stage) is a one-line `DataError` naming the file and the entry.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .formats import DataError, DatasetSpec, LoadReport, Sample, load_datasets

ENTRY_KEYS = tuple(f.name for f in dataclasses.fields(DatasetSpec))
_REQUIRED = ("name", "format", "annotations")
_PATH_KEYS = ("annotations", "media_dir", "output_dir", "captions")


def _read_config(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: data config not found")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if suffix in (".yaml", ".yml"):
        import yaml
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataError(f"{path}: not valid YAML ({e})") from e
    raise DataError(f"{path}: data config must be .yaml, .yml or .json")


def _stage_number(key) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key if key in (1, 2, 3) else None
    if isinstance(key, str):
        digits = key.lower().removeprefix("stage").lstrip("_ ")
        if digits in ("1", "2", "3"):
            return int(digits)
    return None


def _resolve(value, base: Path) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return p if p.is_absolute() else base / p


def _spec(entry, base: Path, where: str) -> DatasetSpec:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a mapping, got {type(entry).__name__}")
    name = entry.get("name")
    if isinstance(name, str):
        where = f"{where} ({name})"
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(ENTRY_KEYS)})")
    missing = [k for k in _REQUIRED if entry.get(k) in (None, "")]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)}")
    kwargs = dict(entry)
    for key in _PATH_KEYS:
        if kwargs.get(key) is not None:
            if not isinstance(kwargs[key], str):
                raise DataError(f"{where}: {key} must be a path string")
            kwargs[key] = _resolve(kwargs[key], base)
    spec = DatasetSpec(**kwargs)
    problem = spec.problem()
    if problem:
        raise DataError(f"{where}: {problem}")
    return spec


def load_data_config(path: str | os.PathLike) -> dict[int, list[DatasetSpec]]:
    """{stage: [DatasetSpec, ...]} for the stages the file lists, paths made absolute."""
    path = Path(path).resolve()
    data = _read_config(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping stage1/stage2/stage3 -> list of datasets")
    base = path.parent
    stages: dict[int, list[DatasetSpec]] = {}
    for key, entries in data.items():
        stage = _stage_number(key)
        if stage is None:
            raise DataError(f"{path}: unknown key {key!r} (expected stage1, stage2, stage3)")
        if stage in stages:
            raise DataError(f"{path}: stage {stage} listed twice")
        if not isinstance(entries, list):
            raise DataError(f"{path}: {key} must be a list of datasets")
        specs = []
        for i, entry in enumerate(entries):
            spec = _spec(entry, base, f"{path}: {key} entry {i + 1}")
            problem = spec.stage_problem(stage)
            if problem:
                raise DataError(f"{path}: {key} entry {i + 1} ({spec.name}): {problem}")
            specs.append(spec)
        names = [s.name for s in specs]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise DataError(f"{path}: {key} lists dataset {dup!r} twice (sample ids would clash)")
        stages[stage] = specs
    return stages


def load_stage(path: str | os.PathLike, stage: int) -> tuple[list[Sample], list[LoadReport]]:
    """Every sample of every dataset the config lists for `stage`, with one report per dataset."""
    stages = load_data_config(path)
    if stage not in stages:
        listed = ", ".join(f"stage{s}" for s in sorted(stages)) or "none"
        raise DataError(f"{Path(path)}: no stage{stage} datasets (listed: {listed})")
    return load_datasets(stages[stage], stage)
