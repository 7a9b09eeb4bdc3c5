"""Throughput of batched inference, and batch-1 decode against the memory floor, eager vs compiled.

    python benchmarks/batch_inference.py [--sizes 1 4 8 16] [--tiny-requests 32] [--dim 512 --layers 20
                                          --prompt 64 --new 64] [--layout onednn] [--rounds 3]
                                          [--no-compile] [--json out.json]

1. The batch CLI (`inference.main --input --batch-size B`) on the tiny bundle (the trained
   default): 32 requests of the synthetic world's held-out split, each with its own media (music
   questions and descriptions, image and video descriptions, text questions, music from a
   caption, a picture or a video; `--requests examples` for the earlier mix of four example
   files); the pipeline is loaded once beforehand (loading is not throughput). Requests/s and
   generated tokens/s.
2. The dim-512 / 20-layer model of benchmarks/decode.py (random weights, LoRA merged and packed
   as inference does): `generate()` as the batch CLI calls it (per-row generators, per-row
   budgets) over the same max(sizes) prompts of mixed lengths in batches of B, greedy, no EOS:
   total new tokens/s per B (B=1 answers them one at a time).
3. Batch-1 decode tokens/s of that model, eager and `--compile`, against the floor of decode.py
   (bytes a step must read / measured matrix-vector bandwidth). Decode time = generate(N new)
   - generate(1 new), so the prefill is excluded the same way for both.

1 and 2 run in rounds, every batch size once per round, so that a machine whose speed drifts
(shared cores, neighbours) slows all batch sizes of a round alike: each B reports its best round
and the median over rounds of its ratio to B=1 within the round.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import decode as decode_bench  # noqa: E402

import inference  # noqa: E402
from llama.compiled_decode import CompiledDecode  # noqa: E402

NO_EOS = -1


# ------------------------------------------------------------------------------ 1. the CLI
def example_requests(work: Path, n: int) -> list[dict]:
    """The earlier mix (`--requests examples`): the four example media files over and over, every
    fourth request 0.5 s of music, 32 new tokens at most."""
    from llama.examples import write_examples
    media = work / "media"
    write_examples(media)
    kinds = [{}, {"audio": str(media / "melody.wav")}, {"image": str(media / "image.png")},
             {"video": str(media / "video.mp4")}]
    prompts = ["Describe it.", "What instruments can you hear in this?", "Write a calm piano piece.",
               "Describe the image in detail."]
    return [{"id": f"r{i}", "prompt": prompts[i % 4] + " again" * (i % 3), "max_new_tokens": 32, "seed": i,
             **kinds[(i // 4 + i) % 4], **({"music": True, "duration": 0.5} if i % 4 == 0 else {})}
            for i in range(n)]


# what the trained default was taught to answer, one kind per dataset of the held-out world
WORLD_KINDS = {
    "musicqa": lambda r, at: {"prompt": r["instruction"], "audio": at(r["file"])},
    "mucaps": lambda r, at: {"prompt": "Describe the music.", "audio": at(r["file"])},
    "coco": lambda r, at: {"prompt": "Describe the image.", "image": at(r["file"])},
    "muvideo_caps": lambda r, at: {"prompt": "Describe the video.", "video": at(r["file"])},
    "alpaca": lambda r, at: {"prompt": r["instruction"]},
    "mucaps_generate": lambda r, at: {"prompt": f"Generate a music: {r['caption']}", "music": True},
    "muimage": lambda r, at: {"prompt": r["instruction"], "image": at(r["input_file"]), "music": True},
    "muvideo": lambda r, at: {"prompt": r["instruction"], "video": at(r["input_file"]), "music": True},
}


def world_requests(split: Path, n: int, duration: float) -> list[dict]:
    """n requests from the synthetic world's held-out split, the kinds of WORLD_KINDS in turn,
    each with its own media file (the i-th record of its kind); music lasts `duration` s, and so
    does music the model makes unasked."""
    records = json.loads((split / "world.json").read_text())["records"]
    by_kind = {k: [r for r in records if r["dataset"] == k] for k in WORLD_KINDS}
    out = []
    for i in range(n):
        kind = list(WORLD_KINDS)[i % len(WORLD_KINDS)]
        pool = by_kind[kind]
        rec = pool[(i // len(WORLD_KINDS)) % len(pool)]
        out.append({"id": f"{kind}-{i}", "seed": i, "duration": duration,
                    **WORLD_KINDS[kind](rec, lambda rel: str(split / rel))})
    return out


def world_split(work: Path) -> Path:
    """The held-out split of `make synth`'s world, or a small world built here (seed 0)."""
    split = ROOT / "outputs" / "synth" / "world" / "heldout"
    if (split / "world.json").exists():
        return split
    from DataSet.synth.build import build_world
    build_world(work / "world", seed=0, size=100, progress=False)
    return work / "world" / "heldout"


