"""Training helpers shared by the stand-ins' pretraining: throw-away attribute heads, AdamW with
warm-up and cosine decay, and endless shuffled batches."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import standins_probe as P


class Heads(nn.Module):
    """One linear classifier per attribute on a pooled feature vector (discarded after training)."""

    def __init__(self, dim: int, attributes):
        super().__init__()
        self.attributes = tuple(attributes)
        self.heads = nn.ModuleDict({a: nn.Linear(dim, len(P.CLASSES[a])) for a in self.attributes})

    def loss(self, x: torch.Tensor, y: dict) -> torch.Tensor:
        return sum(nn.functional.cross_entropy(self.heads[a](x), y[a]) for a in self.attributes)


def _label_dict(pieces, attributes) -> dict[str, torch.Tensor]:
    return {a: P.labels(pieces, a) for a in attributes}


def _schedule(opt, steps: int, warmup: int = 10):
    """Linear warm-up then cosine decay to 10 %."""
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + np.cos(np.pi * min(1.0, t)))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def _fit(params, loss_fn, steps: int, lr: float, log, name: str, every: int = 50) -> list[float]:
    """Adam on `loss_fn(step)`; returns the losses."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = _schedule(opt, steps)
    losses = []
    for step in range(steps):
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log and (step % every == 0 or step == steps - 1):
            log(f"  {name} step {step + 1}/{steps} loss {np.mean(losses[-every:]):.3f}")
    return losses


def _batches(n: int, batch: int, gen: torch.Generator):
    """Endless shuffled index batches over n items."""
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1 if n >= batch else 1, batch):
            yield order[i:i + batch]
