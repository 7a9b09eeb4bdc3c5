"""Decode speed of MuMu-LLaMA on this machine, against the memory-bandwidth floor.

    python benchmarks/decode.py [--dim 512 --layers 20 --heads 8 --vocab 32000
                                 --prompt 128 --new 256 --repeats 3 --json out.json]

One run reports, for batch 1, fp32, greedy decoding with no EOS:
  * KV-cached tokens/s through `MuMuLLaMA.generate` with LoRA merged (as inference does),
    prefill and decode separately;
  * the same with LoRA unmerged (what folding buys);
  * full recompute (`use_cache=False`, quadratic) over `--recompute-new` tokens;
  * the floor: bytes a decode step must read (every layer matrix, biases and norms, the LM head,
    one embedding row, the adapter residuals, the KV cache at the mean context) divided by the
    matrix-vector bandwidth measured here, now; and achieved / floor.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llama.config import LLaMAConfig, preset  # noqa: E402
from llama.llama import KVCache, LoRALinear  # noqa: E402
from llama.mumu_llama import MuMuLLaMA  # noqa: E402

NO_EOS = -1          # never sampled: every run decodes its full budget


# ------------------------------------------------------------------------------ model
def build_model(args, device="cpu", dtype: torch.dtype | None = None) -> MuMuLLaMA:
    """The 7b preset with the LLaMA shape swapped for the benchmark's, random non-trivial weights,
    made on `device` in `dtype` (default: torch's), so a 7B model never passes through the CPU."""
    llama = LLaMAConfig(dim=args.dim, n_layers=args.layers, n_heads=args.heads, vocab_size=args.vocab,
                        max_seq_len=max(4096, args.prompt + args.new + 16), lora_rank=16,
                        adapter_layers_per_modality=min(6, args.layers // 3))   # 6 (published) from 18 layers
    cfg = preset("7b")
    cfg = dataclasses.replace(
        cfg, llama=llama,
        audio_adapter=dataclasses.replace(cfg.audio_adapter, out_dim=args.dim),
        image_adapter=dataclasses.replace(cfg.image_adapter, out_dim=args.dim),
        video_adapter=dataclasses.replace(cfg.video_adapter, out_dim=args.dim),
        projector=dataclasses.replace(cfg.projector, in_dim=args.dim))
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype or default)
    try:
        with torch.device(device):
            model = MuMuLLaMA(cfg).eval()
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():                      # LoRA, biases and gates all non-zero
        for name, p in model.llm.named_parameters():
            if "lora_b" in name or name.endswith(".bias"):
                p.normal_(std=0.02)
            elif name.endswith(".gate"):
                p.uniform_(-1, 1)
    return model


def random_feats(cfg, seed: int = 0) -> dict[str, torch.Tensor]:
    """Encoder outputs of the 7b shape: MERT (B, 25, T, 1024), ViT (B, 197, 768), ViViT (B, 3137, 768)."""
    g = torch.Generator().manual_seed(seed)
    a, i, v = cfg.audio_adapter, cfg.image_adapter, cfg.video_adapter
    return {"audio": torch.randn(1, a.n_pool, 10, a.in_dim, generator=g),
            "image": torch.randn(1, i.n_pool, i.in_dim, generator=g),
            "video": torch.randn(1, v.n_pool, v.in_dim, generator=g)}


def prompt_ids(n: int, vocab: int) -> list[int]:
    g = torch.Generator().manual_seed(1)
    return [1] + torch.randint(3, vocab, (n - 1,), generator=g).tolist()


# ------------------------------------------------------------------------------ timing
def timed_generate(model: MuMuLLaMA, prompt, feats, new: int, use_cache: bool = True) -> dict:
    """One `generate` call; a forward hook on the LLM stamps the end of every forward pass."""
    stamps: list[float] = []
    hook = model.llm.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))
    try:
        t0 = time.perf_counter()
        out = model.generate([prompt], feats, max_new_tokens=new, eos_id=NO_EOS, use_cache=use_cache)
        t1 = time.perf_counter()
    finally:
        hook.remove()
    tokens = out.tokens[0]
    assert len(tokens) == new, (len(tokens), new)
    steps = [b - a for a, b in zip(stamps, stamps[1:])]          # one per decode forward
    prefill_s, decode_s = stamps[0] - t0, t1 - stamps[0]
    return {"tokens": tokens, "total_s": t1 - t0, "prefill_s": prefill_s, "decode_s": decode_s,
            "forwards": len(stamps), "decode_tok_s": (new - 1) / decode_s if new > 1 else float("nan"),
            "median_step_tok_s": 1.0 / statistics.median(steps) if steps else float("nan"),
            "total_tok_s": new / (t1 - t0)}


