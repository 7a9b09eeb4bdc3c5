"""Continuous batching (llama/generation.py): `slots` rows decode a longer list of prompts, a
finished prompt's row taking the next one, and every prompt gets what it gets alone."""
import copy

import pytest
import torch

from llama.compiled_decode import CompiledDecode
from llama.errors import UserError
from llama.llama import KVCache

NO_EOS = -1
PROMPTS = [[1, 20, 21, 22, 23], [1, 40, 41], [1, 7], [1, 9, 10, 11, 12, 13, 14], [1, 30, 31, 32],
           [1, 50], [1, 60, 61, 62], [1, 70, 71, 72, 73, 74]]
# with 3 slots: prompts 0 and 2 end together, so rows 0 and 2 (not side by side) refill at once
MAX_NEW = [2, 5, 2, 7, 3, 3, 1, 4]
MUSIC = [False, True, False, False, True, False, False, True]


def feats(n, seed=0):
    """Per-prompt features with modalities missing here and there."""
    g = torch.Generator().manual_seed(seed)
    return {"audio": [torch.randn(3, 7, 32, generator=g) if i % 2 == 0 else None for i in range(n)],
            "image": [torch.randn(17, 32, generator=g) if i % 3 != 1 else None for i in range(n)]}


def one(f, i):
    return {k: [v[i]] for k, v in f.items() if v[i] is not None}


def gen(model, idx, f, **kw):
    return model.generate([PROMPTS[i] for i in idx], {k: [v[i] for i in idx] for k, v in f.items()},
                          max_new_tokens=[MAX_NEW[i] for i in idx], force_music=[MUSIC[i] for i in idx],
                          eos_id=NO_EOS, **kw)


def alone(model, f, **kw):
    return [model.generate([PROMPTS[i]], one(f, i), max_new_tokens=MAX_NEW[i], force_music=MUSIC[i],
                           eos_id=NO_EOS, **kw) for i in range(len(PROMPTS))]


@pytest.mark.parametrize("slots", [1, 2, 3, 5, 8])
def test_continuous_batching_equals_one_by_one(model, slots):
    f = feats(len(PROMPTS))
    ref = alone(model, f)
    out = gen(model, range(len(PROMPTS)), f, slots=slots)
    assert out.tokens == [r.tokens[0] for r in ref]
    for i, r in enumerate(ref):
        if MUSIC[i]:
            assert out.tokens[i][-8:] == model.aud_ids
            assert torch.allclose(out.aud_hidden[i], r.aud_hidden[0], atol=1e-5)
            assert torch.allclose(out.music_cond[i], r.music_cond[0], atol=1e-5)
        elif r.aud_hidden[0] is None:
            assert out.aud_hidden[i] is None and out.music_cond[i] is None


def test_rows_that_free_together_refill_in_one_prefill(model, monkeypatch):
    """Rows 0 and 2 free together with 3 slots: one prefill writes both through a side cache."""
    sizes = []
    real = KVCache.allocate.__func__

    def spy(cls, cfg, batch, max_len, device, dtype):
        sizes.append(batch)
        return real(cls, cfg, batch, max_len, device, dtype)

    monkeypatch.setattr(KVCache, "allocate", classmethod(spy))
    out = gen(model, range(len(PROMPTS)), feats(len(PROMPTS)), slots=3)
    assert sizes[0] == 3 and 2 in sizes[1:]
    monkeypatch.undo()
    assert out.tokens == [r.tokens[0] for r in alone(model, feats(len(PROMPTS)))]


def test_refilling_takes_fewer_forward_passes_than_fixed_batches(model):
    """Short and long answers alternate: fixed batches of 2 run until their longer answer ends."""
    n, slots = 8, 2
    prompts, budget = [[1, 5 + i] for i in range(n)], [1 if i % 2 else 12 for i in range(n)]
    cont = model.generate(prompts, max_new_tokens=budget, eos_id=NO_EOS, slots=slots)
    fixed = [model.generate(prompts[a:a + slots], max_new_tokens=budget[a:a + slots], eos_id=NO_EOS)
             for a in range(0, n, slots)]
    assert cont.tokens == [t for r in fixed for t in r.tokens]
    assert cont.steps < sum(r.steps for r in fixed) * 0.75


