"""Train MuMu-LLaMA, stage by stage.

  python train.py --stage 1 --data data.yaml --out runs/stage1
  python train.py --stage 2 --data data.yaml --out runs/stage2 --init-from runs/stage1/final
  python train.py --stage 3 --data data.yaml --out runs/stage3 --init-from runs/stage2/final
  python train.py ... --resume            # continue the run in --out exactly where it stopped
  accelerate launch --multi_gpu --num_processes 2 train.py ...      # DDP (add --cpu for gloo on CPU)

Stage 1 trains the adapters, prefix queries, gates, LoRA/biases/norms and the [AUD] rows on
captioning; stage 2 adds the output projector and the bridge loss on caption -> music; stage 3
tunes on instructions. Only trained tensors are saved (runs/<stage>/final/model.safetensors).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=[1, 2, 3], required=True)
    p.add_argument("--data", type=Path, required=True, help="data config (YAML or JSON) listing datasets per stage")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--ckpt-dir", type=Path, help="checkpoint bundle with bundle.json (default: the tiny bundle)")
    p.add_argument("--init-from", type=Path, help="trained weights of the previous stage (e.g. runs/stage1/final)")
    p.add_argument("--music-decoder", choices=["musicgen", "audioldm2"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
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
    p.add_argument("--resume", action="store_true")
    p.add_argument("--skip-nonfinite", action="store_true", help="skip (and count) batches whose loss is NaN/inf")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    args = p.parse_args(argv)
    for name in ("batch_size", "grad_accum", "epochs", "max_len"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr <= 0 or args.min_lr < 0 or args.min_lr > args.lr:
        p.error("need 0 <= --min-lr <= --lr and --lr > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import transformers

    from llama.checkpoint import CheckpointError
    from llama.data.formats import DataError
    from llama.trainer import TrainConfig, Trainer, TrainingError

    transformers.logging.set_verbosity_error()
    cfg = TrainConfig(**{k: v for k, v in vars(args).items()})
    try:
        trainer = Trainer(cfg)
        trainer.setup()
        trainer.train()
    except (DataError, CheckpointError, TrainingError, FileNotFoundError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
