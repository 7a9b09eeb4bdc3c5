"""python -m DataSet.synth OUT_DIR [--seed 0] [--size 200] [--force]

Writes the synthetic music world into OUT_DIR/train and OUT_DIR/heldout, each with its own
data.yaml and world.json (see build.py). Exit status 2 with a one-line message on a user mistake.
"""
from __future__ import annotations

import argparse
import sys
import time

from llama.errors import UserError, one_line

from .build import build_world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DataSet.synth",
                                     description="Write the synthetic music world in every training format.")
    parser.add_argument("out_dir", help="folder to write train/ and heldout/ into")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=200,
                        help="pieces in the train split; heldout gets size // 5, at least 1 (default 200)")
    parser.add_argument("--force", action="store_true",
                        help="write into a folder holding other files, replace a world of another seed/size")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        results = build_world(args.out_dir, seed=args.seed, size=args.size, force=args.force,
                              progress=not args.quiet)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    if not any(r.written for r in results):
        print(f"{args.out_dir}: world of seed {args.seed}, size {args.size} is already complete; "
              f"nothing to do")
        return 0
    for r in results:
        state = "written" if r.written else "already complete"
        print(f"{r.folder}: {r.pieces} pieces, {r.files} files ({state}); "
              f"config {r.folder / 'data.yaml'}, truth {r.folder / 'world.json'}")
    print(f"done in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