def best_of(model, prompt, feats, new: int, repeats: int) -> dict:
    """Repeat and keep the run with the fastest decode phase (the machine is shared and noisy)."""
    runs = [timed_generate(model, prompt, feats, new) for _ in range(repeats)]
    best = max(runs, key=lambda r: r["decode_tok_s"])
    best = dict(best, all_decode_tok_s=[round(r["decode_tok_s"], 2) for r in runs],
                median_decode_tok_s=statistics.median(r["decode_tok_s"] for r in runs))
    return best


@torch.inference_mode()
def profile_decode(model: MuMuLLaMA, prompt, feats, new: int) -> dict:
    """Where a cached decode step's time goes (torch.profiler self time per step): matrix-vector
    products, attention over the cache, and every other op (norms, rope, cache writes, views,
    adds; the profiler's own cost lands mostly here). Steps run the LLM as `generate` does."""
    from torch.profiler import ProfilerActivity, profile
    llm = model.llm
    adapter_res = llm.adapter_residuals(model.prefix_inputs(1, feats))
    cache = KVCache.allocate(model.cfg.llama, 1, len(prompt) + new, "cpu", torch.float32)
    llm(torch.tensor([prompt]), adapter_res, cache, logits_for="last")
    token = torch.tensor([[prompt[-1]]])
    groups = {"matmul (addmm/mm)": [0.0, 0], "attention (sdpa)": [0.0, 0], "other ops": [0.0, 0]}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(new):
            llm(token, adapter_res, cache, logits_for="last")
    for e in prof.key_averages():
        g = ("matmul (addmm/mm)" if e.key in ("aten::addmm", "aten::mm") else
             "attention (sdpa)" if e.key.startswith("aten::_scaled_dot_product") else "other ops")
        groups[g][0] += e.self_cpu_time_total / 1e3 / new
        groups[g][1] += e.count / new
    return {g: {"ms_per_step": ms, "aten_calls_per_step": n} for g, (ms, n) in groups.items()}


