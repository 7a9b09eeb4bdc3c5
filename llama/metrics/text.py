"""Text metrics of the MusicQA tables (BLEU-1..4, METEOR, ROUGE-L, BERTScore), computed by the
maintained libraries themselves so the numbers are the libraries' numbers, not ours.

- BLEU-n: sacrebleu corpus BLEU with `max_ngram_order=n` (13a tokenizer, lower-cased, exp
  smoothing), divided by 100 so it reads like the papers (0..1).
- ROUGE-L: rouge-score F-measure per answer (stemmed), max over references, mean over answers.
- METEOR: nltk `meteor_score` per answer, mean; needs a WordNet folder (see `wordnet.py`).
- BERTScore: bert-score F1, mean, with a local model folder and a chosen layer.
Each takes `hyps: list[str]` and `refs: list[list[str]]` (one or more references per answer).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llama.errors import UserError


def _check(hyps: list[str], refs: list[list[str]]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} answers but {len(refs)} reference lists")
    if any(not r for r in refs):
        raise ValueError("every answer needs at least one reference")


def _ref_streams(refs: list[list[str]]) -> list[list[str]]:
    """sacrebleu wants one stream per reference slot; answers with fewer references repeat their
    first one there would bias BLEU, so short lists are padded with None... which sacrebleu does
    not accept: pad with the answer's last reference (max-over-references semantics hold)."""
    width = max(len(r) for r in refs)
    return [[r[min(i, len(r) - 1)] for r in refs] for i in range(width)]


def bleu(hyps: list[str], refs: list[list[str]], max_order: int = 4) -> dict[str, float]:
    """{"bleu_1": .., ..., "bleu_N": ..} in 0..1 (cumulative BLEU-n, as the papers report)."""
    from sacrebleu.metrics import BLEU

    _check(hyps, refs)
    streams = _ref_streams(refs)
    return {f"bleu_{n}": BLEU(max_ngram_order=n, lowercase=True).corpus_score(hyps, streams).score / 100.0
            for n in range(1, max_order + 1)}


def rouge_l(hyps: list[str], refs: list[list[str]]) -> float:
    from rouge_score import rouge_scorer

    _check(hyps, refs)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    best = [max(scorer.score(r, h)["rougeL"].fmeasure for r in rs) for h, rs in zip(hyps, refs)]
    return sum(best) / len(best) if best else float("nan")


def meteor(hyps: list[str], refs: list[list[str]], wordnet) -> float:
    """Mean nltk METEOR; texts are lower-cased and split on word boundaries (nltk wants tokens)."""
    from nltk.translate.meteor_score import meteor_score

    _check(hyps, refs)
    scores = [meteor_score([tokens(r) for r in rs], tokens(h), wordnet=wordnet) for h, rs in zip(hyps, refs)]
    return sum(scores) / len(scores) if scores else float("nan")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens (nltk's regexp tokenizer: no punkt data needed)."""
    from nltk.tokenize import wordpunct_tokenize

    return wordpunct_tokenize(text.lower())


@dataclass
class BertScoreConfig:
    model_dir: Path
    num_layers: int | None = None    # None: the model's last layer
    batch_size: int = 32
    device: str = "cpu"


def bertscore(hyps: list[str], refs: list[list[str]], cfg: BertScoreConfig) -> dict[str, float]:
    """Mean BERTScore P/R/F1 (max over references, as bert-score does for lists)."""
    from bert_score import BERTScorer

    from .models import check_folder, read_config

    _check(hyps, refs)
    folder = check_folder(cfg.model_dir, "BERTScore text encoder")
    conf = read_config(folder, "BERTScore text encoder")
    depth = conf.get("num_hidden_layers") or conf.get("n_layer") or conf.get("num_layers")
    if not isinstance(depth, int):
        raise UserError(f"{folder}: config.json has no layer count; expected a BERT-like text encoder folder")
    layers = cfg.num_layers or depth
    if not 1 <= layers <= depth:
        raise UserError(f"--bert-layers {layers}: {folder} has {depth} layers")
    scorer = BERTScorer(model_type=str(folder), num_layers=layers, batch_size=cfg.batch_size, device=cfg.device)
    p, r, f = scorer.score(hyps, refs)                  # each (N,)
    return {"bertscore_p": float(p.mean()), "bertscore_r": float(r.mean()), "bertscore_f1": float(f.mean())}
