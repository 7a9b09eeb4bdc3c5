"""Modality adapters: a frozen encoder's output -> one vector in the LLM's width.

One class serves music, image and video; the pooling is chosen by `AdapterConfig.pooling`
(see its docstring). After pooling: Linear to D, then residual SwiGLU blocks
`x + W2(silu(W1(norm(x))) * W3(norm(x)))` with RMSNorm and no biases.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import AdapterConfig
from .llama import RMSNorm


class AttentionPool(nn.Module):
    """Softmax-weighted mean over time with a learned scoring vector."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # x: (B, T, W)
        weights = torch.softmax(self.score(x), dim=1)                # (B, T, 1)
        return (weights * x).sum(1)                                  # (B, W)


class ResidualSwiGLU(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.norm = RMSNorm(dim, eps)
        self.w1 = nn.Linear(dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim, bias=False)
        self.w3 = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        return x + self.w2(F.silu(self.w1(n)) * self.w3(n))


class ModalityAdapter(nn.Module):
    """Encoder features -> (B, D).

    Inputs: "mean_conv"/"conv_rnn": (B, n_pool layers, T, W); "conv": (B, n_pool tokens, W).

    The published MuMu-LLaMA video adapter also carries an RNN (1024 -> 1024) that cannot take
    ViViT's 768-wide features, so its video path crashed. We keep those weights loadable
    (`legacy_rnn`, `legacy_attention`, present when pooling is "conv" and rnn_size is set) but
    pool video with the Conv1d alone, which is what could ever run.
    """

    def __init__(self, cfg: AdapterConfig):
        super().__init__()
        self.cfg = cfg
        self.pool = nn.Conv1d(cfg.n_pool, 1, kernel_size=1)
        if cfg.pooling == "conv_rnn":
            self.rnn = nn.RNN(cfg.rnn_size, cfg.rnn_size, batch_first=True)
            self.attention = AttentionPool(cfg.rnn_size)
        elif cfg.rnn_size is not None:
            self.legacy_rnn = nn.RNN(cfg.rnn_size, cfg.rnn_size, batch_first=True)
            self.legacy_attention = AttentionPool(cfg.rnn_size)
            for p in (*self.legacy_rnn.parameters(), *self.legacy_attention.parameters()):
                p.requires_grad_(False)
        self.proj = nn.Linear(cfg.in_dim, cfg.out_dim)
        self.blocks = nn.ModuleList(ResidualSwiGLU(cfg.out_dim, cfg.norm_eps) for _ in range(cfg.n_blocks))

    def pooled(self, feats: torch.Tensor) -> torch.Tensor:
        """Encoder features -> (B, W), L2-normalised where the published model normalises."""
        c = self.cfg
        if feats.shape[1] != c.n_pool or feats.shape[-1] != c.in_dim:
            raise ValueError(f"adapter expects (B, {c.n_pool}, ..., {c.in_dim}) features, "
                             f"got {tuple(feats.shape)}: encoder and adapter config disagree")
        if c.pooling == "conv":
            x = self.pool(feats).squeeze(1)                          # (B, W)
            return F.normalize(x, dim=-1)
        if c.pooling == "mean_conv":
            x = self.pool(feats.mean(2)).squeeze(1)                  # (B, L, W) -> (B, W)
            return F.normalize(x, dim=-1)
        B, L, T, W = feats.shape                                     # conv_rnn
        x = self.pool(feats.permute(0, 2, 1, 3).reshape(B * T, L, W)).view(B, T, W)
        x = F.normalize(x, dim=-1)                                   # per frame
        x, _ = self.rnn(x)                                           # (B, T, W)
        return self.attention(x)                                     # (B, W)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.pooled(feats.to(self.proj.weight.dtype)))  # (B, D)
        for block in self.blocks:
            x = block(x)
        return x
