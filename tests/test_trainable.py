"""The exact trainable key set per stage (tiny model), and the [AUD] rows as their own parameters."""
import json
from pathlib import Path

import pytest
import torch

from llama.config import preset
from llama.mumu_llama import MuMuLLaMA
from llama.trainable import AudRowsHead, fold_aud_rows, set_trainable, stage_budget

PINNED = json.loads((Path(__file__).parent / "fixtures" / "trainable_keys_tiny.json").read_text())


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_trainable_key_set_is_pinned(stage):
    m = MuMuLLaMA(preset("tiny"))
    names = set_trainable(m, stage)
    grad = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    assert names == grad == PINNED[f"stage{stage}"]
    # never a base matrix, never the legacy video RNN
    assert not any(n in grad for n in ("llm.tok_embeddings.weight", "llm.output.weight"))
    assert not any(".legacy_" in n or (n.startswith("llm.") and n.endswith(("wq.weight", "w1.weight"))) for n in grad)
    assert ("llm.output.aud_rows" in grad) == (stage != 3)


def test_wrapped_model_computes_what_the_plain_one_does():
    torch.manual_seed(0)
    m = MuMuLLaMA(preset("tiny"))
    tokens = torch.tensor([[1, 5, 9] + m.aud_ids])
    plain = m(tokens, tokens.clone())
    set_trainable(m, 1)
    assert isinstance(m.llm.output, AudRowsHead)
    wrapped = m(tokens, tokens.clone())
    torch.testing.assert_close(wrapped.logits, plain.logits, rtol=0, atol=1e-6)
    set_trainable(m, 3)                       # stage 3 does not train them: plain modules again
    assert type(m.llm.output) is torch.nn.Linear
    fold_aud_rows(m)                          # idempotent
    torch.testing.assert_close(m(tokens).logits, plain.logits, rtol=0, atol=1e-6)


def test_budget_counts_rows_not_matrices():
    with torch.device("meta"):
        m = MuMuLLaMA(preset("tiny"))
    L = m.cfg.llama
    b1, b3 = stage_budget(m, 1), stage_budget(m, 3)
    assert b1["params_before"] - b1["params"] == 2 * L.vocab_size * L.dim
    assert b3["params_before"] == b3["params"] and b1["grad_adam_bytes"] == 12 * b1["params"]
