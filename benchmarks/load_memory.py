"""Peak memory of loading the base LLaMA for inference, per on-disk format and dtype.

Writes a random LLaMA of a mid-size shape (bf16 on disk) twice into a temp folder, in Meta's
format (params.json + consolidated.00.pth) and in Hugging Face's (config.json + safetensors
shards + index), with a 32000-piece tokenizer; then, for each format and --dtype, loads it
with `MuMuPipeline.load` (the tiny preset's adapters, 3 gated layers and projector, sized to
this LLM: its 16 layers are fewer than the 7b preset's 18 gated ones; no trained weights) in a fresh subprocess and reads that process's RSS:

  peak   = VmHWM after the load - VmRSS just before it (the peak is reset with
           /proc/self/clear_refs first, so imports and the tokenizer do not count)
  ratio  = peak / bytes of the LLaMA weight files on disk
  floor  = bytes the finished model holds (parameters + buffers) / the same file bytes

RSS counts anonymous memory and the pages of memory-mapped files that were read, so reading
weights through a mapping counts; "of which file pages" is the RssFile increase left once
loaded. Each child first loads a tiny model of the same format (see `child`).
"legacy" replays the loader before this change (random-init fp32 model, copy, merge, cast).

  .venv/bin/python benchmarks/load_memory.py [--dim 2048 --layers 16 --heads 16 --vocab 32000]
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


# ---------------------------------------------------------------- writing the folders
def write_tokenizer(path: Path, vocab: int) -> None:
    """The tiny bundle's BPE, padded with placeholder pieces to `vocab` (training one that
    large needs a large corpus)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    from llama.tiny import write_tokenizer as write_small

    proto = pb.ModelProto()
    proto.ParseFromString(write_small(path, 512).read_bytes())
    for i in range(vocab - len(proto.pieces)):
        proto.pieces.add(piece=f"<pad{i}>", score=0.0, type=pb.ModelProto.SentencePiece.USER_DEFINED)
    path.write_bytes(proto.SerializeToString())


