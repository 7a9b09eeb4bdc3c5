"""llama/prepacked.py: oneDNN copies for batched decoding (`--weight-layout onednn`)."""
import pytest
import torch
import torch.nn.functional as F

from llama import prepacked
from llama.llama import KVCache

from tests.test_llama import randomised, small_cfg

pytestmark = pytest.mark.skipif(not prepacked.available(), reason="torch built without oneDNN")


def blocks(model):
    return model._blocks()


def run(model, tokens, prefixes, calls):
    """Full forward and the same sequence through the cache, one token at a time after 4; `calls`
    is emptied before the one-token steps."""
    res = model.adapter_residuals(prefixes)
    with torch.no_grad():
        full, _ = model(tokens, res)
        cache = KVCache.allocate(model.cfg, tokens.shape[0], tokens.shape[1], "cpu", torch.float32)
        steps = [model(tokens[:, :4], res, cache)[0]]
        calls.clear()
        steps += [model(tokens[:, i:i + 1], res, cache)[0] for i in range(4, tokens.shape[1])]
    return full, torch.cat(steps, 1)


def test_onednn_layout_gives_the_column_layouts_logits_and_reads_the_copies(monkeypatch):
    cfg = small_cfg()
    tokens = torch.randint(0, cfg.full_vocab_size, (4, 9), generator=torch.Generator().manual_seed(1))
    prefixes = torch.randn(4, cfg.n_adapter_layers, cfg.dim, generator=torch.Generator().manual_seed(2))
    columns, onednn = randomised(cfg), randomised(cfg)
    columns.merge_lora("columns")
    onednn.merge_lora("onednn")
    # wq|wk|wv, w1|w3 and the LM head have copies (wo and w2 not), the parameters keep the columns
    with_copy = [b for b in blocks(onednn) if prepacked.ATTR in b[0].__dict__]
    assert len(with_copy) == 2 * cfg.n_layers + 1 and all(len(b) > 1 or b[0] is onednn.output for b in with_copy)
    assert onednn.state_dict().keys() == columns.state_dict().keys()
    for k, v in onednn.state_dict().items():
        assert v.stride() == columns.state_dict()[k].stride(), k
    calls = []
    real = prepacked.OneDNNCopy.__call__
    monkeypatch.setattr(prepacked.OneDNNCopy, "__call__", lambda self, x: calls.append(x.shape) or real(self, x))
    want_full, want_steps = run(columns, tokens, prefixes, calls)
    assert not calls                                       # the column model has no copies
    full, steps = run(onednn, tokens, prefixes, calls)
    torch.testing.assert_close(full, want_full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(steps, want_steps, rtol=1e-5, atol=1e-5)
    # a one-token step of 4 rows reads 2 blocks per layer and the LM head from the copies
    assert len(calls) == 5 * (2 * cfg.n_layers + 1) and all(s[:2] == (4, 1) for s in calls)


def test_copy_is_ignored_when_it_cannot_apply():
    cfg = small_cfg()
    model = randomised(cfg)
    model.merge_lora("onednn")
    ff = model.layers[0].feed_forward
    lin = (ff.w1, ff.w3)
    x = torch.randn(4, 1, cfg.dim)
    with torch.no_grad():
        assert prepacked.usable(lin, x) is not None
        assert prepacked.usable(lin, x[:1]) is None                            # one row: columns
        assert prepacked.usable(lin, torch.randn(prepacked.FEW_ROWS[1] + 1, cfg.dim)) is None
        assert prepacked.usable(lin, x.double()) is None
    with torch.enable_grad():
        assert prepacked.usable(lin, x) is None                                # training: parameters
    # a weight or bias changed in place after the copy was made: the copy is stale, not used
    for which in ("weight", "bias"):
        m = randomised(cfg)
        m.merge_lora("onednn")
        f = m.layers[0].feed_forward
        with torch.no_grad():
            getattr(f.w3, which).add_(0.5)
            assert prepacked.usable((f.w1, f.w3), x) is None
            want = F.linear(F.silu(F.linear(x, f.w1.weight, f.w1.bias)) * F.linear(x, f.w3.weight, f.w3.bias),
                            f.w2.weight, f.w2.bias)
            torch.testing.assert_close(f(x), want, rtol=1e-5, atol=1e-6)
    # unmerging drops every copy
    model.unmerge_lora()
    assert not any(prepacked.ATTR in b[0].__dict__ for b in blocks(model))


def test_no_onednn_is_a_one_line_user_error(monkeypatch):
    from llama.errors import UserError
    monkeypatch.setattr(prepacked, "available", lambda: False)
    with pytest.raises(UserError, match="weight-layout onednn: this torch build has no oneDNN"):
        randomised(small_cfg()).merge_lora("onednn")


def test_copy_products_equal_f_linear_with_fused_biases():
    """A block of linears with and without bias (wq has one, wk and wv not)."""
    lins = [torch.nn.Linear(16, 8, bias=b) for b in (True, False, True)]
    prepacked.attach(lins)
    copy = lins[0].__dict__[prepacked.ATTR]
    x = torch.randn(5, 16)
    with torch.no_grad():
        want = torch.cat([lin(x) for lin in lins], -1)
        torch.testing.assert_close(copy(x), want, rtol=1e-5, atol=1e-6)
        assert copy(x[:, None]).shape == (5, 1, 24)
    lins16 = [torch.nn.Linear(16, 8).bfloat16()]
    prepacked.attach(lins16)                                 # not fp32: no copy
    assert prepacked.ATTR not in lins16[0].__dict__
