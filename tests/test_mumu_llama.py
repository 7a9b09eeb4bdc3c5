import pytest
import torch

from llama.config import preset
from llama.errors import UserError
from llama.mumu_llama import MuMuLLaMA

NO_EOS = -1     # an id never sampled, so decoding runs the full budget


def feats(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"audio": torch.randn(batch, 3, 7, 32, generator=g), "image": torch.randn(batch, 17, 32, generator=g),
            "video": torch.randn(batch, 17, 32, generator=g)}


def test_kv_cached_greedy_generation_equals_full_recompute(model):
    prompts = [[1, 20, 21, 22, 23], [1, 40, 41]]
    cached = model.generate(prompts, feats(2), max_new_tokens=24, eos_id=NO_EOS)
    full = model.generate(prompts, feats(2), max_new_tokens=24, eos_id=NO_EOS, use_cache=False)
    assert cached.tokens == full.tokens
    assert all(len(t) == 24 for t in cached.tokens)


def test_batched_generation_equals_one_by_one(model):
    prompts = [[1, 20, 21, 22, 23], [1, 40, 41]]
    f = feats(2)
    both = model.generate(prompts, f, max_new_tokens=10, eos_id=NO_EOS)
    for b in range(2):
        one = model.generate(prompts[b:b + 1], {k: v[b:b + 1] for k, v in f.items()}, max_new_tokens=10,
                             eos_id=NO_EOS)
        assert one.tokens[0] == both.tokens[b]


def test_media_changes_the_logits_and_each_modality_counts(model):
    tokens = torch.tensor([[1, 20, 21]])
    base = feats(1, seed=0)
    ref = model(tokens, feats=base).logits
    for name in ("audio", "image", "video"):
        other = dict(base, **{name: feats(1, seed=1)[name]})
        assert (model(tokens, feats=other).logits - ref).abs().max() > 1e-4, name


def test_forced_music_collects_eight_aud_states_and_projects(model):
    r = model.generate([[1, 20, 21]], feats(), max_new_tokens=4, eos_id=NO_EOS, force_music=True)
    toks = r.tokens[0]
    assert toks[-8:] == model.aud_ids and len(toks) == 4 + 8
    assert r.aud_hidden[0].shape == (8, model.cfg.llama.dim)
    P = model.cfg.projector
    assert r.music_cond[0].shape == (P.n_queries, P.out_dim)
    # the collected states are those of a plain forward at the positions that predict [AUD0..7]
    hidden = model(torch.tensor([[1, 20, 21] + toks]), feats=feats()).hidden
    torch.testing.assert_close(r.aud_hidden[0], hidden[0, -9:-1], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(r.aud_hidden[0], hidden[0, -8:], atol=1e-2)


def test_a_sampled_aud_token_starts_a_full_run(model):
    with torch.no_grad():
        saved = model.llm.output.weight.clone()
        model.llm.output.weight[model.aud_ids[3]] = 50 * model.llm.output.weight[:3].mean(0) + 100
    try:
        r = model.generate([[1, 5]], feats(), max_new_tokens=6, eos_id=NO_EOS)
    finally:
        with torch.no_grad():
            model.llm.output.weight.copy_(saved)
    assert r.tokens[0][:8] == model.aud_ids and r.music_cond[0] is not None


def test_sampling_is_seeded(model):
    kw = dict(max_new_tokens=12, eos_id=NO_EOS, temperature=1.0, top_p=0.95)
    a = model.generate([[1, 5]], feats(), generator=torch.Generator().manual_seed(3), **kw)
    b = model.generate([[1, 5]], feats(), generator=torch.Generator().manual_seed(3), **kw)
    c = model.generate([[1, 5]], feats(), generator=torch.Generator().manual_seed(4), **kw)
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_prompt_longer_than_context_is_refused(model):
    with pytest.raises(UserError, match="context"):
        model.generate([[1] * 600], feats(), max_new_tokens=4)


def test_stage1_gates_and_adapters_get_gradients():
    torch.manual_seed(0)
    m = MuMuLLaMA(preset("tiny"))                 # fresh: gates are zero, as at the start of training
    tokens = torch.randint(3, 500, (2, 10))
    labels = tokens.clone()
    labels[:, :4] = -100
    loss = m(tokens, labels, feats(2)).loss
    loss.backward()
    for layer in m.llm.layers[-3:]:
        assert layer.attention.gate.grad.abs().sum() > 0
    # zero gates pass no gradient to the adapters yet; one step on the gates opens the path
    with torch.no_grad():
        for layer in m.llm.layers[-3:]:
            layer.attention.gate -= 0.1 * layer.attention.gate.grad.sign()
    m.zero_grad()
    m(tokens, labels, feats(2)).loss.backward()
    for name in ("audio", "image", "video"):
        assert m.adapters[name].proj.weight.grad.abs().sum() > 0


def test_per_sample_feature_lists_equal_batched_features(model):
    f = feats(2)
    tokens = torch.tensor([[1, 20, 21], [1, 22, 23]])
    batched = model(tokens, feats={"image": f["image"], "audio": f["audio"]}, present={"image": torch.tensor([True, False])})
    listed = model(tokens, feats={"image": [f["image"][0], None], "audio": [f["audio"][0], f["audio"][1]]})
    torch.testing.assert_close(listed.logits, batched.logits, rtol=1e-5, atol=1e-5)


def test_bridge_loss_uses_the_states_that_predict_the_aud_tokens(model):
    toks = [1, 20, 21] + model.aud_ids
    tokens = torch.tensor([toks, [1, 22, 23] + [0] * 8])
    labels = tokens.clone()
    pos = torch.tensor([list(range(3, 11)), [-1] * 8])
    P = model.cfg.projector
    target = torch.randn(1, P.n_queries, P.out_dim)
    out = model(tokens, labels, feats(2), aud_positions=pos, bridge_target=target)
    expected = model.project_music(out.hidden[:1, 2:10], tokens[:1, 3:11])   # one before each [AUD_k]
    torch.testing.assert_close(out.bridge_loss, torch.nn.functional.mse_loss(expected, target))
    torch.testing.assert_close(out.loss, out.ce_loss + out.bridge_loss)
    with pytest.raises(ValueError, match="bridge targets"):
        model(tokens, labels, aud_positions=pos, bridge_target=torch.randn(2, P.n_queries, P.out_dim))