# ------------------------------------------------------------------------------ floor
@torch.inference_mode()
def sync(device) -> None:
    """Wait for a GPU's queued work before reading the clock (nothing to wait for on a CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def decode_rate(model: MuMuLLaMA, prompts: list[list[int]], new: int, repeats: int, step=None,
                device="cpu") -> tuple[float, list[list[int]]]:
    """Decode tokens/s per row, prefill excluded (a run of `new` tokens minus a run of 1), best
    of `repeats`; and the tokens of the last run. `step`: a decode step (llama.compiled_decode)."""
    def once(n):
        sync(device)
        t0 = time.perf_counter()
        out = model.generate(prompts, {}, max_new_tokens=n, eos_id=-1, decode_step=step)
        sync(device)
        return time.perf_counter() - t0, out.tokens
    rates, tokens = [], None
    for _ in range(repeats):
        t1, _ = once(1)
        tn, tokens = once(new)
        rates.append((new - 1) / (tn - t1))
    return max(rates), tokens


def matvec_bandwidth(shape: tuple[int, int], total_mb: int, passes: int, column_major: bool = False) -> float:
    """Bytes/s of F.linear(x, W), x (1, in), over a set of fp32 (out, in) matrices totalling `total_mb` MB.

    The set is far larger than the last-level cache, so every pass streams it from DRAM, as a
    decode step streams the model's weights. `column_major` stores each W with strides (1, out)
    (as `llama.llama.pack_` does). Best pass wins.
    """
    rows, cols = shape
    n = max(1, (total_mb << 20) // (rows * cols * 4))
    mats = [torch.randn(cols, rows).t() if column_major else torch.randn(rows, cols) for _ in range(n)]
    x = torch.randn(1, cols)
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for w in mats:
            F.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return n * rows * cols * 4 / best


def decode_bytes_per_token(model: MuMuLLaMA, context: float) -> dict:
    """What one B=1 decode step reads, by the merged model (no LoRA factors) and by the unmerged one."""
    llm, cfg = model.llm, model.cfg.llama
    dense = lora = small = 0
    for m in llm.layers.modules():
        if isinstance(m, LoRALinear):
            dense += m.weight.numel()
            small += m.bias.numel() if m.bias is not None else 0
            if m.lora_a is not None:
                lora += m.lora_a.weight.numel() + m.lora_b.weight.numel()
    small += sum(l.attention_norm.weight.numel() + l.ffn_norm.weight.numel() for l in llm.layers)
    small += llm.norm.weight.numel() + cfg.dim                      # final norm, one embedding row
    small += cfg.n_adapter_layers * cfg.dim                         # precomputed adapter residuals
    head = llm.output.weight.numel()
    kv = 2 * cfg.n_layers * cfg.dim * context                       # K and V, all heads
    merged = 4 * (dense + head + small + kv)
    return {"layer_matrices_B": 4 * dense, "lm_head_B": 4 * head, "small_B": 4 * small,
            "kv_cache_B": 4 * kv, "lora_factors_B": 4 * lora,
            "merged_B": merged, "unmerged_B": merged + 4 * lora}


# ------------------------------------------------------------------------------ main
def add_shape_args(p: argparse.ArgumentParser, dim: int = 512, layers: int = 20, heads: int = 8,
                   prompt: int = 128, new: int = 256) -> None:
    """The model shape and run length options that `build_model` reads (shared by the benchmarks)."""
    p.add_argument("--dim", type=int, default=dim)
    p.add_argument("--layers", type=int, default=layers)
    p.add_argument("--heads", type=int, default=heads)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--prompt", type=int, default=prompt)
    p.add_argument("--new", type=int, default=new)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_args(p, prompt=128, new=256)
    p.add_argument("--recompute-new", type=int, default=32,
                   help="new tokens for the (quadratic) full-recompute run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bw-mb", type=int, default=512, help="size of the bandwidth probe set (MB)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--profile", action="store_true",
                   help="also break a cached decode step down by op kind (torch.profiler)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args)
    cfg = model.cfg.llama
    feats = random_feats(model.cfg)
    prompt = prompt_ids(args.prompt, cfg.vocab_size)
    print(f"model: dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, ffn {cfg.ffn_dim}, "
          f"vocab {cfg.full_vocab_size}, LoRA r{cfg.lora_rank}, {cfg.n_adapter_layers} adapter layers; "
          f"batch 1 fp32, prompt {args.prompt} + {args.new} new, threads {torch.get_num_threads()}",
          flush=True)

    timed_generate(model, prompt, feats, 8)                          # warm-up
    unmerged = best_of(model, prompt, feats, args.new, args.repeats)
    model.llm.merge_lora()
    timed_generate(model, prompt, feats, 8)
    cached = best_of(model, prompt, feats, args.new, args.repeats)
    rnew = min(args.recompute_new, args.new)
    full = timed_generate(model, prompt, feats, rnew, use_cache=False)
    breakdown = profile_decode(model, prompt, feats, 64) if args.profile else None

    probes = {  # (out, in) shapes; the floor takes the best, i.e. the strictest
        f"{cfg.ffn_dim}x{cfg.dim} row-major": matvec_bandwidth((cfg.ffn_dim, cfg.dim), args.bw_mb, 7),
        f"{cfg.ffn_dim}x{cfg.dim} column-major": matvec_bandwidth((cfg.ffn_dim, cfg.dim), args.bw_mb, 7, True),
        f"{cfg.dim}x{cfg.dim} row-major": matvec_bandwidth((cfg.dim, cfg.dim), args.bw_mb, 7),
        "4096x4096 row-major": matvec_bandwidth((4096, 4096), args.bw_mb, 7),
    }
    bandwidth = max(probes.values())
    nbytes = decode_bytes_per_token(model, context=args.prompt + args.new / 2)
    floor = bandwidth / nbytes["merged_B"]
    floor_unmerged = bandwidth / nbytes["unmerged_B"]

    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "loadavg_1m": os.getloadavg()[0]},
        "config": {"dim": cfg.dim, "layers": cfg.n_layers, "heads": cfg.n_heads, "ffn": cfg.ffn_dim,
                   "vocab": cfg.full_vocab_size, "lora_rank": cfg.lora_rank, "prompt": args.prompt,
                   "new": args.new, "recompute_new": rnew, "repeats": args.repeats},
        "bandwidth_GBps": {**{k: v / 1e9 for k, v in probes.items()}, "used": bandwidth / 1e9},
        "bytes_per_token": nbytes,
        "floor_tok_s": floor,
        "cached_merged": _summary(cached),
        "cached_unmerged": _summary(unmerged),
        "full_recompute": _summary(full),
        "pct_of_floor": 100 * cached["decode_tok_s"] / floor,
        "pct_of_floor_median_step": 100 * cached["median_step_tok_s"] / floor,
        "unmerged_pct_of_its_floor": 100 * unmerged["decode_tok_s"] / floor_unmerged,
        "recompute_matches_cached": full["tokens"] == cached["tokens"][:rnew],
        "merged_matches_unmerged": cached["tokens"] == unmerged["tokens"],
        "profile_per_decode_step": breakdown,
    }
    print_table(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return res


def _summary(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "tokens"}


def print_table(res: dict) -> None:
    c, u, f = res["cached_merged"], res["cached_unmerged"], res["full_recompute"]
    bw, nb = res["bandwidth_GBps"], res["bytes_per_token"]
    rows = [
        ("KV cache, LoRA merged: decode", f"{c['decode_tok_s']:8.1f} tok/s",
         f"best of {len(c['all_decode_tok_s'])}: {c['all_decode_tok_s']}; median step {c['median_step_tok_s']:.1f}"),
        ("KV cache, LoRA merged: prefill", f"{res['config']['prompt'] / c['prefill_s']:8.1f} tok/s",
         f"{1e3 * c['prefill_s']:.0f} ms for {res['config']['prompt']} tokens (incl. adapters)"),
        ("KV cache, LoRA unmerged: decode", f"{u['decode_tok_s']:8.1f} tok/s",
         f"best of {len(u['all_decode_tok_s'])}: {u['all_decode_tok_s']}"),
        ("full recompute (no cache)", f"{f['total_tok_s']:8.2f} tok/s",
         f"{res['config']['recompute_new']} new tokens, prefill included"),
        ("memory floor (merged)", f"{res['floor_tok_s']:8.1f} tok/s",
         f"{nb['merged_B'] / 1e6:.1f} MB/token at {bw['used']:.1f} GB/s"),
        ("cached decode / floor", f"{res['pct_of_floor']:8.1f} %",
         f"median step: {res['pct_of_floor_median_step']:.1f} %; target >= 80 %"),
    ]
    print()
    for name, val, note in rows:
        print(f"  {name:34s} {val:>16s}   {note}")
    print("\n  matrix-vector bandwidth (F.linear, x (1, in), fp32, best of 7): " +
          ", ".join(f"{k} {v:.1f}" for k, v in bw.items() if k != "used") + " GB/s")
    print(f"  bytes/token: layers {nb['layer_matrices_B'] / 1e6:.1f} MB, head {nb['lm_head_B'] / 1e6:.1f} MB, "
          f"KV {nb['kv_cache_B'] / 1e6:.1f} MB, small {nb['small_B'] / 1e6:.2f} MB, "
          f"LoRA factors (unmerged only) {nb['lora_factors_B'] / 1e6:.1f} MB")
    m = res["machine"]
    print(f"  machine: {m['cores']} cores, torch threads {m['torch_threads']}, load {m['loadavg_1m']:.2f}; "
          f"recompute == cached: {res['recompute_matches_cached']}, "
          f"merged == unmerged tokens: {res['merged_matches_unmerged']}")
    if res["profile_per_decode_step"]:
        print("  profile of a cached decode step (self time): " + ", ".join(
            f"{g} {v['ms_per_step']:.2f} ms / {v['aten_calls_per_step']:.0f} calls"
            for g, v in res["profile_per_decode_step"].items()))


if __name__ == "__main__":
    main()
