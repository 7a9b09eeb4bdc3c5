"""An opt-in compiled one-token decode step (`inference.py --compile`).

Why: at batch 1 a decode step is a few dozen small kernels per layer; their fixed cost (Python,
dispatch, and on a GPU kernel launches) keeps decoding from the memory-bandwidth floor.
`torch.compile` fuses the elementwise work and removes the Python overhead, but only pays off if
it compiles once: the eager step's shapes grow with the sequence (the cache is read up to the
current length). Here the KV cache is preallocated to the length the call needs and the cache
length is a dynamic dimension of the compiled graph, so one compilation serves every length;
attention reads the whole cache with a mask that hides each row's positions past its own, and
the positions are a tensor (one per row, as continuous batching needs), not Python numbers. One compile per batch size;
`compiles` counts them. Prefill stays eager (it runs once per request). Greedy tokens equal the
eager path's (tests/test_compiled_decode.py); logits agree to fp32 rounding (fused kernels round
differently).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .llama import KVCache, Transformer, packed_block

def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Meta's interleaved rotary embedding in real arithmetic (compilers handle complex poorly).
    x (B, 1, H, hd); cos/sin (1, 1, 1, hd/2)."""
    xf = x.float().unflatten(-1, (-1, 2))
    even, odd = xf[..., 0], xf[..., 1]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2).type_as(x)


def _weight_block(linears) -> torch.Tensor:
    """The (sum out, in) block the inference packing made, or one concatenated copy."""
    block = packed_block(linears)
    return block if block is not None else torch.cat([lin.weight for lin in linears])


class _Step(torch.nn.Module):
    """The one-token step over a static cache; weights taken from the Transformer as they are."""

    def __init__(self, llm: Transformer):
        super().__init__()
        self.llm = llm
        self.qkv = [_weight_block((l.attention.wq, l.attention.wk, l.attention.wv)) for l in llm.layers]
        self.w13 = [_weight_block((l.feed_forward.w1, l.feed_forward.w3)) for l in llm.layers]

    def forward(self, tokens, pos, keys, values, adapter_res):
        """tokens (B, 1); pos (B,) long, each row's position; keys/values per layer (B, H, T, hd)
        -> logits (B, 1, V), hidden (B, 1, D) before the final norm."""
        llm, cfg = self.llm, self.llm.cfg
        B, T = tokens.shape[0], keys[0].shape[2]
        H, hd, D = cfg.n_heads, cfg.head_dim, cfg.dim
        h = llm.tok_embeddings(tokens)                                       # (B, 1, D)
        cos = llm.rope_cos.index_select(0, pos).view(B, 1, 1, -1)
        sin = llm.rope_sin.index_select(0, pos).view(B, 1, 1, -1)
        mask = (torch.arange(T, device=pos.device)[None, :] <= pos[:, None])[:, None, None, :]  # (B, 1, 1, T)
        at = pos.view(B, 1, 1, 1).expand(B, H, 1, hd)                        # where each row writes
        for i, layer in enumerate(llm.layers):
            a, f = layer.attention, layer.feed_forward
            x = layer.attention_norm(h)
            q, k, v = F.linear(x, self.qkv[i]).split(D, dim=-1)
            q = q + a.wq.bias
            q = _rope(q.view(B, 1, H, hd), cos, sin).transpose(1, 2)         # (B, H, 1, hd)
            k = _rope(k.view(B, 1, H, hd), cos, sin).transpose(1, 2)
            v = v.view(B, 1, H, hd).transpose(1, 2)
            keys[i].scatter_(2, at, k)
            values[i].scatter_(2, at, v)
            out = F.scaled_dot_product_attention(q, keys[i], values[i], attn_mask=mask)
            out = a.wo(out.transpose(1, 2).reshape(B, 1, D))
            if adapter_res[i] is not None:
                out = out + adapter_res[i]
            h = h + out
            y = layer.ffn_norm(h)
            h1, h3 = F.linear(y, self.w13[i]).split(f.w1.weight.shape[0], dim=-1)
            h = h + f.w2(F.silu(h1 + f.w1.bias) * (h3 + f.w3.bias))
        return llm.output(llm.norm(h)), h


class CompiledDecode:
    """Pass as `generate(decode_step=...)`: prefill eager, every later token through one
    compiled static-shape step."""

    def __init__(self, llm: Transformer, compile: bool = True):
        for layer in llm.layers:
            for lin in (layer.attention.wq, layer.attention.wk, layer.attention.wv, layer.attention.wo,
                        layer.feed_forward.w1, layer.feed_forward.w2, layer.feed_forward.w3):
                if lin.lora_pending:
                    raise ValueError("the compiled step needs LoRA merged (MuMuPipeline.load merges it)")
        if layer.attention.wk.bias is not None or layer.attention.wv.bias is not None:
            raise ValueError("the compiled step assumes no bias on wk/wv, as the model has")
        self.llm = llm
        self.step = _Step(llm)
        self.compiles = 0
        # dynamic=None: only the dimensions `bind` marks (the cache length) are symbolic
        self._fn = torch.compile(self.step, backend=self._backend, fullgraph=True, dynamic=None) \
            if compile else self.step

    @classmethod
    def for_model(cls, model, compile: bool = True) -> "CompiledDecode":
        return cls(model.llm, compile)

    def _backend(self, gm, example_inputs):
        """Inductor, counting how often it is asked (the number of compilations)."""
        from torch._inductor.compile_fx import compile_fx
        self.compiles += 1
        return compile_fx(gm, example_inputs)

    def cache_len(self, needed: int) -> int:
        """The cache generate preallocates: exactly what the call needs (the length is dynamic)."""
        return needed

    def bind(self, llm: Transformer, adapter_res, cache: KVCache):
        """The step for one generate call, over the cache generate preallocated to `cache_len`.
        adapter_res: per layer (B, 1, D) or None, read at every step (generate overwrites a
        row's residuals in place when the row takes a new prompt)."""
        if llm is not self.llm:
            raise ValueError("this compiled step was built for another model")
        res = list(adapter_res or [None] * len(llm.layers))
        if self._fn is not self.step:                  # one graph for every cache length
            for t in cache.keys + cache.values:
                torch._dynamo.mark_dynamic(t, 2)

        def step(tokens: torch.Tensor, positions: torch.Tensor):
            """tokens (B, 1), positions (B,) long -> logits (B, 1, V), hidden (B, 1, D)."""
            # fresh tensors: a view of generate's sequence carries its stride, which differs per
            # request and would be a new shape to the compiler
            tokens = torch.empty(tokens.shape, dtype=tokens.dtype, device=tokens.device).copy_(tokens)
            pos = torch.empty(positions.shape, dtype=torch.long, device=tokens.device).copy_(positions)
            return self._fn(tokens, pos, cache.keys, cache.values, res)
        return step