def bench_cli(sizes: list[int], n: int, work: Path, layout: str = "columns", kind: str = "world",
              rounds: int = 3, duration: float = 1.0) -> dict:
    from llama.tiny import ensure_tiny_bundle
    bundle = ROOT / "ckpts" / "tiny"
    ensure_tiny_bundle(bundle)
    requests = world_requests(world_split(work), n, duration) if kind == "world" else example_requests(work, n)
    reqs = work / "requests.jsonl"
    reqs.write_text("".join(json.dumps(r) + "\n" for r in requests))
    real_load, pipes = inference.load_pipeline, {}

    def load(args):                                # one pipeline per weight layout, loaded once
        layout = args.weight_layout
        if layout not in pipes:
            pipes[layout] = real_load(args)
        return pipes[layout]

    inference.load_pipeline = load

    def run(B: int) -> tuple[float, list[dict], int]:
        out = work / f"out-{B}-{time.monotonic_ns()}"
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):           # the answers themselves
            rc = inference.main(["--ckpt-dir", str(bundle), "--input", str(reqs), "--output-dir",
                                 str(out), "--batch-size", str(B), "--weight-layout", layout])
        seconds = time.perf_counter() - t0
        return seconds, [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()], rc

    rows, answers = {}, {}
    try:
        run(sizes[0])                                   # warms up (lazy encoders, decoder)
        for _ in range(rounds):                         # every B once per round: drift hits all alike
            for B in sizes:
                seconds, recs, rc = run(B)
                tokens = sum(r["timings"]["new_tokens"] for r in recs if r["error"] is None)
                row = rows.setdefault(B, {"rc": rc, "rounds_s": [], "tokens": tokens, "layout": layout})
                row["rounds_s"].append(seconds)
                answers.setdefault(B, [(r["id"], r["answer"]) for r in recs])
                assert answers[B] == [(r["id"], r["answer"]) for r in recs]
    finally:
        inference.load_pipeline = real_load
    summarise(rows, len(recs))
    same = all(a == answers[sizes[0]] for a in answers.values())
    return {"requests": n, "kind": kind, "music_duration_s": duration if kind == "world" else 0.5,
            "by_batch": rows, "answers_equal_across_batch_sizes": same,
            "music_answers": sum(1 for r in recs if r.get("wav")), "failed": sum(1 for r in recs if r["error"])}


