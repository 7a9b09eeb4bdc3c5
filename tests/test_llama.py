import pytest
import torch

from llama.config import LLaMAConfig
from llama.llama import KVCache, LoRALinear, Transformer


def small_cfg(**kw):
    base = dict(dim=32, n_layers=3, n_heads=4, vocab_size=50, multiple_of=16, max_seq_len=64,
                lora_rank=4, adapter_layers_per_modality=1)
    base.update(kw)
    return LLaMAConfig(**base)


def randomised(cfg, seed=0):
    torch.manual_seed(seed)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():   # make LoRA, biases and gates non-trivial
            if "lora_b" in name or name.endswith(".bias") or name.endswith(".gate"):
                p.normal_(std=0.1)
    return model


def test_cached_decoding_matches_full_recompute_logits():
    cfg = small_cfg()
    model = randomised(cfg)
    tokens = torch.randint(0, cfg.full_vocab_size, (2, 12))
    adapters = model.adapter_residuals(torch.randn(2, cfg.n_adapter_layers, cfg.dim))
    full, _ = model(tokens, adapters)
    cache = KVCache.allocate(cfg, 2, 16, "cpu", torch.float32)
    step_logits = [model(tokens[:, :5], adapters, cache)[0]]
    for i in range(5, 12):
        step_logits.append(model(tokens[:, i:i + 1], adapters, cache)[0])
    torch.testing.assert_close(torch.cat(step_logits, 1), full, rtol=1e-5, atol=1e-5)


def test_lora_merge_keeps_outputs():
    torch.manual_seed(0)
    lin = LoRALinear(16, 8, bias=True, rank=4)
    torch.nn.init.normal_(lin.lora_b.weight)
    x = torch.randn(3, 16)
    before, base = lin(x), lin.forward_no_lora(x)
    lin.merge()
    torch.testing.assert_close(lin(x), before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lin.forward_no_lora(x), base, rtol=1e-5, atol=1e-5)
    lin.unmerge()
    torch.testing.assert_close(lin(x), before, rtol=1e-5, atol=1e-5)


def test_merged_model_matches_unmerged():
    cfg = small_cfg()
    model = randomised(cfg)
    tokens = torch.randint(0, cfg.full_vocab_size, (1, 9))
    prefixes = torch.randn(1, cfg.n_adapter_layers, cfg.dim)
    ref, _ = model(tokens, model.adapter_residuals(prefixes))
    model.merge_lora()
    got, _ = model(tokens, model.adapter_residuals(prefixes))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_zero_gates_make_the_prefix_inert_and_open_gates_do_not():
    cfg = small_cfg()
    model = randomised(cfg)
    tokens = torch.randint(0, cfg.full_vocab_size, (1, 6))
    a, b = torch.randn(1, cfg.n_adapter_layers, cfg.dim), torch.randn(1, cfg.n_adapter_layers, cfg.dim)
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.gate.zero_()
    torch.testing.assert_close(model(tokens, model.adapter_residuals(a))[0], model(tokens, model.adapter_residuals(b))[0])
    with torch.no_grad():
        model.layers[-1].attention.gate.fill_(0.5)
    assert not torch.allclose(model(tokens, model.adapter_residuals(a))[0], model(tokens, model.adapter_residuals(b))[0])


def test_only_the_last_layers_take_adapters():
    cfg = small_cfg(n_layers=5, adapter_layers_per_modality=1)
    model = randomised(cfg)
    res = model.adapter_residuals(torch.randn(1, 3, cfg.dim))
    assert [r is not None for r in res] == [False, False, True, True, True]


def test_left_padding_does_not_change_the_answer():
    cfg = small_cfg()
    model = randomised(cfg)
    seq = torch.randint(3, cfg.full_vocab_size, (1, 7))
    ref, _ = model(seq)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), seq], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.bool), torch.ones(1, 7, dtype=torch.bool)], 1)
    got, _ = model(padded, key_mask=mask)
    torch.testing.assert_close(got[:, 3:], ref, rtol=1e-5, atol=1e-5)


