"""The text stand-ins: the tiny LLaMA as a language model on world text (captions, Alpaca Q/A,
descriptions), and MusicGen's T5 text encoder, so that captions with different attributes
condition differently."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import standins_probe as P
from . import world as W
from .standins_fit import Heads, _batches, _fit, _label_dict
from .standins_folders import _copy_files, replace_folder


# ---------------------------------------------------------------- LLaMA

def llama_paths(bundle: Path) -> tuple[Path, Path]:
    """(LLaMA folder with tokenizer.model, the model folder with params.json)."""
    from llama.tiny import LAYOUT

    root = bundle / LAYOUT["llama_dir"]
    return root, root / LAYOUT["llama_type"]


def load_llama(bundle: Path):
    """(Transformer without LoRA, tokenizer, Meta weights) through the project's loaders."""
    from llama.checkpoint import load_llama_base, load_meta_llama
    from llama.llama import Transformer
    from llama.tokenizer import Tokenizer

    root, model_dir = llama_paths(bundle)
    tok = Tokenizer(root / "tokenizer.model")
    cfg, weights = load_meta_llama(model_dir)
    from llama.config import preset

    tiny = preset("tiny").llama      # our extras (adapter layers); no LoRA: the base is trained
    cfg = dataclasses.replace(cfg, vocab_size=tok.n_base, lora_rank=0, max_seq_len=256,
                              adapter_layers_per_modality=tiny.adapter_layers_per_modality)
    model = Transformer(cfg)
    load_llama_base(model, weights)
    return model, tok, {k: weights[k] for k in weights}


def meta_state_dict(model, original: dict) -> dict[str, torch.Tensor]:
    """The trained weights under Meta's key names, base vocabulary rows only, in the original
    file's key order (rope.freqs as it was)."""
    params = dict(model.named_parameters())
    out = {}
    for key, old in original.items():
        t = old if key not in params else params[key].detach()[: old.shape[0]]
        out[key] = t.to(old.dtype).clone().contiguous()
        assert out[key].shape == old.shape, key
    return out


def pretrain_llama(bundle: Path, train_texts, eval_texts, steps: int, seed: int, batch: int = 16,
                   lr: float = 3e-3, log=print) -> dict:
    """All of the tiny LLaMA's base weights as a language model on world text; rewrites the
    Meta folder (tokenizer.model and params.json as they were)."""
    model, tok, original = load_llama(bundle)
    for name, p in model.named_parameters():     # biases and gates are ours, not Meta's: stay zero
        p.requires_grad_(name in original)
    before = P.lm_eval(model, tok, eval_texts)
    gen = torch.Generator().manual_seed(seed)
    it = _batches(len(train_texts), batch, gen)

    def loss_fn(step):
        toks, tgt = P.lm_batch(tok, [train_texts[i] for i in next(it).tolist()])
        return P.lm_loss(model, toks, tgt, tok.n_base)

    params = [p for p in model.parameters() if p.requires_grad]
    losses = _fit(params, loss_fn, steps, lr, log, "LLaMA")
    after = P.lm_eval(model, tok, eval_texts)
    root, model_dir = llama_paths(bundle)
    sd = meta_state_dict(model, original)

    def write(tmp: Path):
        shutil.copy2(root / "tokenizer.model", tmp / "tokenizer.model")
        (tmp / model_dir.name).mkdir()
        shutil.copy2(model_dir / "params.json", tmp / model_dir.name / "params.json")
        torch.save(sd, tmp / model_dir.name / "consolidated.00.pth")

    del original
    replace_folder(root, write)
    return {"eval_loss_before": round(before, 4), "eval_loss_after": round(after, 4),
            "train_loss_first": round(losses[0], 4), "train_loss_last": round(float(np.mean(losses[-20:])), 4),
            "train_texts": len(train_texts), "eval_texts": len(eval_texts)}


# ---------------------------------------------------------------- MusicGen's T5

T5_ATTRIBUTES = ("instrument", "tempo", "key", "mode", "drums")


def visible(decoder, pieces, variants) -> dict[str, torch.Tensor]:
    """{attribute: (N,) bool}: whether the caption, as truncated to the conditioning length,
    changes when the attribute does (an attribute cut off or tokenised to <unk> cannot be learned)."""
    def ids(caps):
        return decoder._tokenize(caps)["input_ids"]

    base = [W.describe(p, v) for p, v in zip(pieces, variants)]
    ref = ids(base)
    out = {}
    for a in T5_ATTRIBUTES:
        seen = torch.zeros(len(pieces), dtype=torch.bool)
        for value in P.CLASSES[a]:
            alt = ids([W.describe(p.with_(**{a: value}), v) for p, v in zip(pieces, variants)])
            n = max(alt.shape[1], ref.shape[1])
            pad = lambda t: nn.functional.pad(t, (0, n - t.shape[1]))  # noqa: E731
            seen |= (pad(alt) != pad(ref)).any(1)
        out[a] = seen
    return out


def pretrain_t5(folder: Path, train_pieces, eval_pieces, steps: int, seed: int, batch: int = 64,
                lr: float = 3e-3, log=print) -> dict:
    """MusicGen's T5 encoder classifies every visible attribute from every token's output
    (per-token heads, thrown away), so its conditionings carry the attributes; rewrites the
    MusicGen folder with save_pretrained."""
    from llama.decoders.musicgen import MusicGenDecoder

    dec = MusicGenDecoder.from_pretrained(folder)
    te = dec.model.text_encoder
    before = P.t5_cosines(dec, eval_pieces)
    rng = np.random.default_rng(seed)
    pieces = list(train_pieces) * 5
    variants = [v for v in range(5) for _ in train_pieces]
    caps = [W.describe(p, v) for p, v in zip(pieces, variants)]
    enc = dec._tokenize(caps)
    vis = visible(dec, pieces, variants)
    ys = _label_dict(pieces, T5_ATTRIBUTES)
    heads = Heads(dec.cond_dim, T5_ATTRIBUTES)
    gen = torch.Generator().manual_seed(seed)
    it = _batches(len(caps), batch, gen)
    te.requires_grad_(True)

    def loss_fn(step):
        idx = next(it)
        mask = enc["attention_mask"][idx]
        h = te(input_ids=enc["input_ids"][idx], attention_mask=mask).last_hidden_state  # (B, L, C)
        tok_w = mask.float() / mask.sum(1, keepdim=True)                                 # (B, L)
        total = h.new_zeros(())
        for a in T5_ATTRIBUTES:
            logits = heads.heads[a](h)                                                   # (B, L, K)
            y = ys[a][idx][:, None].expand(-1, h.shape[1])
            ce = nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, L)
            w = tok_w * vis[a][idx, None].float()
            total = total + (ce * w).sum() / len(idx)
        return total

    del rng
    losses = _fit([*te.parameters(), *heads.parameters()], loss_fn, steps, lr, log, "T5")
    te.requires_grad_(False)
    after_model = dec.model.eval()

    def write(tmp: Path):
        _copy_files(folder, tmp)
        after_model.save_pretrained(tmp)
        dec.processor.save_pretrained(tmp)

    replace_folder(folder, write)
    after = P.t5_cosines(MusicGenDecoder.from_pretrained(folder), eval_pieces)
    return {"before": before, "after": after, "train_loss_first": round(losses[0], 4),
            "train_loss_last": round(float(np.mean(losses[-20:])), 4),
            "visible": {a: round(float(v.float().mean()), 4) for a, v in vis.items()}}