def summarise(rows: dict, n_requests: int) -> None:
    """Per B: the best round (seconds, requests/s, tokens/s) and, against B=min, the ratio of the
    best rounds and the median of the per-round ratios (each from minutes-apart runs of one round)."""
    base = rows[min(k for k in rows if isinstance(k, int))]
    for row in rows.values():
        row["seconds"] = min(row["rounds_s"])
        row["requests_s"] = n_requests / row["seconds"]
        row["tokens_s"] = row["tokens"] / row["seconds"]
        ratios = sorted((row["tokens"] / t) / (base["tokens"] / t1) for t, t1 in zip(row["rounds_s"], base["rounds_s"]))
        row["x_best"] = row["tokens_s"] / base["tokens"] * base["seconds"]
        row["x_median_of_rounds"] = ratios[len(ratios) // 2]


# ------------------------------------------------------------------------------ 2. dim 512
def build(args, layout: str = "columns"):
    model = decode_bench.build_model(args)
    model.llm.merge_lora(layout)                      # as MuMuPipeline.load does for fp32
    return model


class Models:
    """One model per weight layout, built on first use (same seed, same weights): batch 1 on
    columns (the default), larger batches on `--layout`."""

    def __init__(self, args):
        self.args, self.built = args, {}

    def for_batch(self, B: int):
        layout = "columns" if B == 1 else self.args.layout
        if layout not in self.built:
            self.built[layout] = build(self.args, layout)
        return self.built[layout]


def mixed_prompts(B: int, base: int, vocab: int) -> list[list[int]]:
    full = decode_bench.prompt_ids(base + 16, vocab)
    return [full[:base + (7 * b) % 17] for b in range(B)]


def budgets(n: int, new: int, lengths: str) -> list[int]:
    """New tokens per request: all `new`, or (mixed) spread from new/4 to 7/4 new, mean `new`,
    as answers of different lengths are."""
    if lengths == "equal" or n == 1:
        return [new] * n
    return [max(1, round(new * (0.25 + 1.5 * ((5 * i) % n) / (n - 1)))) for i in range(n)]


@torch.inference_mode()
def bench_generate(models: Models, sizes: list[int], args) -> dict:
    """The same max(sizes) requests at every batch size: one `generate(slots=B)` as the batch job
    runs them (continuous batching: a finished answer's row takes the next request), and, for
    B > 1, fixed batches of B as before continuous batching (each runs until its longest answer
    ends). Rows are keyed "B" and "B fixed"; ratios are against B=1."""
    n = max(sizes)
    rows, tokens = {}, {}
    for B in sizes:                                     # builds each layout's model, warms it up
        model = models.for_batch(B)
        model.generate(mixed_prompts(B, args.prompt, model.cfg.llama.vocab_size), {}, max_new_tokens=4,
                       eos_id=NO_EOS)
    ways = [(B, fixed) for B in sizes for fixed in ([False, True] if B > 1 and args.fixed else [False])]
    for _ in range(args.rounds):                        # every way once per round: drift hits all alike
        for B, fixed in ways:
            model = models.for_batch(B)
            prompts = mixed_prompts(n, args.prompt, model.cfg.llama.vocab_size)
            new = budgets(n, args.new, args.lengths)
            gens = [torch.Generator().manual_seed(i) for i in range(n)]
            chunks = range(0, n, B) if fixed else [0]
            size = B if fixed else n
            t0 = time.perf_counter()
            out = [t for i in chunks for t in model.generate(
                prompts[i:i + size], {}, max_new_tokens=new[i:i + size], eos_id=NO_EOS,
                generator=gens[i:i + size], slots=None if fixed else B).tokens]
            seconds = time.perf_counter() - t0
            key = f"{B} fixed" if fixed else B
            row = rows.setdefault(key, {"rounds_s": [], "tokens": sum(new),
                                        "layout": "columns" if B == 1 else args.layout})
            row["rounds_s"].append(seconds)
            tokens.setdefault(key, out)
    summarise(rows, n)
    same = all(t == tokens[sizes[0]] for t in tokens.values())
    return {"requests": n, "lengths": args.lengths, "new_tokens": budgets(n, args.new, args.lengths),
            "by_batch": rows, "batched_tokens_equal_one_by_one": same}


def bench_floor(model, args) -> dict:
    """Batch-1 decode against the floor, in rounds: each round probes the bandwidth and measures
    eager and compiled decode right after, so each round's percentages compare rates of the same
    minute; the median over rounds is reported beside the best."""
    cfg = model.cfg.llama
    prompt = decode_bench.prompt_ids(args.prompt, cfg.vocab_size)
    nbytes = decode_bench.decode_bytes_per_token(model, context=args.prompt + args.new / 2)["merged_B"]
    res = {"bytes_per_token": nbytes, "rounds": []}
    step = None
    if args.compile:
        step = CompiledDecode.for_model(model)
        t0 = time.perf_counter()
        decode_bench.decode_rate(model, [prompt], 8, 1, step)                        # compiles here
        res["compile_s"] = time.perf_counter() - t0
    eager_tokens = None
    for _ in range(args.rounds):
        bandwidth = max(decode_bench.matvec_bandwidth((cfg.ffn_dim, cfg.dim), args.bw_mb, 7, True),
                        decode_bench.matvec_bandwidth((cfg.ffn_dim, cfg.dim), args.bw_mb, 7),
                        decode_bench.matvec_bandwidth((4096, 4096), args.bw_mb, 7))
        floor = bandwidth / nbytes
        eager, eager_tokens = decode_bench.decode_rate(model, [prompt], args.new, args.repeats)
        rnd = {"bandwidth_GBps": bandwidth / 1e9, "floor_tok_s": floor, "eager_tok_s": eager,
               "eager_pct_of_floor": 100 * eager / floor}
        if step is not None:
            compiled, tokens = decode_bench.decode_rate(model, [prompt], args.new, args.repeats, step)
            rnd.update(compiled_tok_s=compiled, compiled_pct_of_floor=100 * compiled / floor,
                       compiled_tokens_equal_eager=tokens == eager_tokens)
        res["rounds"].append(rnd)
    for key in ("eager_pct_of_floor", "compiled_pct_of_floor"):
        values = sorted(r[key] for r in res["rounds"] if key in r)
        if values:
            res[key + "_median"], res[key + "_best"] = values[len(values) // 2], values[-1]
    if step is not None:
        res["compiled_tokens_equal_eager"] = all(r["compiled_tokens_equal_eager"] for r in res["rounds"])
        res["compiles"] = step.compiles
        # the cache the compiled step reads whole (its length is what the call needs, not a bucket)
        res["compiled_cache_len"] = step.cache_len(args.prompt + args.new + cfg.n_aud_tokens)
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--tiny-requests", type=int, default=32)
    p.add_argument("--requests", choices=["world", "examples"], default="world",
                   help="tiny CLI requests: the synthetic world's held-out split (make synth's, or a small one "
                        "built here), or the example media files over and over")
    p.add_argument("--music-duration", type=float, default=1.0, help="seconds of each world music answer")
    p.add_argument("--rounds", type=int, default=3,
                   help="CLI and generate(): rounds of one run per batch size; best and median ratio reported")
    decode_bench.add_shape_args(p, prompt=64, new=64)
    p.add_argument("--repeats", type=int, default=2, help="decode-rate runs for the floor (best is kept)")
    p.add_argument("--bw-mb", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--skip", nargs="*", default=[], choices=["cli", "generate", "floor"])
    p.add_argument("--lengths", choices=["equal", "mixed"], default="equal",
                   help="generate(): new tokens per request all `--new`, or spread over new/4..7/4 new")
    p.add_argument("--fixed", action="store_true",
                   help="generate(): also fixed batches of B (as before continuous batching), beside each B")
    p.add_argument("--layout", choices=["columns", "rows", "onednn"], default="columns",
                   help="LLM weight layout for batches > 1 (inference.py --weight-layout; batch 1 on columns)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                       "loadavg_1m_start": os.getloadavg()[0]}, "args": vars(args) | {"json": str(args.json)}}
    if "cli" not in args.skip:
        with tempfile.TemporaryDirectory() as work:
            res["cli_tiny"] = bench_cli(args.sizes, args.tiny_requests, Path(work), args.layout, args.requests,
                                        args.rounds, args.music_duration)
        report("batch CLI, tiny bundle", res["cli_tiny"]["by_batch"])
    models = Models(args)
    if "generate" not in args.skip:
        res["generate_dim512"] = bench_generate(models, args.sizes, args)
        report(f"generate(), dim {args.dim} x {args.layers} layers", res["generate_dim512"]["by_batch"])
    if "floor" not in args.skip:
        res["floor"] = bench_floor(models.for_batch(1), args)
        floor = res["floor"]
        print("\nbatch-1 decode, % of the floor per round (eager / compiled):",
              ", ".join(f"{r['eager_pct_of_floor']:.1f} / {r.get('compiled_pct_of_floor', float('nan')):.1f}"
                        for r in floor["rounds"]), flush=True)
        print(json.dumps({k: v for k, v in floor.items() if k != "rounds"}, indent=1), flush=True)
    res["machine"]["loadavg_1m_end"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return res


def report(title: str, rows: dict) -> None:
    print(f"\n{title}")
    for B, r in rows.items():
        print(f"  B={str(B):<8s} {r['requests_s']:8.2f} req/s {r['tokens_s']:9.1f} tok/s  x{r['x_best']:.2f} best, "
              f"x{r['x_median_of_rounds']:.2f} median of rounds", flush=True)


if __name__ == "__main__":
    main()
