"""A run's records: metrics.jsonl (one line per optimizer step, plus held-out lines), TensorBoard,
and loss.png (training loss per step, held-out loss at its steps). Only the main process writes."""
from __future__ import annotations

import json
from pathlib import Path


class RunLog:
    def __init__(self, out: Path, stage: int, step: int, main: bool):
        self.out, self.stage, self.main = out, stage, main
        self.metrics = self._metrics_file(step) if main else None
        self.writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(out / "tb"))

    def _metrics_file(self, step: int):
        """After a resume the file is cut back to the checkpoint's step, so it always matches
        the weights on disk."""
        path = self.out / "metrics.jsonl"
        kept = []
        if path.exists() and step:
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError):
                    break                       # a line cut by a kill
        path.write_text("".join(k + "\n" for k in kept))
        return path.open("a")

    def record(self, step: int, values: dict, prefix: str) -> None:
        """One metrics.jsonl line {"step", **values}; TensorBoard scalars under prefix/ (train, eval)."""
        if not self.main:
            return
        self.metrics.write(json.dumps({"step": step, **values}) + "\n")
        self.metrics.flush()
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k.removeprefix('eval_')}", v, step)

    def flush(self) -> None:
        if self.main:
            self.writer.flush()
            self.metrics.flush()

    def close(self) -> None:
        if self.main:
            self.writer.close()
            self.metrics.close()

    def loss_curve(self, losses: list[float], eval_losses: list[list[float]]) -> None:
        """loss.png: training loss per step and, when evaluated, the held-out loss."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(losses) + 1), losses, label="train")
        if eval_losses:
            ax.plot([s for s, _ in eval_losses], [v for _, v in eval_losses], "o-", label="held-out")
            ax.legend()
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_title(f"stage {self.stage}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.out / "loss.png", dpi=100)
        plt.close(fig)