def test_context_overflow_is_a_clear_error():
    cfg = small_cfg(max_seq_len=8)
    model = Transformer(cfg)
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 40, dtype=torch.long))


def test_packed_inference_layout_keeps_values_and_undoes_cleanly():
    cfg = small_cfg()
    model = randomised(cfg)
    tokens = torch.randint(0, cfg.full_vocab_size, (1, 9))
    prefixes = torch.randn(1, cfg.n_adapter_layers, cfg.dim)
    ref, _ = model(tokens, model.adapter_residuals(prefixes))
    originals = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.merge_lora()
    wq = model.layers[0].attention.wq.weight
    assert not wq.is_contiguous()                      # packed column-major block on CPU
    res = model.adapter_residuals(prefixes)
    got, _ = model(tokens, res)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    cache = KVCache.allocate(cfg, 1, 12, "cpu", torch.float32)
    steps = [model(tokens[:, :4], res, cache)[0]] + [model(tokens[:, i:i + 1], res, cache)[0] for i in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), got, rtol=1e-5, atol=1e-5)
    # a dtype change copies the weights out of the block: the plain path takes over
    half = randomised(cfg)
    half.merge_lora()
    half = half.to(torch.bfloat16)
    out16, _ = half(tokens, half.adapter_residuals(prefixes.bfloat16()))
    torch.testing.assert_close(out16.float(), ref, rtol=0.1, atol=0.1)
    model.unmerge_lora()
    assert all(p.is_contiguous() for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, originals[k], rtol=1e-5, atol=1e-6)


def test_row_layout_keeps_values_and_reads_blocks():
    """merge_lora(layout="rows"): row-major blocks that packed_block finds, products of 2-16 rows
    through `W @ x^T`, and the same logits and cached steps as the column layout (which also
    packs wo and w2 column-major)."""
    from llama.llama import FEW_ROWS, packed_block, product

    cfg = small_cfg()
    tokens = torch.randint(0, cfg.full_vocab_size, (4, 9), generator=torch.Generator().manual_seed(1))
    prefixes = torch.randn(4, cfg.n_adapter_layers, cfg.dim, generator=torch.Generator().manual_seed(2))
    outs = {}
    for layout in ("columns", "rows"):
        model = randomised(cfg)
        model.merge_lora(layout=layout)
        a = model.layers[0].attention
        block = packed_block((a.wq, a.wk, a.wv))
        assert block is not None and block.shape == (3 * cfg.dim, cfg.dim)
        assert block.is_contiguous() == (layout == "rows")
        assert a.wo.weight.is_contiguous() == model.layers[0].feed_forward.w2.weight.is_contiguous() == (layout == "rows")
        res = model.adapter_residuals(prefixes)
        with torch.no_grad():
            full, _ = model(tokens, res)
            cache = KVCache.allocate(cfg, 4, 12, "cpu", torch.float32)
            steps = [model(tokens[:, :4], res, cache)[0]] + [model(tokens[:, i:i + 1], res, cache)[0]
                                                             for i in range(4, 9)]
        torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
        outs[layout] = full
    torch.testing.assert_close(outs["rows"], outs["columns"], rtol=1e-5, atol=1e-5)
    # the few-row product equals F.linear on each side of the row range, with and without bias
    w, b = torch.randn(24, 8), torch.randn(24)
    for rows in (1, FEW_ROWS[0], FEW_ROWS[1], FEW_ROWS[1] + 1):
        x = torch.randn(rows, 1, 8)
        with torch.no_grad():
            torch.testing.assert_close(product(x, w, b), torch.nn.functional.linear(x, w, b))
            assert product(x, w).is_contiguous()
    with pytest.raises(ValueError, match="layout"):
        randomised(cfg).merge_lora(layout="diagonal")
