"""Training settings and the optimiser recipe (AdamW (0.9, 0.95), wd 0.05, warmup + cosine)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError


class TrainingError(UserError, RuntimeError):
    """A run cannot go on (e.g. a non-finite loss); the message names the step and samples."""


@dataclass
class TrainConfig:
    stage: int
    data: Path                          # data config (YAML/JSON) listing datasets per stage
    out: Path                           # run folder: checkpoints/, final/, tb/, metrics.jsonl, loss.png
    ckpt_dir: Path | None = None        # bundle.json folder (default: the tiny bundle)
    init_from: Path | None = None       # trained weights of the previous stage (our format)
    music_decoder: str | None = None
    batch_size: int = 4
    grad_accum: int = 1
    group_by_length: bool = False       # batches of similar length (less padding), llama/train_batches.py
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    epochs: int = 1
    max_steps: int | None = None        # optimizer steps; overrides epochs when set
    clip: float = 1.0
    max_len: int = 512
    bridge_scale: float | None = None   # None: the model config's (10)
    mixed_precision: str = "auto"       # auto | no | bf16 | fp16
    save_every: int = 0                 # optimizer steps between checkpoints; 0 = only at the end
    keep: int = 2
    seed: int = 0
    resume: bool = False
    overwrite: bool = False             # clear an earlier run's files in `out` (llama/run_dir.py)
    skip_nonfinite: bool = False
    trust_remote_code: bool = False
    cpu: bool = False
    cache_features: Path | None = None  # build/update this feature cache, then train from it
    features: Path | None = None        # train from this feature cache (read only)
    eval_data: Path | None = None       # data config of a held-out split (same stage)
    eval_every: int = 0                 # optimizer steps between held-out evaluations; 0 = only at the end


def lr_lambda(cfg: TrainConfig, total_steps: int):
    """Linear warmup, then cosine from lr to min_lr over the remaining steps."""
    floor = cfg.min_lr / cfg.lr

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No decay on norms, biases, gates and the [AUD] rows (as when they were trained inside the
    undecayed embedding/LM-head matrices)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = name.endswith(".bias") or "norm" in name or name.endswith(".gate") or name.endswith(".aud_rows")
        (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
