"""The evaluations behind each `evaluate.py` subcommand: answers (text) and music (audio).

Each returns a report dict: "metrics" {name: number}, "n" per metric family, "skipped" (what
was left out and why, listed), "unavailable" {metric: reason} for metrics that could not be
computed (no model folder given, no WordNet, too few clips), and "models" (the folders used).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import text as T
from .audio import AudioConfig, AudioModel, clap_score, kl_divergence
from .frechet import frechet_distance
from .inputs import Results, match


def _skips(results: Results, matched) -> dict:
    return {"failed_requests": results.failed, "unreadable_result_lines": results.bad_lines,
            "not_in_references": matched.not_in_references, "not_answered": matched.not_answered}


@dataclass
class AnswerOptions:
    bert_dir: Path | None = None
    bert_layers: int | None = None
    wordnet_dir: Path | None = None
    device: str = "cpu"
    batch_size: int = 32


def evaluate_answers(results: Results, refs: dict[str, list[str]], opt: AnswerOptions) -> dict:
    m = match(results.answers, refs)
    report = {"task": "answers", "n": len(m.ids), "metrics": {}, "unavailable": {}, "models": {},
              "skipped": _skips(results, m)}
    if not m.ids:
        report["unavailable"]["all"] = "no answered id has a reference"
        return report
    hyps, rs = [results.answers[i] for i in m.ids], [refs[i] for i in m.ids]
    report["metrics"].update(T.bleu(hyps, rs))
    from .wordnet import WordNetUnavailable, find_wordnet, open_wordnet
    try:
        wn = open_wordnet(opt.wordnet_dir)
        report["metrics"]["meteor"] = T.meteor(hyps, rs, wn)
        report["models"]["wordnet"] = str(find_wordnet(opt.wordnet_dir))
    except WordNetUnavailable as e:
        report["unavailable"]["meteor"] = str(e)
    report["metrics"]["rouge_l"] = T.rouge_l(hyps, rs)
    if opt.bert_dir is None:
        report["unavailable"]["bertscore"] = "no --bert-dir (a local BERT-like model folder, e.g. roberta-large)"
    else:
        cfg = T.BertScoreConfig(Path(opt.bert_dir), opt.bert_layers, opt.batch_size, opt.device)
        report["metrics"].update(T.bertscore(hyps, rs, cfg))
        report["models"]["bertscore"] = str(opt.bert_dir)
    return report


@dataclass
class MusicOptions:
    embed_dir: Path | None = None        # FAD embeddings
    embed_kind: str = "clap"             # clap | audio
    classifier_dir: Path | None = None   # KL (AST)
    clap_dir: Path | None = None         # CLAP text-audio score
    audio: AudioConfig = field(default_factory=AudioConfig)


def evaluate_music(results: Results, ref_by_id: dict[str, Path], ref_set: list[Path],
                   captions: dict[str, list[str]] | None, opt: MusicOptions, paired_only: bool = False) -> dict:
    """FAD (generated set vs reference set), KL (generated vs the reference of the same id), CLAP
    score (generated vs the caption of the same id). `paired_only`: FAD on the paired clips only."""
    from .models import check_kind

    for folder, kind in ((opt.embed_dir, opt.embed_kind), (opt.classifier_dir, "ast"), (opt.clap_dir, "clap")):
        if folder is not None:
            check_kind(folder, kind)            # a wrong folder is an error even when it goes unused
    m = match(results.wavs, ref_by_id)
    report = {"task": "music", "n": {"generated": len(results.wavs), "paired": len(m.ids)}, "metrics": {},
              "unavailable": {}, "models": {}, "skipped": _skips(results, m)}
    report["skipped"]["unreadable_clips"] = {}
    gen_files = [results.wavs[i] for i in (m.ids if paired_only else results.wavs)]
    ref_files = [ref_by_id[i] for i in m.ids] if paired_only else ref_set

    def absorb(vecs):
        report["skipped"]["unreadable_clips"].update(vecs.skipped)
        return vecs.by_file

    if opt.embed_dir is None:
        report["unavailable"]["fad"] = "no --embed-model (a CLAP or MERT-like audio encoder folder)"
    else:
        emb = AudioModel(opt.embed_dir, opt.embed_kind, opt.audio)
        g, r = absorb(emb.vectors(gen_files, "generated")), absorb(emb.vectors(ref_files, "references"))
        report["models"]["fad"] = f"{opt.embed_dir} ({opt.embed_kind})"
        report["n"]["fad"] = {"generated": len(g), "references": len(r)}
        if len(g) < 2 or len(r) < 2:
            report["unavailable"]["fad"] = f"needs 2+ readable clips per side (have {len(g)} and {len(r)})"
        else:
            report["metrics"]["fad"] = frechet_distance(np.stack(list(g.values())), np.stack(list(r.values())))
    if opt.classifier_dir is None:
        report["unavailable"]["kl"] = "no --classifier (an ASTForAudioClassification folder)"
    elif not m.ids:
        report["unavailable"]["kl"] = "no generated clip has a reference clip of the same id"
    else:
        cls = AudioModel(opt.classifier_dir, "ast", opt.audio)
        g = absorb(cls.vectors([results.wavs[i] for i in m.ids], "generated"))
        r = absorb(cls.vectors([ref_by_id[i] for i in m.ids], "references"))
        pairs = [i for i in m.ids if results.wavs[i] in g and ref_by_id[i] in r]
        report["models"]["kl"] = str(opt.classifier_dir)
        report["n"]["kl"] = len(pairs)
        if pairs:
            kl = kl_divergence(np.stack([r[ref_by_id[i]] for i in pairs]), np.stack([g[results.wavs[i]] for i in pairs]))
            report["metrics"]["kl"] = float(kl.mean())
        else:
            report["unavailable"]["kl"] = "no readable pair of clips"
    with_caption = [i for i in results.wavs if captions and i in captions]
    if opt.clap_dir is None:
        report["unavailable"]["clap_score"] = "no --clap (a CLAP model folder)"
    elif not with_caption:
        report["unavailable"]["clap_score"] = "no generated clip has a caption (--captions)"
    else:
        clap = AudioModel(opt.clap_dir, "clap", opt.audio, with_tokenizer=True)
        g = absorb(clap.vectors([results.wavs[i] for i in with_caption], "generated"))
        ids = [i for i in with_caption if results.wavs[i] in g]
        report["models"]["clap_score"] = str(opt.clap_dir)
        report["n"]["clap_score"] = len(ids)
        if ids:
            text = clap.text_vectors([captions[i][0] for i in ids])
            report["metrics"]["clap_score"] = float(clap_score(np.stack([g[results.wavs[i]] for i in ids]), text).mean())
        else:
            report["unavailable"]["clap_score"] = "no readable generated clip"
    return report