def test_a_long_prompt_and_a_long_answer_share_the_rows(model):
    """Each fits the context alone; together they would not if rows were aligned (left padding)."""
    ctx = model.cfg.llama.max_seq_len
    prompts, budget = [[1] + [5] * (ctx - 20), [1, 6]], [4, ctx - 20]
    out = model.generate(prompts, max_new_tokens=budget, eos_id=NO_EOS, slots=2)
    for i in range(2):
        assert out.tokens[i] == model.generate([prompts[i]], max_new_tokens=budget[i], eos_id=NO_EOS).tokens[0]
    with pytest.raises(UserError, match=f"prompt of {ctx - 19} tokens"):
        model.generate([[1, 6], prompts[0]], max_new_tokens=[4, 20], eos_id=NO_EOS)


def test_sampled_answers_follow_their_own_generator(model):
    f = feats(len(PROMPTS))
    kw = dict(temperature=0.9, top_p=0.95)
    ref = [model.generate([PROMPTS[i]], one(f, i), max_new_tokens=MAX_NEW[i], force_music=MUSIC[i], eos_id=NO_EOS,
                          generator=torch.Generator().manual_seed(i), **kw).tokens[0] for i in range(len(PROMPTS))]
    out = gen(model, range(len(PROMPTS)), f, slots=3,
              generator=[torch.Generator().manual_seed(i) for i in range(len(PROMPTS))], **kw)
    assert out.tokens == ref


def test_each_prompt_samples_with_its_own_temperature(model):
    """Greedy and sampled prompts share the rows; each answer is what it is alone."""
    f = feats(len(PROMPTS))
    temps = [0.0 if i % 3 == 0 else 0.5 + 0.2 * (i % 4) for i in range(len(PROMPTS))]
    tops = [0.9 if i % 2 else 0.6 for i in range(len(PROMPTS))]
    ref = [model.generate([PROMPTS[i]], one(f, i), max_new_tokens=MAX_NEW[i], force_music=MUSIC[i], eos_id=NO_EOS,
                          temperature=temps[i], top_p=tops[i],
                          generator=torch.Generator().manual_seed(i)).tokens[0] for i in range(len(PROMPTS))]
    out = gen(model, range(len(PROMPTS)), f, slots=3, temperature=temps, top_p=tops,
              generator=[torch.Generator().manual_seed(i) for i in range(len(PROMPTS))])
    assert out.tokens == ref
    greedy = gen(model, range(len(PROMPTS)), f, slots=3)
    assert any(a != b for a, b, t in zip(out.tokens, greedy.tokens, temps) if t > 0)


def test_full_recompute_and_compiled_step_agree_with_the_cache(model):
    f = feats(len(PROMPTS))
    cached = gen(model, range(len(PROMPTS)), f, slots=3)
    assert gen(model, range(len(PROMPTS)), f, slots=3, use_cache=False).tokens == cached.tokens
    merged = copy.deepcopy(model)                        # the compiled step wants LoRA merged
    merged.llm.merge_lora()
    eager = gen(merged, range(len(PROMPTS)), f, slots=3)
    step = CompiledDecode.for_model(merged, compile=False)
    assert gen(merged, range(len(PROMPTS)), f, slots=3, decode_step=step).tokens == eager.tokens


def test_streaming_reports_each_prompts_tokens_in_order(model):
    seen = {}
    out = gen(model, range(len(PROMPTS)), feats(len(PROMPTS)), slots=2,
              on_token=lambda i, t: seen.setdefault(i, []).append(t))
    assert [seen.get(i, []) for i in range(len(PROMPTS))] == out.tokens


def test_per_row_positions_equal_each_row_alone(model):
    """Transformer level: two rows at different positions, one token each."""
    llm, cfg = model.llm, model.cfg.llama
    a, b = [1, 20, 21, 22, 23], [1, 40]
    cache = KVCache.allocate(cfg, 2, 16, "cpu", torch.float32)
    with torch.no_grad():
        llm(torch.tensor([a]), cache=cache.rows(0, 1))
        llm(torch.tensor([b]), cache=cache.rows(1, 1))
        both, _ = llm(torch.tensor([[5], [6]]), cache=cache, logits_for="last", positions=[len(a), len(b)])
        for row, (p, t) in enumerate([(a, 5), (b, 6)]):
            ref, _ = llm(torch.tensor([p + [t]]), logits_for="last")
            assert torch.allclose(both[row], ref[0], atol=1e-5)
