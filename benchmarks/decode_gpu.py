"""Decode on a GPU against the HBM floor: the 7B bf16 figure of issue 11, prepared for a lent GPU.

    python benchmarks/decode_gpu.py [--device cuda] [--dtype bfloat16] [--batch 1] [--prompt 128]
        [--new 128] [--dim 4096 --layers 32 --heads 32 --vocab 32000] [--no-compile] [--json out.json]

Builds the 7b preset's MuMuLLaMA (LLaMA-2 7B shape, LoRA rank 16, gated adapters) directly on the
device in `--dtype`, random weights with non-zero LoRA, biases and gates, LoRA merged as inference
does. Then, for `--batch` copies of one prompt, greedy, no EOS:

- decode rate = (N - 1) / (time of generate(N new) - time of generate(1 new)), best of
  `--repeats`, eager and with `--compile`'s step (llama.compiled_decode);
- floor = bytes a step reads (every layer matrix, the LM head, small tensors, the KV cache at
  the mean context) / bandwidth, the bandwidth being the best of matrix-vector products over
  `--bw-gb` of matrices of the layer shapes, each read once per pass (the way decoding reads
  them), synchronised around each pass.

Runs on CPU too with a small shape (a smoke test: `--device cpu --dtype float32 --dim 256
--layers 4 --heads 4`). Nothing in the project depends on it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import decode as decode_bench  # noqa: E402

from llama.compiled_decode import CompiledDecode  # noqa: E402
from llama.config import LLaMAConfig  # noqa: E402
from llama.mumu_llama import MuMuLLaMA  # noqa: E402



def build(args, device: torch.device, dtype: torch.dtype) -> MuMuLLaMA:
    """decode.py's model, made on the device in dtype (no CPU copy of 7B weights), LoRA merged."""
    model = decode_bench.build_model(args, device, dtype)
    model.llm.merge_lora()
    return model.requires_grad_(False)


@torch.inference_mode()
def bandwidth(args, device, dtype) -> float:
    """Bytes/s of matrix-vector products over `--bw-gb` of (ffn, dim) and (dim, dim) matrices."""
    ffn = LLaMAConfig(dim=args.dim, n_layers=1, n_heads=args.heads).ffn_dim
    best = 0.0
    for shape in ((ffn, args.dim), (args.dim, args.dim)):
        size = shape[0] * shape[1] * torch.finfo(dtype).bits // 8
        mats = [torch.randn(shape, device=device, dtype=dtype) for _ in range(max(1, int(args.bw_gb * 2**30) // size))]
        x = torch.randn(1, shape[1], device=device, dtype=dtype)
        for _ in range(args.bw_passes):
            decode_bench.sync(device)
            t0 = time.perf_counter()
            for w in mats:
                F.linear(x, w)
            decode_bench.sync(device)
            best = max(best, len(mats) * size / (time.perf_counter() - t0))
        del mats
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--batch", type=int, default=1)
    decode_bench.add_shape_args(p, dim=4096, layers=32, heads=32, prompt=128, new=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bw-gb", type=float, default=4.0, help="size of the bandwidth probe set (GiB)")
    p.add_argument("--bw-passes", type=int, default=5)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "args": vars(args) | {"json": str(args.json)}}
    t0 = time.perf_counter()
    model = build(args, device, dtype)
    res["build_s"] = time.perf_counter() - t0
    prompts = [decode_bench.prompt_ids(args.prompt, model.cfg.llama.vocab_size)] * args.batch
    res["eager_tok_s"], eager_tokens = decode_bench.decode_rate(model, prompts, args.new, args.repeats, device=device)
    if args.compile:
        step = CompiledDecode.for_model(model)
        t0 = time.perf_counter()
        decode_bench.decode_rate(model, prompts, 8, 1, step, device)                # compiles here
        res["compile_s"] = time.perf_counter() - t0
        res["compiled_tok_s"], tokens = decode_bench.decode_rate(model, prompts, args.new, args.repeats, step, device)
        res["compiled_tokens_equal_eager"] = tokens == eager_tokens
        res["compiles"] = step.compiles
    # decode.py counts fp32 bytes; every tensor a step reads here is in `dtype`
    scale = (torch.finfo(dtype).bits // 8) / 4
    per_row = decode_bench.decode_bytes_per_token(model, context=args.prompt + args.new / 2)
    kv = per_row["kv_cache_B"] * scale
    nbytes = per_row["merged_B"] * scale + kv * (args.batch - 1)       # weights once, KV per row
    res["bandwidth_GBps"] = bandwidth(args, device, dtype) / 1e9
    res["bytes_per_step"] = nbytes
    res["floor_steps_s"] = res["bandwidth_GBps"] * 1e9 / nbytes
    for kind in ("eager", "compiled"):
        if f"{kind}_tok_s" in res:
            res[f"{kind}_pct_of_floor"] = 100 * res[f"{kind}_tok_s"] / res["floor_steps_s"]
            res[f"{kind}_total_tok_s"] = res[f"{kind}_tok_s"] * args.batch
    print(json.dumps(res, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
