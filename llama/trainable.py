"""Which parameters each training stage tunes (docs/design.md, "Training stages").

1: captioning  -> adapters, prefix queries, gates, LoRA, biases, norms, [AUD] rows
2: generation  -> stage 1 + output projector
3: instructions -> LoRA, biases, norms, gates, prefix queries, output projector
Everything else (the LLaMA base weights, the published video RNN that cannot run) stays frozen.

The [AUD] rows of the embedding and of the LM head are trained without unfreezing the base
vocabulary: the whole matrix gets gradients, a hook zeroes those of the base rows, and
checkpoints store only the new rows under the virtual names in `AUD_ROWS`.
"""
from __future__ import annotations

import re

import torch.nn as nn

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

# virtual name in our checkpoints -> the full matrix whose rows past the base vocabulary it holds
AUD_ROWS = {"llm.tok_embeddings.aud_rows": "llm.tok_embeddings.weight",
            "llm.output.aud_rows": "llm.output.weight"}


def trainable_names(model: nn.Module, stage: int) -> list[str]:
    """Parameter names the stage trains, plus the virtual `AUD_ROWS` names where it trains those."""
    if stage not in STAGE_GROUPS:
        raise ValueError(f"unknown stage {stage} (1, 2 or 3)")
    groups = STAGE_GROUPS[stage]
    names = [n for n, _ in model.named_parameters() if _group(n) in groups]
    return names + (list(AUD_ROWS) if "aud_rows" in groups else [])


def _keep_only_new_rows(n_base: int):
    def hook(grad):
        grad = grad.clone()
        grad[:n_base] = 0
        return grad
    return hook


def set_trainable(model: nn.Module, stage: int) -> list[str]:
    """Freeze everything, then unfreeze the stage's parameters. Returns their names."""
    names = set(trainable_names(model, stage))
    params = dict(model.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in names)
    handles = getattr(model, "_aud_row_hooks", [])
    for h in handles:
        h.remove()
    model._aud_row_hooks = []
    for virtual, full in AUD_ROWS.items():
        if virtual in names:
            p = params[full]
            p.requires_grad_(True)
            model._aud_row_hooks.append(p.register_hook(_keep_only_new_rows(model.cfg.llama.vocab_size)))
    return sorted(names)
