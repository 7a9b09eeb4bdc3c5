"""LLaMA folders in Hugging Face format (`Llama-2-7b-hf`), read directly, and the choice
between that format and Meta's.

An HF folder holds config.json, `model.safetensors` or `model-0000N-of-0000M.safetensors` +
`model.safetensors.index.json`, and usually tokenizer.model. We map its names to Meta's and
undo the per-head permutation of wq/wk that `convert_llama_weights_to_hf.py` applies (HF
rotates half-split pairs, Meta and we rotate interleaved pairs), so the user needs no
conversion step. Shards are memory-mapped and read one tensor at a time (see `mapped_weights`).
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from .checkpoint import CheckpointError, load_meta_llama
from .config import LLaMAConfig
from .mapped_weights import MappedWeights, WeightSource

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"

# HF name -> Meta name: whole-model tensors, then those of layer i (model.layers.i.<name>).
_TOP = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_PER_LAYER = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")     # a buffer old conversions saved; we compute it


def meta_name(hf_name: str) -> str | None:
    m = _LAYER.match(hf_name)
    if m is None:
        return _TOP.get(hf_name)
    return f"layers.{m[1]}.{_PER_LAYER[m[2]]}" if m[2] in _PER_LAYER else None


def unpermuted_view(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo HF's `w.view(n_heads, d // n_heads // 2, 2, dim).transpose(1, 2).reshape(d, dim)`:
    (d, dim) -> a (n_heads, hd/2, 2, dim) view whose row-major order is Meta's rows (each head's
    [first halves | second halves] back to interleaved pairs)."""
    d, dim = w.shape
    return w.view(n_heads, 2, d // n_heads // 2, dim).transpose(1, 2)


def unpermute_into(tensors: list[torch.Tensor], out: torch.Tensor, n_heads: int) -> None:
    view = unpermuted_view(tensors[0], n_heads)
    out.view(view.shape).copy_(view)


def llama_format(folder: str | Path) -> str | None:
    """'meta' (params.json), 'hf' (config.json + safetensors weights) or None."""
    folder = Path(folder)
    if (folder / "params.json").is_file():
        return "meta"
    if (folder / "config.json").is_file() and ((folder / INDEX).is_file() or (folder / SINGLE).is_file()):
        return "hf"
    return None


def hf_llama_config(path: Path) -> LLaMAConfig:
    """config.json -> LLaMAConfig; what our model cannot compute is refused."""
    try:
        c = json.loads(path.read_text())
        if c.get("model_type", "llama") != "llama":
            raise CheckpointError(f"{path}: model_type {c['model_type']!r}, expected 'llama'")
        heads, dim = c["num_attention_heads"], c["hidden_size"]
        kv = c.get("num_key_value_heads") or heads
        rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
        problems = [
            kv != heads and f"grouped-query attention ({kv} key/value heads of {heads}) is not supported",
            rope.get("rope_type", rope.get("type", "default")) != "default"
            and f"rope scaling {rope.get('rope_type', rope.get('type'))!r} is not supported",
            c.get("hidden_act", "silu") != "silu" and f"activation {c['hidden_act']!r} is not supported",
            c.get("head_dim", dim // heads) != dim // heads and f"head_dim {c['head_dim']} != hidden_size / heads",
            (c.get("attention_bias") or c.get("mlp_bias")) and "biased projections are not supported",
        ]
        if any(problems):
            raise CheckpointError(f"{path}: {next(p for p in problems if p)}")
        return LLaMAConfig(
            dim=dim, n_layers=c["num_hidden_layers"], n_heads=heads, vocab_size=c["vocab_size"],
            ffn_dim_override=c["intermediate_size"], norm_eps=c.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
            max_seq_len=c.get("max_position_embeddings", 4096))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a LLaMA config.json ({type(e).__name__}: {e})") from None


def _shard_files(folder: Path) -> dict[str, Path]:
    """HF tensor name -> shard file, from the index (every shard it lists must exist)."""
    index = folder / INDEX
    if not index.is_file():
        return {}
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: not a safetensors index ({e})") from None
    for name in sorted(set(weight_map.values())):
        if not (folder / name).is_file():
            raise CheckpointError(f"{index}: lists shard {name}, which is missing")
    return {k: folder / v for k, v in weight_map.items()}


def load_hf_llama(folder: str | Path) -> tuple[LLaMAConfig, MappedWeights]:
    """An HF-format LLaMA folder -> (config, weights in Meta's names and layout, memory-mapped)."""
    folder = Path(folder)
    cfg = hf_llama_config(folder / "config.json")
    conf = json.loads((folder / "config.json").read_text())
    files = _shard_files(folder) or {None: folder / SINGLE}
    tensors: dict[str, tuple[Path, torch.Tensor]] = {}
    for file in sorted(set(files.values())):
        try:
            with safe_open(str(file), framework="pt") as f:       # mapped, nothing read yet
                for name in f.keys():
                    tensors[name] = (file, f.get_tensor(name))
        except Exception as e:          # safetensors raises its own SafetensorError type
            raise CheckpointError(f"{file}: cannot be read as safetensors ({e})") from None
    listed = [k for k in files if k is not None and k not in tensors]
    if listed:
        raise CheckpointError(f"{files[listed[0]]}: lacks {listed[0]} (listed in {INDEX})")
    if "lm_head.weight" not in tensors and conf.get("tie_word_embeddings") and "model.embed_tokens.weight" in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    entries = {}
    for name, (file, t) in tensors.items():
        if _IGNORED.search(name):
            continue
        ours = meta_name(name)
        if ours is None:
            raise CheckpointError(f"{file}: unexpected tensor {name} for a LLaMA model")
        permuted = ours.endswith(("attention.wq.weight", "attention.wk.weight"))
        fill = functools.partial(unpermute_into, n_heads=cfg.n_heads) if permuted else None
        entries[ours] = WeightSource(file, [t], tuple(t.shape), fill)
    return cfg, MappedWeights(folder, entries)


def load_llama_weights(folder: str | Path) -> tuple[LLaMAConfig, MappedWeights]:
    """A LLaMA folder in Meta's format or HF's -> (config, weights in Meta's names)."""
    kind = llama_format(folder)
    if kind == "meta":
        return load_meta_llama(folder)
    if kind == "hf":
        return load_hf_llama(folder)
    raise CheckpointError(f"{folder}: not a LLaMA folder (neither Meta's params.json + consolidated.*.pth "
                          f"nor Hugging Face's config.json + {SINGLE} or {INDEX})")
