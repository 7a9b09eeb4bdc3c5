"""Which parameters each training stage tunes (docs/design.md, "Training stages").

1: captioning  -> adapters, prefix queries, gates, LoRA, biases, norms, [AUD] rows
2: generation  -> stage 1 + output projector
3: instructions -> LoRA, biases, norms, gates, prefix queries, output projector
Everything else (the LLaMA base weights, the published video RNN that cannot run) stays frozen.

The [AUD] rows are their own parameters while a stage trains them (torchtune's FusionEmbedding
idea): `AudRowsEmbedding` / `AudRowsHead` replace `llm.tok_embeddings` / `llm.output`, keep the
full (V + n_aud, D) matrix as a frozen `weight` and add a trained `aud_rows` (n_aud, D). So the
optimizer, the gradients and a DDP/FSDP all-reduce see 2 x n_aud x D numbers, not two whole
matrices (at 7B: 65 k instead of 262 M). The parameter names `llm.tok_embeddings.aud_rows` and
`llm.output.aud_rows` are the names our checkpoints have always used for those rows; a published
checkpoint still loads into the full matrices through the key table, and `fold_aud_rows` writes
the trained rows back into the matrices (inference never sees the wrappers).
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

_LLM_TUNED = re.compile(r"^llm\.(layers\.\d+\.(attention|feed_forward)\.w\w\.(lora_[ab]\.weight|bias)"
                        r"|layers\.\d+\.attention\.gate|layers\.\d+\.(attention|ffn)_norm\.weight|norm\.weight)$")


def _group(name: str) -> str | None:
    if _LLM_TUNED.match(name):
        return "llm"
    if name.startswith("adapters.") and ".legacy_" not in name:
        return "adapters"
    if name.startswith("prefix_query."):
        return "llm"
    if name.startswith("output_projector."):
        return "projector"
    return None


STAGE_GROUPS = {1: {"llm", "adapters", "aud_rows"}, 2: {"llm", "adapters", "projector", "aud_rows"},
                3: {"llm", "projector"}}

# trained [AUD] rows (parameter name while wrapped, and the name in our checkpoints) -> the full
# matrix whose rows past the base vocabulary they are
AUD_ROWS = {"llm.tok_embeddings.aud_rows": "llm.tok_embeddings.weight",
            "llm.output.aud_rows": "llm.output.weight"}


class AudRowsEmbedding(nn.Module):
    """Token embedding = frozen full matrix for ids < n_base, trained `aud_rows` for [AUD] ids."""

    def __init__(self, base: nn.Embedding, n_base: int):
        super().__init__()
        self.n_base = n_base
        self.weight = base.weight                                      # (V + n_aud, D), frozen
        self.aud_rows = nn.Parameter(base.weight.detach()[n_base:].clone())   # (n_aud, D)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:          # (B, S) -> (B, S, D)
        is_aud = tokens >= self.n_base
        aud = F.embedding((tokens - self.n_base).clamp(min=0), self.aud_rows)
        return torch.where(is_aud[..., None], aud, F.embedding(tokens, self.weight))


class AudRowsHead(nn.Module):
    """LM head = frozen base rows, then the trained `aud_rows`: logits (..., V + n_aud)."""

    def __init__(self, base: nn.Linear, n_base: int):
        super().__init__()
        self.n_base = n_base
        self.weight = base.weight                                      # (V + n_aud, D), frozen
        self.aud_rows = nn.Parameter(base.weight.detach()[n_base:].clone())   # (n_aud, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.linear(x, self.weight[:self.n_base]), F.linear(x, self.aud_rows)], dim=-1)


def unfold_aud_rows(model: nn.Module) -> None:
    """Give the [AUD] rows their own parameters (idempotent)."""
    llm, n = model.llm, model.cfg.llama.vocab_size
    if not isinstance(llm.tok_embeddings, AudRowsEmbedding):
        llm.tok_embeddings = AudRowsEmbedding(llm.tok_embeddings, n)
    if not isinstance(llm.output, AudRowsHead):
        llm.output = AudRowsHead(llm.output, n)


def fold_aud_rows(model: nn.Module) -> None:
    """Write the trained rows back into the full matrices and restore plain modules (idempotent)."""
    llm = model.llm
    for attr, plain in (("tok_embeddings", nn.Embedding), ("output", nn.Linear)):
        wrapped = getattr(llm, attr)
        if not isinstance(wrapped, (AudRowsEmbedding, AudRowsHead)):
            continue
        with torch.no_grad():
            wrapped.weight[wrapped.n_base:] = wrapped.aud_rows.to(wrapped.weight.dtype)
        V, D = wrapped.weight.shape
        module = nn.Embedding(V, D, device="meta") if plain is nn.Embedding else nn.Linear(D, V, bias=False, device="meta")
        module.weight = wrapped.weight
        setattr(llm, attr, module)


def trainable_names(model: nn.Module, stage: int) -> list[str]:
    """Parameter names the stage trains, `AUD_ROWS` names included where it trains those."""
    if stage not in STAGE_GROUPS:
        raise ValueError(f"unknown stage {stage} (1, 2 or 3)")
    groups = STAGE_GROUPS[stage]
    names = [n for n, _ in model.named_parameters() if _group(n) in groups]
    return names + (list(AUD_ROWS) if "aud_rows" in groups else [])


def set_trainable(model: nn.Module, stage: int) -> list[str]:
    """Freeze everything, then unfreeze the stage's parameters (giving the [AUD] rows their own
    parameters when it trains them). Returns their names, sorted."""
    names = set(trainable_names(model, stage))
    if AUD_ROWS.keys() & names:
        unfold_aud_rows(model)
    else:
        fold_aud_rows(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return sorted(names)


def stage_budget(model: nn.Module, stage: int) -> dict:
    """Trained parameters and the fp32 bytes of their gradients + AdamW moments, now and as
    before the [AUD] rows had their own parameters (both full matrices trained)."""
    set_trainable(model, stage)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    L = model.cfg.llama
    before = n + (2 * (L.full_vocab_size - L.n_aud_tokens) * L.dim if "aud_rows" in STAGE_GROUPS[stage] else 0)
    # per trained fp32 parameter: 4 bytes gradient + 8 bytes AdamW exp_avg/exp_avg_sq
    return {"stage": stage, "params": n, "params_before": before,
            "grad_adam_bytes": 12 * n, "grad_adam_bytes_before": 12 * before}


def main(argv=None) -> None:
    """python -m llama.trainable [--preset 7b]: the per-stage budget, from shapes only (meta)."""
    import argparse

    from .config import preset
    from .mumu_llama import MuMuLLaMA

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--preset", default="7b")
    args = p.parse_args(argv)
    with torch.device("meta"):
        model = MuMuLLaMA(preset(args.preset))
    print("| stage | trained params before | after | grad + AdamW bytes before | after |")
    print("|---|---|---|---|---|")
    for stage in (1, 2, 3):
        b = stage_budget(model, stage)
        print(f"| {stage} | {b['params_before']:,} | {b['params']:,} | "
              f"{b['grad_adam_bytes_before'] / 2**30:.2f} GiB | {b['grad_adam_bytes'] / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
