"""Output projector: hidden states of [AUD0..7] -> the music decoder's conditioning.

(hidden + token embedding) -> Linear(D, d_model) -> nn.Transformer whose decoder reads learned
queries -> Linear(d_model, out_dim). 128 queries x 768 for MusicGen's T5 space; one query of
128 x 1024 + 8 x 768 values for AudioLDM2. Layout matches the published checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import ProjectorConfig


class OutputProjector(nn.Module):
    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        self.cfg = cfg
        self.fc = nn.Linear(cfg.in_dim, cfg.d_model)
        # Post-norm (`norm_first=False`), as published: the released weights were trained with
        # it, and a pre-norm stack with the same parameter names would load them into other math.
        self.tfm = nn.Transformer(
            d_model=cfg.d_model, nhead=cfg.n_heads, num_encoder_layers=cfg.n_encoder_layers,
            num_decoder_layers=cfg.n_decoder_layers, dim_feedforward=cfg.ff_dim, dropout=0.0,
            batch_first=True, norm_first=False)
        self.out = nn.Linear(cfg.d_model, cfg.out_dim)
        self.queries = nn.Parameter(torch.randn(1, cfg.n_queries, cfg.d_model))

    def forward(self, hidden: torch.Tensor, token_emb: torch.Tensor) -> torch.Tensor:
        """hidden, token_emb: (B, n_aud, D) -> (B, n_queries, out_dim)."""
        x = self.fc((hidden + token_emb).to(self.fc.weight.dtype))    # (B, n_aud, d_model)
        x = self.tfm(x, self.queries.expand(x.shape[0], -1, -1))      # (B, n_queries, d_model)
        return self.out(x)
