"""The LLaMA-2 transformer with MuMu-LLaMA's tuning extras and a KV cache.

Extras over Meta's model: rank-r LoRA on wq/wk/wv/wo/w1/w2/w3, biases on wq/wo/w1/w2/w3, and a
per-head zero-initialised tanh gate through which the last `n_adapter_layers` layers receive a
one-token modality prefix (`tanh(gate) * Wv(adapter)` added to the attention output).
Parameter names follow Meta's checkpoints, so `consolidated.*.pth` loads without renaming.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import prepacked
from .config import LLaMAConfig
from .errors import UserError
from .weight_layout import FEW_ROWS, LAYOUTS, PACKINGS, pack_, packed_block, packed_linear, product  # noqa: F401


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalised in fp32 as Meta does, cast back, then scaled. F.rms_norm computes exactly
        # x * rsqrt(mean(x^2) + eps) (bit-identical, one call); in fp32 it also takes the weight.
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return F.rms_norm(x.float(), self.weight.shape, eps=self.eps).type_as(x) * self.weight


class LoRALinear(nn.Module):
    """`x W^T + b + B(A(x))`. `merge()` folds B A into W for inference (fewer kernels per token)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, rank: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.lora_a = nn.Linear(in_features, rank, bias=False) if rank > 0 else None
        self.lora_b = nn.Linear(rank, out_features, bias=False) if rank > 0 else None
        self.merged = False
        nn.init.normal_(self.weight, std=0.02)
        if rank > 0:
            nn.init.xavier_uniform_(self.lora_a.weight)
            nn.init.zeros_(self.lora_b.weight)

    def lora(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_b(self.lora_a(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        copy = prepacked.usable((self,), x)
        y = copy(x) if copy is not None else product(x, self.weight, self.bias)
        if self.lora_a is not None and not self.merged:
            y = y + self.lora(x)
        return y

    def forward_no_lora(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen base projection alone (no LoRA, no bias), used for adapter values."""
        y = F.linear(x, self.weight)
        if self.lora_a is not None and self.merged:
            y = y - self.lora(x)
        return y

    @torch.no_grad()
    def merge(self) -> None:
        if self.lora_a is not None and not self.merged:
            self.weight += (self.lora_b.weight @ self.lora_a.weight).to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.lora_a is not None and self.merged:
            self.weight -= (self.lora_b.weight @ self.lora_a.weight).to(self.weight.dtype)
            self.merged = False

    @property
    def lora_pending(self) -> bool:
        """True when forward must still add the LoRA term (not folded into the weight)."""
        return self.lora_a is not None and not self.merged


def rope_tables(head_dim: int, max_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of Meta's rotary angles, each (max_len, head_dim // 2)."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(max_len, device=device).float(), freqs)
    return angles.cos(), angles.sin()


def rope_rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """cos/sin (S, hd/2) -> the complex rotations cos + i sin, shaped (1, S, 1, hd/2) for `apply_rope`."""
    return torch.complex(cos.float(), sin.float())[None, :, None, :]


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (Meta's layout, not HF's half split) as Meta does, by a complex
    product: (even + i odd) * (cos + i sin). x: (B, S, H, hd); rot: (1, S, 1, hd/2) complex."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))      # (B, S, H, hd/2)
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)


@dataclass
class KVCache:
    """Preallocated keys/values per layer, (B, H, max_len, hd); `length` positions are filled.

    A one-token step may instead write each row at its own position (`positions`, (B,)), as
    continuous batching needs: rows then hold sequences of different lengths, each from 0."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0
    positions: torch.Tensor | None = None       # per-row step: (B, H, 1, hd) each row's position
    span: int = 0                               # per-row step: positions read, max(positions) + 1

    @classmethod
    def allocate(cls, cfg: LLaMAConfig, batch: int, max_len: int, device, dtype) -> "KVCache":
        shape = (batch, cfg.n_heads, max_len, cfg.head_dim)
        return cls([torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
                   [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)])

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def rows(self, start: int, n: int) -> "KVCache":
        """Rows [start, start + n) as a cache of their own (views: writes land here), empty."""
        return KVCache([k.narrow(0, start, n) for k in self.keys], [v.narrow(0, start, n) for v in self.values])

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k/v (B, H, S, hd); return all keys/values to attend to (B, H, T, hd)."""
        keys, values = self.keys[layer], self.values[layer]
        if self.positions is None:
            start, S = self.length, k.shape[2]
            keys.narrow(2, start, S).copy_(k)
            values.narrow(2, start, S).copy_(v)
            return keys.narrow(2, 0, start + S), values.narrow(2, 0, start + S)
        keys.scatter_(2, self.positions, k)         # scatter_: half the cost of index_put here
        values.scatter_(2, self.positions, v)
        return keys.narrow(2, 0, self.span), values.narrow(2, 0, self.span)


class Attention(nn.Module):
    def __init__(self, cfg: LLaMAConfig):
        super().__init__()
        D, r = cfg.dim, cfg.lora_rank
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.wq = LoRALinear(D, D, bias=True, rank=r)
        self.wk = LoRALinear(D, D, bias=False, rank=r)
        self.wv = LoRALinear(D, D, bias=False, rank=r)
        self.wo = LoRALinear(D, D, bias=True, rank=r)
        # Per-head gate; zero so a fresh model ignores media until training opens it.
        self.gate = nn.Parameter(torch.zeros(1, cfg.n_heads, 1, 1))

    def adapter_residual(self, adapter: torch.Tensor) -> torch.Tensor:
        """What the prefix adds after wo: wo(tanh(gate) * Wv(adapter)), without wo's bias.

        adapter: (B, 1, D) -> (B, 1, D). Constant over positions, so generation computes it once.
        """
        B = adapter.shape[0]
        v = self.wv.forward_no_lora(adapter).view(B, 1, self.n_heads, self.head_dim)
        gated = (self.gate.tanh().transpose(1, 2) * v).reshape(B, 1, -1)   # (B, 1, D)
        out = self.wo(gated)
        return out - self.wo.bias if self.wo.bias is not None else out

    def forward(self, x, rot, mask, cache: KVCache | None, layer: int, adapter_res=None):
        B, S, D = x.shape
        qkv = packed_linear(x, (self.wq, self.wk, self.wv))             # 3 x (B, S, D)
        q, k, v = qkv if qkv is not None else (self.wq(x), self.wk(x), self.wv(x))
        q = apply_rope(q.view(B, S, self.n_heads, self.head_dim), rot)
        k = apply_rope(k.view(B, S, self.n_heads, self.head_dim), rot)
        v = v.view(B, S, self.n_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)   # (B, H, S, hd)
        if cache is not None:                       # write this step, attend to all so far
            k, v = cache.update(layer, k, v)                               # (B, H, T, hd)
        if mask is None and S > 1:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.wo(out.transpose(1, 2).reshape(B, S, D))
        if adapter_res is not None:
            out = out + adapter_res
        return out


class FeedForward(nn.Module):
    def __init__(self, cfg: LLaMAConfig):
        super().__init__()
        D, H, r = cfg.dim, cfg.ffn_dim, cfg.lora_rank
        self.w1 = LoRALinear(D, H, bias=True, rank=r)
        self.w2 = LoRALinear(H, D, bias=True, rank=r)
        self.w3 = LoRALinear(D, H, bias=True, rank=r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h13 = packed_linear(x, (self.w1, self.w3))                        # 2 x (B, S, ffn)
        h1, h3 = h13 if h13 is not None else (self.w1(x), self.w3(x))
        return self.w2(F.silu(h1) * h3)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: LLaMAConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, rot, mask, cache, layer, adapter_res=None):
        h = x + self.attention(self.attention_norm(x), rot, mask, cache, layer, adapter_res)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """LLaMA-2 with `full_vocab_size` rows (base vocabulary + [AUD] tokens)."""

    def __init__(self, cfg: LLaMAConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.full_vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.full_vocab_size, bias=False)
        if cfg.n_adapter_layers > cfg.n_layers:
            raise ValueError(f"{cfg.n_adapter_layers} adapter layers but only {cfg.n_layers} layers")
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len * 2, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)   # (2 * max_seq_len, hd/2)
        self.register_buffer("rope_sin", sin, persistent=False)

    @property
    def first_adapter_layer(self) -> int:
        return self.cfg.n_layers - self.cfg.n_adapter_layers

    def adapter_residuals(self, adapters: torch.Tensor | None) -> list[torch.Tensor | None]:
        """adapters: (B, n_adapter_layers, D) prefix inputs -> per-layer residual (B, 1, D) or None."""
        res: list[torch.Tensor | None] = [None] * self.cfg.n_layers
        if adapters is None:
            return res
        for j in range(self.cfg.n_adapter_layers):
            layer = self.layers[self.first_adapter_layer + j]
            res[self.first_adapter_layer + j] = layer.attention.adapter_residual(adapters[:, j:j + 1])
        return res

    def forward(self, tokens: torch.Tensor, adapter_res: list | None = None,
                cache: KVCache | None = None, key_mask: torch.Tensor | None = None,
                logits_for: str | torch.Tensor = "all",
                positions: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, S) -> (logits (B, S|1, V), hidden (B, S, D) BEFORE the final norm).

        The pre-norm last-layer states are what the published output projector reads.

        key_mask (B, T_total) marks real (non-padding) positions of the whole sequence so far,
        T_total = cache.length + S with a cache, S without. With neither mask nor cache the
        attention is plain causal. logits_for: "all", "last", or (B,) indices, one position per
        row (right-padded rows). positions: with a cache and S == 1, the position of each row's
        token (rows of different lengths, continuous batching); key_mask must then be None.
        """
        B, S = tokens.shape
        if positions is not None and len(set(positions)) == 1:
            cache.length, positions = positions[0], None        # all rows at one position
        start = cache.length if cache is not None else 0
        end = start + S if positions is None else max(positions) + 1
        if cache is not None and end > cache.capacity:
            raise ValueError(f"sequence of {end} tokens exceeds the cache of {cache.capacity}")
        if end > self.rope_cos.shape[0]:
            raise ValueError(f"sequence of {end} tokens exceeds the context of {self.cfg.max_seq_len}")
        h = self.tok_embeddings(tokens)                                  # (B, S, D)
        if positions is None:
            rot = rope_rotation(self.rope_cos[start:start + S], self.rope_sin[start:start + S])
            # No mask when plain causal (nothing cached before) or when one new token sees it all.
            needs_mask = key_mask is not None or (start > 0 and S > 1)
            mask = self._mask(B, S, start, key_mask, h.device) if needs_mask else None
        else:
            if S != 1 or cache is None or key_mask is not None:
                raise ValueError("per-row positions take one token per row, a cache and no key_mask")
            pos = torch.tensor(positions, device=h.device)
            rot = rope_rotation(self.rope_cos[pos], self.rope_sin[pos]).transpose(0, 1)   # (B, 1, 1, hd/2)
            hidden_keys = torch.arange(end, device=h.device) > pos[:, None]               # (B, T)
            # additive: SDPA converts a boolean mask to this in every layer
            mask = torch.zeros(B, 1, 1, end, device=h.device, dtype=h.dtype).masked_fill_(
                hidden_keys[:, None, None, :], float("-inf"))                             # (B, 1, 1, T)
            cache.positions = pos.view(B, 1, 1, 1).expand(B, self.cfg.n_heads, 1, self.cfg.head_dim)
            cache.span = end
        adapter_res = adapter_res or [None] * self.cfg.n_layers
        try:
            for i, layer in enumerate(self.layers):
                h = layer(h, rot, mask, cache, i, adapter_res[i])
        finally:
            if cache is not None:
                cache.positions = None
        if cache is not None and positions is None:
            cache.length = start + S
        if isinstance(logits_for, torch.Tensor):
            last = h[torch.arange(B, device=h.device), logits_for][:, None]   # (B, 1, D)
        else:
            last = h[:, -1:] if logits_for == "last" else h
        last = self.norm(last)
        head = prepacked.usable((self.output,), last)
        logits = head(last) if head is not None else self.output(last)
        return logits, h

    @staticmethod
    def _mask(B, S, start, key_mask, device):
        """Boolean (B|1, 1, S, start+S): causal, and padding keys hidden. None when all visible."""
        T = start + S
        q_pos = torch.arange(start, T, device=device)[:, None]
        allowed = torch.arange(T, device=device)[None, :] <= q_pos        # (S, T)
        if key_mask is None:
            return None if S == 1 else allowed[None, None]
        allowed = allowed[None, None] & key_mask[:, None, None, :T].bool()  # (B, 1, S, T)
        # A fully masked row (a padding query) would give NaN; let it see itself.
        return allowed | (~allowed.any(-1, keepdim=True) & (torch.arange(T, device=device) == q_pos))

    def merge_lora(self, layout: str = "columns") -> None:
        """Prepare for inference: fold LoRA into the base weights, then pack them for decoding
        (see `pack_`; "rows" or "onednn" for batch servers). Training must call `unmerge_lora` first."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}: one of {LAYOUTS}")
        if layout == "onednn" and not prepacked.available():
            raise UserError("--weight-layout onednn: this torch build has no oneDNN (mkldnn); use columns")
        packing = "rows" if layout == "rows" else "columns"
        for m in self.modules():
            if isinstance(m, LoRALinear):
                m.merge()
        for block in self._blocks():
            if packing == "columns" or len(block) > 1:
                pack_([m.weight for m in block], packing)
            if layout == "onednn" and (len(block) > 1 or block[0] is self.output):
                prepacked.attach(block)        # not wo, w2: no faster at 512 wide (benchmarks/README.md)

    def _blocks(self) -> list[tuple[nn.Module, ...]]:
        """The weights a decode step reads, grouped by shared input."""
        blocks = []
        for layer in self.layers:
            a, f = layer.attention, layer.feed_forward
            blocks += [(a.wq, a.wk, a.wv), (f.w1, f.w3), (a.wo,), (f.w2,)]
        return blocks + [(self.output,)]

    def unmerge_lora(self) -> None:
        """Undo `merge_lora`: LoRA back out of the weights, each weight contiguous again."""
        for block in self._blocks():
            prepacked.detach(block)
        for m in self.modules():
            if isinstance(m, LoRALinear):
                m.unmerge()
                m.weight.data = m.weight.data.contiguous()
        self.output.weight.data = self.output.weight.data.contiguous()


def param_count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def init_new_token_rows(weight: torch.Tensor, n_base: int) -> None:
    """Rows past `n_base` ([AUD] tokens) start at the mean of the existing rows."""
    with torch.no_grad():
        if weight.shape[0] > n_base:
            weight[n_base:] = weight[:n_base].mean(0, keepdim=True)


__all__ = ["RMSNorm", "LoRALinear", "KVCache", "Transformer", "apply_rope", "rope_rotation", "rope_tables",
           "pack_", "product", "param_count", "init_new_token_rows"]
