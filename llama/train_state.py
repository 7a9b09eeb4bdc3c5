"""Resumable training checkpoints, written atomically.

A checkpoint is a folder `step_000120/` holding the trained tensors (model.safetensors, our
format, loadable for inference), config.json, optimizer.pt, scheduler.pt, rng.pt and
state.json (step, data position, counters) and run.json (the settings that data position
depends on, llama/run_dir.py). It is written under a temporary name and renamed when complete,
so a run killed at any moment, or a full disk, leaves only whole checkpoints; `latest` names the
newest one. Every .pt file is read with weights_only: a pickle that carries code is refused.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, atomic_write_text, load_trained, save_trained, torch_load
from .errors import one_line
from .run_dir import SETTINGS_FILE, OutputError, describe_os_error

TMP_SUFFIX = ".partial"


@dataclass
class TrainState:
    step: int = 0                 # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0       # micro-batches of `epoch` already consumed
    skipped_nonfinite: int = 0
    skipped_too_long: int = 0
    skipped_bad_media: int = 0
    losses: list[float] = field(default_factory=list)   # loss per optimizer step, for the curve
    eval_losses: list[list[float]] = field(default_factory=list)   # [step, held-out loss], for the curve


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": np_state[2], "python": repr(random.getstate()),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    random.setstate(_tuple(ast.literal_eval(state["python"])))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuple(x):
    return tuple(_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(run_dir: Path, model, names: list[str], optimizer, scheduler, state: TrainState,
                    keep: int = 2, settings: dict | None = None) -> Path:
    """Write step_<n>/ atomically, point `latest` at it, keep the newest `keep` checkpoints.

    A failed write (full disk, ...) removes the partial folder and leaves the previous checkpoint
    and `latest` as they were."""
    ckpt_root = run_dir / "checkpoints"
    final = ckpt_root / f"step_{state.step:06d}"
    tmp = ckpt_root / (final.name + TMP_SUFFIX)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        save_trained(model, tmp, names)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state)))
        if settings is not None:
            (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        for f in tmp.iterdir():                       # data on disk before the rename makes it visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(ckpt_root / "latest", final.name + "\n")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(run_dir)
        kept = f"{previous} is intact" if previous is not None else "no earlier checkpoint"
        raise OutputError(f"cannot write checkpoint {final} ({describe_os_error(e)}); {kept}") from e
    # never the one just written: a folder with higher-numbered leftovers must not lose it
    older = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir() and p != final
                   and not p.name.endswith(TMP_SUFFIX))
    for old in older[:max(0, len(older) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint; leftovers of a killed write are removed."""
    ckpt_root = run_dir / "checkpoints"
    if not ckpt_root.is_dir():
        return None
    for partial in ckpt_root.glob(f"*{TMP_SUFFIX}"):
        shutil.rmtree(partial, ignore_errors=True)
    pointer = ckpt_root / "latest"
    if pointer.is_file():
        named = ckpt_root / pointer.read_text().strip()
        if (named / "state.json").is_file():
            return named
    done = sorted(p for p in ckpt_root.glob("step_*") if (p / "state.json").is_file())
    return done[-1] if done else None


def load_pt(path: Path):
    """torch_load, and a pickle carrying code (or any non-tensor object) refused in one line."""
    try:
        return torch_load(path)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused: it holds pickled Python objects, not only tensors "
                              "(loading it could run code); train.py never writes such a file") from e


def load_checkpoint(ckpt: Path, model, optimizer, scheduler) -> TrainState:
    try:
        state = TrainState(**json.loads((ckpt / "state.json").read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{ckpt / 'state.json'}: unreadable ({e})") from e
    load_trained(model, ckpt)
    for name, load in (("optimizer.pt", optimizer.load_state_dict), ("scheduler.pt", scheduler.load_state_dict),
                       ("rng.pt", set_rng_state)):
        content = load_pt(ckpt / name)
        try:
            load(content)
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
            raise CheckpointError(f"{ckpt / name}: does not fit this run ({one_line(e, 200)})") from e
    return state
