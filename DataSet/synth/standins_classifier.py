"""An audio classifier stand-in trained on the world: which of its 4 instruments a clip plays.

`make synth-eval`'s KL metric compares the label distributions that an audio classifier gives
generated and reference clips. With the tiny RANDOM AST of `llama.metrics.tiny_models` those
distributions carry no signal, so the KL says nothing. This trains the same tiny AST (built by
`write_ast`, so the config and feature extractor are the ones the metric code already loads) with
labels = `world.INSTRUMENTS` on the world's train clips, so that KL measures whether generated
music sounds like the instrument of its reference. Crops are as long as the metric's windows
(the feature extractor's max_length, 10 ms frames); each crop also appears degraded (noise,
low-pass: `augment.py`), so that the classifier hears the instrument through a decoder's noise.
Same seed -> same weight bytes.

    python -m DataSet.synth.standins_classifier OUT_DIR --world WORLD_DIR [--seed 0] [--steps N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import world as W
from llama.metrics.audio import even_windows

from .augment import with_degraded, with_noise
from .standins_decoder import world_pieces


def _clips(split_dir: Path, rate: int) -> tuple[list[np.ndarray], np.ndarray]:
    """A split's original clips at `rate` and their instrument indices."""
    from llama.media import load_audio

    names, pieces = world_pieces(split_dir)
    waves = [load_audio(Path(split_dir) / "audio" / f"{n}.wav", rate) for n in names]
    return waves, np.array([W.INSTRUMENTS.index(p.instrument) for p in pieces])


def _crops(waves, window: int, per_clip: int, g: torch.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """`per_clip` random crops per clip, 0.6 to 1 window long (the metric splits clips evenly)."""
    out, owner = [], []
    for i, w in enumerate(waves):
        for _ in range(per_clip):
            size = min(len(w), int(window * (0.6 + 0.4 * torch.rand((), generator=g).item())))
            start = int(torch.randint(0, len(w) - size + 1, (), generator=g))
            out.append(w[start:start + size])
            owner.append(i)
    return out, np.array(owner)


def train_world_classifier(out_dir, world_dir, seed: int = 0, steps: int = 300, batch: int = 32,
                           lr: float = 2e-3, per_clip: int = 8, log=print) -> dict:
    """Train the tiny AST on `world_dir/train`, save it to `out_dir`, score it on `world_dir/heldout`."""
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    from llama.metrics.tiny_models import write_ast

    t0, threads = time.time(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            write_ast(tmp, seed=seed, labels=W.INSTRUMENTS)
            model = ASTForAudioClassification.from_pretrained(tmp)
            fe = ASTFeatureExtractor.from_pretrained(tmp)
        rate, window = fe.sampling_rate, int(fe.max_length * fe.sampling_rate / 100)
        g = torch.Generator().manual_seed(seed)
        waves, labels = _clips(Path(world_dir) / "train", rate)
        crops, owner = _crops(waves, window, per_clip, g)
        crops, owner = with_degraded(crops, list(owner), rate, seed=seed)
        owner = np.array(owner)
        x = fe(crops, sampling_rate=rate, return_tensors="pt")["input_values"]
        y = torch.as_tensor(labels[owner])
        log(f"classifier: {len(waves)} clips, {len(crops)} crops of <= {window} samples at {rate} Hz")
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
        model.train()
        losses = []
        for step in range(steps):
            idx = torch.randint(0, len(y), (batch,), generator=g)
            loss = torch.nn.functional.cross_entropy(model(input_values=x[idx]).logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % 50 == 0 or step == steps - 1:
                log(f"  step {step}: loss {np.mean(losses[-50:]):.3f}")
        model.eval()
        acc = _heldout_accuracy(model, fe, Path(world_dir) / "heldout", rate, window)
        noisy = _heldout_accuracy(model, fe, Path(world_dir) / "heldout", rate, window, snr_db=30.0)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        fe.save_pretrained(out_dir)
    finally:
        torch.set_num_threads(threads)
    report = {"out_dir": str(out_dir), "seed": seed, "steps": steps, "train_clips": len(waves),
              "loss_first": losses[0] if losses else None, "loss_last": float(np.mean(losses[-20:])) if losses else None,
              "heldout_accuracy": acc, "heldout_accuracy_noise_30db": noisy, "chance": 1 / len(W.INSTRUMENTS), "seconds": round(time.time() - t0, 1)}
    log(f"classifier: held-out accuracy {acc} ({noisy} with noise 30 dB under the music), {report['seconds']} s")
    return report


@torch.no_grad()
def _heldout_accuracy(model, fe, split_dir: Path, rate: int, window: int,
                      snr_db: float | None = None) -> float | None:
    """Clip accuracy with the metric's windows, softmax averaged per clip (with white noise at
    `snr_db` when given); None without a split."""
    if not (split_dir / "world.json").is_file():
        return None
    waves, labels = _clips(split_dir, rate)
    if snr_db is not None:
        waves = with_noise(waves, rate, snr_db)
    right = 0
    for w, lab in zip(waves, labels):
        x = fe(even_windows(w, window), sampling_rate=rate, return_tensors="pt")["input_values"]
        right += int(torch.softmax(model(input_values=x).logits, -1).mean(0).argmax()) == int(lab)
    return round(right / max(1, len(waves)), 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m DataSet.synth.standins_classifier",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--world", type=Path, required=True, help="the world folder (with train/ and heldout/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args(argv)
    report = train_world_classifier(args.out_dir, args.world, seed=args.seed, steps=args.steps,
                                    log=lambda s: print(s, file=sys.stderr))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
