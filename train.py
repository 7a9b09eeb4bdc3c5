"""Train MuMu-LLaMA, stage by stage.

  python train.py --stage 1 --data data.yaml --out runs/stage1
  python train.py --stage 2 --data data.yaml --out runs/stage2 --init-from runs/stage1/final
  python train.py --stage 3 --data data.yaml --out runs/stage3 --init-from runs/stage2/final
  python train.py ... --resume            # continue the run in --out exactly where it stopped
  python train.py ... --overwrite         # replace the earlier run in --out (only its files)
  accelerate launch --multi_gpu --num_processes 2 train.py ...      # DDP (add --cpu for gloo on CPU)

Stage 1 trains the adapters, prefix queries, gates, LoRA/biases/norms and the [AUD] rows on
captioning; stage 2 adds the output projector and the bridge loss on caption -> music; stage 3
tunes on instructions. Only trained tensors are saved (runs/<stage>/final/model.safetensors).
A new run refuses a non-empty --out; every mistake is one line `error: ...` and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from llama.errors import UserError, one_line


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are a one-line UserError, like every other user mistake."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def parse_args(argv=None):
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=[1, 2, 3], required=True)
    p.add_argument("--data", type=Path, required=True, help="data config (YAML or JSON) listing datasets per stage")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--ckpt-dir", type=Path, help="checkpoint bundle with bundle.json (default: the tiny bundle)")
    p.add_argument("--init-from", type=Path, help="trained weights of the previous stage (e.g. runs/stage1/final)")
    p.add_argument("--music-decoder", choices=["musicgen", "audioldm2"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--group-by-length", action="store_true",
                   help="batch samples of similar token count together (less padding; modalities still mix)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip, 0 = off")
    p.add_argument("--max-len", type=int, default=512, help="tokens per sample; longer samples are skipped and counted")
    p.add_argument("--bridge-scale", type=float, help="bridge-loss target scale (default: model config, 10)")
    p.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"], default="auto")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N optimizer steps (0: at the end)")
    p.add_argument("--keep", type=int, default=2, help="checkpoints to keep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out (same settings)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the earlier run's files in --out first (a folder holding other files is refused)")
    p.add_argument("--skip-nonfinite", action="store_true", help="skip (and count) batches whose loss is NaN/inf")
    p.add_argument("--cache-features", type=Path, metavar="DIR",
                   help="run the frozen encoders once over this run's media into DIR (resumes), then train from it")
    p.add_argument("--features", type=Path, metavar="DIR",
                   help="train from the feature cache DIR (read only: a missing or stale entry is an error)")
    p.add_argument("--eval-data", type=Path, help="data config of a held-out split (this stage's datasets)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="held-out loss every N optimizer steps (and at the end; needs --eval-data)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    args = p.parse_args(argv)
    check_args(args)
    return args


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_args(args) -> None:
    """Refuse, in one line, any option value that would fail (or silently misbehave) later."""
    minimum = {"batch_size": 1, "grad_accum": 1, "epochs": 1, "max_len": 1, "max_steps": 1, "keep": 1,
               "warmup_steps": 0, "save_every": 0, "eval_every": 0}
    for name, low in minimum.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"{_flag(name)} must be >= {low}, got {value}")
    for name in ("lr", "min_lr", "weight_decay", "clip", "bridge_scale"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{_flag(name)} must be a finite number >= 0, got {value}")
    if args.lr == 0 or args.min_lr > args.lr:
        raise UserError(f"need 0 <= --min-lr <= --lr and --lr > 0, got --lr {args.lr} --min-lr {args.min_lr}")
    if not args.data.is_file():
        raise UserError(f"--data {args.data}: data config not found" if not args.data.exists()
                        else f"--data {args.data}: not a file (expected a YAML or JSON data config)")
    if args.eval_data is not None and not args.eval_data.is_file():
        raise UserError(f"--eval-data {args.eval_data}: data config not found")
    if args.eval_every and args.eval_data is None:
        raise UserError("--eval-every needs --eval-data (the held-out split's data config)")
    if args.cache_features is not None and args.features is not None:
        raise UserError("give --cache-features DIR (build, then read) or --features DIR (read only), not both")
    if args.features is not None and not (args.features / "cache.json").is_file():
        raise UserError(f"--features {args.features}: no cache.json (build it with --cache-features "
                        f"{args.features} or python -m llama.feature_cache)")
    if args.ckpt_dir is not None and not args.ckpt_dir.is_dir():
        raise UserError(f"--ckpt-dir {args.ckpt_dir}: not a folder (expected a checkpoint bundle with bundle.json)")
    if args.init_from is not None:
        check_init_from(args.init_from, args.out if args.overwrite else None)


def check_init_from(path: Path, cleared: Path | None) -> None:
    """--init-from must be the folder a training run wrote (final/ or a checkpoint): safetensors only."""
    hint = "pass the final/ folder of the previous stage's run (e.g. runs/stage1/final)"
    if not path.exists():
        raise UserError(f"--init-from {path}: not found; {hint}")
    if not path.is_dir():
        raise UserError(f"--init-from {path}: is a file; {hint}")
    if not (path / "model.safetensors").is_file():
        if (path / "final" / "model.safetensors").is_file():
            raise UserError(f"--init-from {path}: is a run folder; pass {path / 'final'}")
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        found = f" ({pickles[0]} is not read: only safetensors written by train.py are)" if pickles else ""
        raise UserError(f"--init-from {path}: not a trained checkpoint, no model.safetensors{found}; {hint}")
    if cleared is not None and path.resolve().is_relative_to(cleared.resolve()):
        raise UserError(f"--init-from {path} is inside --out {cleared}, which --overwrite would delete")


def main(argv=None) -> int:
    """0 when the run finished; 2 with one line `error: ...` for a user mistake. Anything else
    is a bug and keeps its traceback."""
    try:
        args = parse_args(argv)
        import transformers

        from llama.trainer import TrainConfig, Trainer

        transformers.logging.set_verbosity_error()
        trainer = Trainer(TrainConfig(**vars(args)))
        trainer.setup()
        trainer.train()
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
