"""How fp32 CPU weights are laid out for inference, and the products that read them.

`Transformer.merge_lora(layout)` calls `pack_` (and `llama.prepacked` for "onednn"); the model's
forward calls `product` and `packed_linear`. Why each layout exists is measured in
benchmarks/README.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import prepacked

# A batch-1 decode step is one matrix-vector product per weight, bound by memory bandwidth.
# On CPU, MKL streams long contiguous runs at close to that bandwidth, but row-major matrices
# with short rows (in = 512 in a 512-wide model) at about half of it, and each product has a
# fixed cost. So for inference (`Transformer.merge_lora`) the weights that share an input
# (wq|wk|wv, w1|w3) are stored as one column-major block, each weight a view of its rows, and
# read with one product; the LM head is stored column-major too. Shapes, values, names and
# state_dict keys do not change. A copy that does not keep the views (`.to(dtype)`,
# `unmerge_lora`) undoes the packing and forward falls back to one product per weight.
# The other layout (`merge_lora(layout="rows")`, `--weight-layout rows`): row-major blocks, read
# with `W @ x^T` for 2-16 rows (`FEW_ROWS`) when no gradient is needed. On one 2-core AMD VM,
# MKL's few-row GEMM on the column-major blocks was compute-bound and rows made a batch-4-8 decode
# step 1.3-1.8x faster (batch 1: 0.66-0.73x); on a 2-core Intel VM columns are faster at every
# batch size. So columns is the default and rows an option to measure on one's own machine
# (benchmarks/batch_inference.py --layout). A third, `onednn` (`llama.prepacked`), keeps the
# columns and adds oneDNN copies for 2-16 rows. Numbers in benchmarks/README.md.
PACKINGS = ("columns", "rows")
LAYOUTS = PACKINGS + ("onednn",)
FEW_ROWS = prepacked.FEW_ROWS


@torch.no_grad()
def pack_(weights: list[torch.Tensor], layout: str = "columns") -> None:
    """Store (out_i, in) CPU weights as rows of one (sum out_i, in) block, in place: column-major
    (batch-1 decoding) or row-major (batch servers)."""
    if layout not in PACKINGS:
        raise ValueError(f"packing {layout!r}: one of {PACKINGS}")
    if weights[0].device.type != "cpu":
        return
    block = torch.cat([w.data for w in weights])                       # strides (in, 1)
    if layout == "columns":
        block = block.t().contiguous().t()                              # strides (1, sum out_i)
    start = 0
    for w in weights:
        n = w.shape[0]
        w.data = block[start:start + n]
        start += n


def packed_block(linears) -> torch.Tensor | None:
    """The (sum out_i, in) block that `pack_` made of these weights, or None if it no longer
    holds (a copy undid it) or a LoRA term is still pending."""
    first = linears[0].weight
    cols = first.stride() == (1, first.stride(1))
    total = first.stride(1) if cols else sum(lin.weight.shape[0] for lin in linears)
    width, offset = first.shape[1], 0
    for lin in linears:
        w = lin.weight
        stride = (1, total) if cols else (width, 1)
        step = offset if cols else offset * width
        if lin.lora_pending or w.stride() != stride or w.data_ptr() != first.data_ptr() + step * w.element_size():
            return None
        offset += w.shape[0]
    if offset != total:
        return None
    return first.as_strided((total, width), (1, total) if cols else (width, 1))


def product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, W, b), as `W @ x^T` for a few rows on a row-major CPU weight without autograd
    (see above); exactly F.linear otherwise."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if (FEW_ROWS[0] <= rows <= FEW_ROWS[1] and weight.stride(-1) == 1 and x.device.type == "cpu"
            and not torch.is_grad_enabled()):
        y = (weight @ x.reshape(rows, x.shape[-1]).t()).t().contiguous().view(*x.shape[:-1], weight.shape[0])
        return y if bias is None else y + bias
    return F.linear(x, weight, bias)


def packed_linear(x: torch.Tensor, linears) -> list[torch.Tensor] | None:
    """[lin(x) for lin in linears] with one matrix product over their packed block, or None."""
    block = packed_block(linears)
    if block is None:
        return None
    copy = prepacked.usable(linears, x)
    if copy is not None:                                             # biases fused in the copy
        return list(copy(x).split([lin.weight.shape[0] for lin in linears], dim=-1))
    outs = product(x, block).split([lin.weight.shape[0] for lin in linears], dim=-1)
    return [y if lin.bias is None else y + lin.bias for y, lin in zip(outs, linears)]
