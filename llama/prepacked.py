"""oneDNN-prepacked weight copies for batched decoding on CPU (`--weight-layout onednn`).

Why: a batched decode step multiplies 2-16 rows by every weight. On the column-major blocks that
make batch-1 decoding fastest (`llama.llama.pack_`), MKL's few-row GEMM is compute-bound; oneDNN
reading a weight it has reordered for itself is 1.3x faster on the 512-wide blocks and 1.7-1.9x
on the LM head at 8 rows, and slower at one row (benchmarks/README.md). So this layout keeps the
column-major parameters (batch 1, prefill, state_dict unchanged) and adds a oneDNN copy of each
block, its biases fused, for products of 2-16 rows without autograd. Cost: a second copy of
every layer weight and the LM head in memory.

A copy is used only while it still matches its weights: same storage and no in-place change
since it was made (`Tensor._version`); otherwise the product falls back to the parameters.
Tensors made under `torch.inference_mode` keep no version counter: for them only the storage is
checked.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FEW_ROWS = (2, 16)
ATTR = "onednn_copy"                   # attribute on the first module of a block (not a parameter)


def available() -> bool:
    """oneDNN (mkldnn) is in this torch build: x86 CPU wheels have it."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


@dataclass
class OneDNNCopy:
    weight: torch.Tensor                # (sum out_i, in), oneDNN's own layout
    bias: torch.Tensor | None           # (sum out_i,) the blocks' biases, zeros where one has none
    sources: list[torch.Tensor]         # the weights it was made from
    stamp: list[tuple[int, int]]        # (data_ptr, _version) of each source when made

    def current(self) -> bool:
        return [_stamp(t) for t in self.sources] == self.stamp

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., sum out_i), bias included."""
        rows = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], y.shape[-1])


@torch.no_grad()
def attach(modules, batch_hint: int = 8) -> None:
    """Give modules[0] a oneDNN copy of these linears' weights stacked by rows (they share an
    input), biases fused. fp32 CPU weights only; others are left as they are."""
    weights = [m.weight for m in modules]
    if weights[0].device.type != "cpu" or weights[0].dtype != torch.float32:
        return
    block = torch.cat([w.detach() for w in weights]).contiguous()                # (sum out, in)
    biases = [m.bias for m in modules]
    bias = None if all(b is None for b in biases) else torch.cat(
        [torch.zeros(w.shape[0]) if b is None else b.detach().float() for w, b in zip(weights, biases)])
    sources = weights + [b for b in biases if b is not None]           # the biases are copied too
    copy = OneDNNCopy(torch.ops.mkldnn._reorder_linear_weight(block, batch_hint), bias, sources,
                      [_stamp(t) for t in sources])
    object.__setattr__(modules[0], ATTR, copy)


def _stamp(t: torch.Tensor) -> tuple[int, int]:
    return t.data_ptr(), -1 if t.is_inference() else t._version


def detach(modules) -> None:
    if ATTR in modules[0].__dict__:
        object.__delattr__(modules[0], ATTR)


def usable(modules, x: torch.Tensor) -> OneDNNCopy | None:
    """The copy to multiply x by, or None: no copy, too few or too many rows, autograd on, or the
    weights changed since the copy was made."""
    copy = modules[0].__dict__.get(ATTR)
    if copy is None or torch.is_grad_enabled() or x.dtype != torch.float32 or x.device.type != "cpu":
        return None
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not FEW_ROWS[0] <= rows <= FEW_ROWS[1] or not copy.current():
        return None
    return copy
