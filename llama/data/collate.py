"""Samples -> token ids and labels -> padded batches.

Layout of one sample (Alpaca template, as the published model and `llama.pipeline` prompt):

    BOS format_prompt(q1) | a1 EOS | "\\n\\n### Instruction:\\n{q2}\\n\\n### Response:" | a2 EOS | ...
    <------ masked -----> <labels>  <--------------------- masked ---------------->  <labels>

Each piece is tokenized on its own, so the first-turn prompt is exactly what inference feeds
(`tokenizer.encode(format_prompt(q), bos=True)`). Labels are aligned with tokens
(labels[i] = tokens[i] on answer positions, -100 elsewhere); the model shifts them itself.

Truncation (longer than max_len): tokens are cut from the end. A cut inside a later turn's
instruction drops that instruction too (no prompt without an answer is left behind); a cut inside
an answer keeps its start. A sample is rejected (None) when no token of the first answer would be
left or when its [AUD0..7] run would be cut or lost.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .formats import Sample

IGNORE = -100
CONTINUATION = "\n\n### Instruction:\n{instruction}\n\n### Response:"


@dataclass
class EncodedSample:
    tokens: list[int]
    labels: list[int]              # IGNORE on prompt positions, = tokens on answer + EOS positions
    aud_positions: list[int]       # indices in tokens of [AUD0]..[AUD7] (the last run), or []
    id: str
    target_caption: str | None = None
    sample: Sample | None = field(default=None, repr=False)


def _prompt_tokens(text: str, tokenizer) -> list[int]:
    """A masked continuation piece, without the lone "▁" that sentencepiece's dummy prefix puts
    before a leading newline (whole-string tokenization would not have it)."""
    ids = tokenizer.encode(text, bos=False)
    sp = getattr(tokenizer, "sp", None)
    if (ids and sp is not None and text[:1].isspace() and not text.startswith(" ")
            and ids[0] < sp.GetPieceSize() and sp.IdToPiece(ids[0]) == "\u2581"):
        ids = ids[1:]
    return ids


def _find_aud_run(tokens: list[int], aud_ids: list[int]) -> list[int]:
    """Positions of the last complete, consecutive [AUD0..n-1] run, or []."""
    n = len(aud_ids)
    for start in range(len(tokens) - n, -1, -1):
        if tokens[start] == aud_ids[0] and tokens[start:start + n] == aud_ids:
            return list(range(start, start + n))
    return []


def encode_sample(sample: Sample, tokenizer, max_len: int) -> EncodedSample | None:
    """Token ids and labels of one sample, or None when truncation to max_len would lose its
    first answer or its [AUD] run (the caller counts those)."""
    from ..tokenizer import format_prompt

    if not sample.turns:
        raise ValueError(f"{sample.id}: a sample needs at least one (instruction, answer) turn")
    tokens: list[int] = []
    labels: list[int] = []
    spans = []  # (prompt_start, answer_start) per turn
    for k, (question, answer) in enumerate(sample.turns):
        if k == 0:
            prompt = tokenizer.encode(format_prompt(question), bos=True)
        else:
            prompt = _prompt_tokens(CONTINUATION.format(instruction=question), tokenizer)
        reply = tokenizer.encode(answer, bos=False, eos=True)
        spans.append((len(tokens), len(tokens) + len(prompt)))
        tokens += prompt + reply
        labels += [IGNORE] * len(prompt) + reply

    # Only samples that write music (a target caption for the bridge loss) get [AUD] positions.
    aud = _find_aud_run(tokens, list(tokenizer.aud_ids)) if sample.target_caption is not None else []
    if sample.target_caption is not None and not aud:
        raise ValueError(f"{sample.id}: writes music (target_caption set) but its answer has no "
                         f"{''.join(tokenizer.aud_tokens)} run")
    if len(tokens) > max_len:
        cut = max_len
        if spans[0][1] >= cut or (aud and aud[-1] >= cut):
            return None
        for prompt_start, answer_start in spans[1:]:
            if prompt_start < cut <= answer_start:  # would keep an instruction without answer
                cut = prompt_start
        tokens, labels = tokens[:cut], labels[:cut]
    return EncodedSample(tokens, labels, aud, sample.id, sample.target_caption, sample)


def encode_samples(samples: list[Sample], tokenizer, max_len: int
                   ) -> tuple[list[EncodedSample], list[str]]:
    """encode_sample over a list: (encoded, ids of the samples rejected as too long)."""
    kept, rejected = [], []
    for s in samples:
        e = encode_sample(s, tokenizer, max_len)
        if e is None:
            rejected.append(s.id)
        else:
            kept.append(e)
    return kept, rejected


def collate(encoded: list[EncodedSample], pad_id: int = 0, n_aud: int | None = None) -> dict:
    """Right-padded batch:
        tokens (B, S) long, labels (B, S) long (IGNORE on padding), key_mask (B, S) bool (True on
        real tokens), aud_positions (B, n_aud) long (-1 rows for samples that write no music),
        ids, target_captions (None for samples without music), samples (the Sample of each, or
        None).
    n_aud defaults to the length of the samples' AUD runs, else 8.
    """
    if not encoded:
        raise ValueError("collate needs at least one sample")
    if n_aud is None:
        n_aud = next((len(e.aud_positions) for e in encoded if e.aud_positions), 8)
    B, S = len(encoded), max(len(e.tokens) for e in encoded)
    tokens = torch.full((B, S), pad_id, dtype=torch.long)
    labels = torch.full((B, S), IGNORE, dtype=torch.long)
    key_mask = torch.zeros((B, S), dtype=torch.bool)
    aud = torch.full((B, n_aud), -1, dtype=torch.long)
    for b, e in enumerate(encoded):
        n = len(e.tokens)
        tokens[b, :n] = torch.tensor(e.tokens, dtype=torch.long)
        labels[b, :n] = torch.tensor(e.labels, dtype=torch.long)
        key_mask[b, :n] = True
        if e.aud_positions:
            if len(e.aud_positions) != n_aud:
                raise ValueError(f"{e.id}: {len(e.aud_positions)} [AUD] positions, expected {n_aud}")
            aud[b] = torch.tensor(e.aud_positions, dtype=torch.long)
    return {"tokens": tokens, "labels": labels, "key_mask": key_mask, "aud_positions": aud,
            "ids": [e.id for e in encoded],
            "target_captions": [e.target_caption for e in encoded],
            "samples": [e.sample for e in encoded]}