def write_folders(root: Path, dim: int, layers: int, heads: int, vocab: int) -> dict[str, int]:
    """root/LLaMA/{tokenizer.model, meta/, hf/}; returns the weight bytes on disk per format."""
    import torch
    from safetensors.torch import save_file

    from llama.config import LLaMAConfig

    cfg = LLaMAConfig(dim=dim, n_layers=layers, n_heads=heads, vocab_size=vocab)
    D, F, V = cfg.dim, cfg.ffn_dim, cfg.vocab_size
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) / shape[-1] ** 0.5).to(torch.bfloat16)

    meta = {"tok_embeddings.weight": rand(V, D), "norm.weight": torch.ones(D, dtype=torch.bfloat16),
            "output.weight": rand(V, D)}
    hf_names = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
    per_layer = {"attention.wq": ("self_attn.q_proj", D, D), "attention.wk": ("self_attn.k_proj", D, D),
                 "attention.wv": ("self_attn.v_proj", D, D), "attention.wo": ("self_attn.o_proj", D, D),
                 "feed_forward.w1": ("mlp.gate_proj", F, D), "feed_forward.w3": ("mlp.up_proj", F, D),
                 "feed_forward.w2": ("mlp.down_proj", D, F)}
    for i in range(cfg.n_layers):
        for ours, (theirs, rows, cols) in per_layer.items():
            meta[f"layers.{i}.{ours}.weight"] = rand(rows, cols)
            hf_names[f"layers.{i}.{ours}.weight"] = f"model.layers.{i}.{theirs}.weight"
        for ours, theirs in (("attention_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")):
            meta[f"layers.{i}.{ours}.weight"] = torch.ones(D, dtype=torch.bfloat16)
            hf_names[f"layers.{i}.{ours}.weight"] = f"model.layers.{i}.{theirs}.weight"
    llama = root / "LLaMA"
    write_tokenizer(llama / "tokenizer.model", V)
    (llama / "meta").mkdir()
    (llama / "meta" / "params.json").write_text(json.dumps(
        {"dim": D, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "multiple_of": cfg.multiple_of,
         "norm_eps": cfg.norm_eps, "vocab_size": -1}))
    torch.save(meta, llama / "meta" / "consolidated.00.pth")
    (llama / "hf").mkdir()
    keys, n_shards, weight_map = list(meta), 2, {}
    for s in range(n_shards):                       # two shards of about equal size + the index
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {hf_names[k]: meta[k] for k in keys[s * len(keys) // n_shards:(s + 1) * len(keys) // n_shards]}
        save_file(part, str(llama / "hf" / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (llama / "hf" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (llama / "hf" / "config.json").write_text(json.dumps(
        {"model_type": "llama", "hidden_size": D, "num_hidden_layers": cfg.n_layers,
         "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_heads, "intermediate_size": F,
         "vocab_size": V, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
         "max_position_embeddings": cfg.max_seq_len, "hidden_act": "silu", "torch_dtype": "bfloat16"}))
    return {"meta": (llama / "meta" / "consolidated.00.pth").stat().st_size,
            "hf": sum(p.stat().st_size for p in (llama / "hf").glob("*.safetensors"))}


# ---------------------------------------------------------------- one load (in a fresh process)
def child(llama_dir: Path, fmt: str, dtype_name: str) -> dict:
    import torch

    from llama.pipeline import BundlePaths, MuMuPipeline

    torch.set_num_threads(1)
    dtype = getattr(torch, dtype_name)
    kind = "meta" if fmt == "legacy" else fmt
    load = legacy_load if fmt == "legacy" else (lambda p, d: MuMuPipeline.load(p, dtype=d).model)
    # Warm-up on a tiny model of the same format: the code pages of torch and the allocator's
    # arenas that any load touches are then in place and not counted below.
    load(BundlePaths(llama_dir=llama_dir.parent / "warm" / "LLaMA", llama_type=kind, preset="tiny"), dtype)
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    paths = BundlePaths(llama_dir=llama_dir, llama_type=kind, preset="tiny")
    try:
        Path("/proc/self/clear_refs").write_text("5")       # reset VmHWM to the current RSS
    except OSError:
        pass
    before, file_before, t0 = status("VmRSS"), status("RssFile"), time.perf_counter()
    model = load(paths, dtype)
    seconds = time.perf_counter() - t0
    storages = {}
    for t in list(model.parameters()) + list(model.buffers()):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return {"peak": status("VmHWM") - before, "after": status("VmRSS") - before,
            "file_after": status("RssFile") - file_before, "model": sum(storages.values()), "seconds": seconds}


def legacy_load(paths, dtype):
    """The loading lines of `MuMuPipeline.load` before the meta-device loader (fdfc9ce^)."""
    from llama.checkpoint import load_llama_base, load_meta_llama
    from llama.mumu_llama import MuMuLLaMA
    from llama.pipeline import build_config
    from llama.tokenizer import Tokenizer

    tokenizer = Tokenizer(paths.llama_dir / "tokenizer.model")
    llama_cfg, weights = load_meta_llama(paths.llama_dir / paths.llama_type)
    cfg = build_config(paths, llama_cfg, tokenizer.n_base)
    model = MuMuLLaMA(cfg)
    load_llama_base(model.llm, dict(weights))         # a plain dict: no pages given back
    del weights
    model.eval().requires_grad_(False)
    model.llm.merge_lora()
    return model.to(dtype=dtype)


# ---------------------------------------------------------------- driver
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--formats", default="meta,hf")
    ap.add_argument("--legacy", action="store_true", help="also replay the old loader (needs ~3.5x RAM)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="write the folders here (once) and keep them, for reruns")
    ap.add_argument("--child", nargs=3, metavar=("LLAMA_DIR", "FORMAT", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(Path(a.child[0]), a.child[1], a.child[2])))
        return 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="load_memory-") as tmp:
        tmp = a.keep or Path(tmp)
        t0 = time.perf_counter()
        if not (tmp / "sizes.json").is_file():
            (tmp / "sizes.json").write_text(json.dumps(write_folders(tmp, a.dim, a.layers, a.heads, a.vocab)))
            write_folders(tmp / "warm", 64, 3, 4, a.vocab)
        disk = json.loads((tmp / "sizes.json").read_text())
        print(f"wrote dim {a.dim}, {a.layers} layers, vocab {a.vocab}, bf16: Meta {disk['meta'] / 1e9:.3f} GB, "
              f"HF {disk['hf'] / 1e9:.3f} GB ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        runs = [(f, d) for d in a.dtypes.split(",") for f in a.formats.split(",")]
        runs += [("legacy", d) for d in a.dtypes.split(",")] if a.legacy else []
        for fmt, dtype in runs:
            out = subprocess.run([sys.executable, __file__, "--child", str(tmp / "LLaMA"), fmt, dtype],
                                 capture_output=True, text=True, env=env, cwd=ROOT)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            r = {"format": fmt, "dtype": dtype, "disk": disk["meta" if fmt == "legacy" else fmt],
                 **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(r)
            print(f"{fmt:6} {dtype:8} done", file=sys.stderr)
    gb = 1e9
    print("| format | --dtype | weights on disk | peak RSS increase | ratio | model holds (floor) "
          "| RSS increase after | of which file pages | load s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['format']} | {r['dtype']} | {r['disk'] / gb:.2f} GB | {r['peak'] / gb:.2f} GB "
              f"| **{r['peak'] / r['disk']:.2f}** | {r['model'] / gb:.2f} GB ({r['model'] / r['disk']:.2f}) "
              f"| {r['after'] / gb:.2f} GB | {r['file_after'] / gb:.2f} GB | {r['seconds']:.1f} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
