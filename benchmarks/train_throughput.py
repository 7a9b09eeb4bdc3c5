"""Training throughput on the synthetic world: live encoders vs the feature cache, batch 1 vs 8.

  python benchmarks/train_throughput.py --world outputs/synth/world --steps 6

Runs train.py in-process (tiny bundle, CPU, one thread) for stage 1 and stage 3 and reports
samples/s over the optimizer steps after the first (warm-up: the first batches load encoders and
fill the in-run memo). The cache is built once beforehand (its build time is reported apart).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(stage: int, data: Path, out: Path, batch: int, steps: int, cache: Path | None) -> float:
    import torch
    import train
    from llama import trainer as T

    torch.set_num_threads(1)
    stamps = []
    real = T.RunLog.record

    def timed(self, step, values, prefix):           # a time stamp per optimizer step
        if prefix == "train":
            stamps.append(time.perf_counter())
        return real(self, step, values, prefix)
    T.RunLog.record = timed
    try:
        args = ["--stage", stage, "--data", data, "--out", out, "--batch-size", batch, "--max-steps", steps,
                "--cpu", "--mixed-precision", "no"] + (["--features", cache] if cache else [])
        assert train.main([str(a) for a in args]) == 0
    finally:
        T.RunLog.record = real
    return batch * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=Path, default=ROOT / "outputs" / "synth" / "world")
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()
    data = args.world / "train" / "data.yaml"
    tmp = Path(tempfile.mkdtemp(prefix="train_throughput_"))
    cache = tmp / "cache"
    from llama.feature_cache import main as build_cache
    t0 = time.perf_counter()
    assert build_cache(["--data", str(data), "--out", str(cache), "--stages", "1", "3"]) == 0
    build_s = time.perf_counter() - t0
    rows = []
    for stage in (1, 3):
        for batch in (1, 8):
            live = run(stage, data, tmp / f"live{stage}{batch}", batch, args.steps, None)
            cached = run(stage, data, tmp / f"cache{stage}{batch}", batch, args.steps, cache)
            rows.append({"stage": stage, "batch": batch, "live": live, "cached": cached})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\ncache build: {build_s:.1f} s ({sum(1 for _ in cache.rglob('shard_*'))} shards)")
    print("| stage | batch | live samples/s | cached samples/s | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['batch']} | {r['live']:.2f} | {r['cached']:.2f} | {r['cached'] / r['live']:.1f}x |")


if __name__ == "__main__":
    main()
