"""Which parameters each training stage tunes (DESIGN.md, "Training stages").

1: captioning  -> adapters, prefix queries, gates, LoRA, biases, norms
2: generation  -> stage 1 + output projector
3: instructions -> LoRA, biases, norms, gates, prefix queries, output projector
Everything else (the LLaMA base weights, the published video RNN that cannot run) stays frozen.
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


STAGE_GROUPS = {1: {"llm", "adapters"}, 2: {"llm", "adapters", "projector"}, 3: {"llm", "projector"}}


def trainable_names(model: nn.Module, stage: int) -> list[str]:
    if stage not in STAGE_GROUPS:
        raise ValueError(f"unknown stage {stage} (1, 2 or 3)")
    groups = STAGE_GROUPS[stage]
    return [n for n, _ in model.named_parameters() if _group(n) in groups]


def set_trainable(model: nn.Module, stage: int) -> list[str]:
    """Freeze everything, then unfreeze the stage's parameters. Returns their names."""
    names = set(trainable_names(model, stage))
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return sorted(names)
