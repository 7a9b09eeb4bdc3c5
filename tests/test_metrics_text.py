"""Text metrics equal the libraries' own results and independent formulas on fixed inputs."""
import math
from collections import Counter

import pytest

from llama.metrics import text as T

HYPS = ["the violin plays a fast tune in g minor", "there are no drums in this calm piece",
        "the tempo is slow and the mood is sad", "a happy piano piece with drums"]
REFS = [["the violin plays a fast piece in g minor"], ["no drums are in this calm piece"],
        ["the tempo is slow and the mood is sad"], ["a happy piano song with drums and bass"]]


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_by_hand(hyps, refs, order):
    """Papineni et al. corpus BLEU: clipped n-gram precisions, geometric mean, brevity penalty
    against the closest reference length (single references here)."""
    match, total = [0] * order, [0] * order
    hyp_len = ref_len = 0
    for h, (r,) in zip(hyps, refs):
        ht, rt = h.split(), r.split()
        hyp_len, ref_len = hyp_len + len(ht), ref_len + len(rt)
        for n in range(1, order + 1):
            hc, rc = _ngrams(ht, n), _ngrams(rt, n)
            match[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += sum(hc.values())
    log_p = sum(math.log(m / t) for m, t in zip(match, total)) / order
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(log_p)


def test_bleu_equals_hand_formula_and_nltk():
    from nltk.translate.bleu_score import corpus_bleu

    ours = T.bleu(HYPS, REFS)
    for n in range(1, 5):
        hand = bleu_by_hand(HYPS, REFS, n)
        weights = tuple([1.0 / n] * n)
        lib = corpus_bleu([[r[0].split()] for r in REFS], [h.split() for h in HYPS], weights=weights)
        # sacrebleu rounds nothing internally; the only differences are float summation order
        assert ours[f"bleu_{n}"] == pytest.approx(hand, abs=1e-9)
        assert ours[f"bleu_{n}"] == pytest.approx(lib, abs=1e-9)


def test_bleu_identical_texts_is_one_and_unrelated_is_low():
    assert all(v == pytest.approx(1.0) for v in T.bleu(HYPS, [[h] for h in HYPS]).values())
    assert T.bleu(["piano calm"], [["trumpet fast drums loud"]])["bleu_1"] < 0.05


def _lcs(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            dp[i + 1][j + 1] = dp[i][j] + 1 if x == y else max(dp[i][j + 1], dp[i + 1][j])
    return dp[-1][-1]


def test_rouge_l_equals_library_and_lcs_formula():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    lib = sum(scorer.score(r[0], h)["rougeL"].fmeasure for h, r in zip(HYPS, REFS)) / len(HYPS)
    # no word here changes under the Porter stemmer except plural/verb forms absent from both
    hand = []
    for h, (r,) in zip(HYPS, REFS):
        lcs = _lcs(h.split(), r.split())
        p, rec = lcs / len(h.split()), lcs / len(r.split())
        hand.append(2 * p * rec / (p + rec) if lcs else 0.0)
    ours = T.rouge_l(HYPS, REFS)
    assert ours == pytest.approx(lib, abs=1e-12)
    assert ours == pytest.approx(sum(hand) / len(hand), abs=1e-12)


def test_rouge_l_takes_the_best_reference():
    one = T.rouge_l(["a calm piano piece"], [["loud drums"]])
    best = T.rouge_l(["a calm piano piece"], [["loud drums", "a calm piano piece"]])
    assert one < 0.2 and best == pytest.approx(1.0)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 answers but 1"):
        T.bleu(["a", "b"], [["a"]])


def test_bertscore_with_a_local_tiny_bert(tmp_path):
    from bert_score import BERTScorer

    from llama.metrics.tiny_models import write_bert

    folder = write_bert(tmp_path / "bert")
    cfg = T.BertScoreConfig(folder, num_layers=2)
    ours = T.bertscore(HYPS, REFS, cfg)
    lib = BERTScorer(model_type=str(folder), num_layers=2).score(HYPS, [r[0] for r in REFS])
    assert ours["bertscore_f1"] == pytest.approx(float(lib[2].mean()), abs=1e-6)
    same = T.bertscore(HYPS, [[h] for h in HYPS], cfg)
    assert same["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)
    assert ours["bertscore_f1"] < same["bertscore_f1"]


def test_bertscore_layer_out_of_range_is_a_user_error(tmp_path):
    from llama.errors import UserError
    from llama.metrics.tiny_models import write_bert

    folder = write_bert(tmp_path / "bert")
    with pytest.raises(UserError, match="--bert-layers 5: .* has 2 layers"):
        T.bertscore(HYPS, REFS, T.BertScoreConfig(folder, num_layers=5))
