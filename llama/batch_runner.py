"""Batched answering: many requests through one continuous-batching decoder and few music calls.

Why batch: a decode step reads every weight once whatever the batch, so B requests cost about
one on memory-bound hardware. `answer_group` (the Python API, `MuMuPipeline.answer_batch`) runs a
list of requests through one `generate(slots=B)`; the batch job (`run_in_order`) feeds one
decoder across the whole file (`llama.batch_stream`). Each request keeps its own sampling
settings. Promise kept: a request's answer (tokens, WAV) is what it gets alone, up to fp32
rounding inside the batched products (see `answer_group`), and a request that fails (corrupt
media, too long) fails alone while its batch-mates are answered.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .batch_features import batch_features
from .batch_music import PendingMusic, render_pending
from .errors import UserError
from .mumu_llama import MODALITIES
from .pipeline import Answer, check_answer_settings
from .request_schema import Request, check_against
from .tokenizer import format_prompt


@dataclass
class BatchSettings:
    """`batch_size` rows decode at once (and each encoder and music call takes up to that many);
    at most `window` requests are taken ahead of the first unwritten one, so results are written
    in input order without holding the whole file."""

    batch_size: int = 1
    window_batches: int = 4
    decode_step: object | None = None      # llama.compiled_decode.CompiledDecode, or None = eager

    @property
    def window(self) -> int:
        return self.batch_size * self.window_batches


@dataclass
class _Live:
    index: int                              # position in the group
    req: Request
    ids: list[int]
    feats: dict = field(default_factory=dict)   # modality -> encoder features without batch axis
    encode_s: float = 0.0


def answer_group(pipe, reqs: list[Request], decode_step=None,
                 music: list[PendingMusic] | None = None, slots: int | None = None) -> list[Answer | UserError]:
    """Answer requests in one `generate()`, `slots` rows at a time (default: all at once), each
    with its own sampling settings, encoders `slots` requests per call; a UserError in a slot is
    that request's failure. With a `music` list, music answers are appended to it (key = their
    index in the returned list) for `render_pending` instead of being rendered here, so that the
    decoder renders music from several batches in one call.

    Equality with one-at-a-time: the sampled token of row b comes from a generator seeded by that
    request alone; the decoder draws each row's noise from the request's own seed. What remains
    is fp32 rounding: the encoders (`batch_features`), the LLM and the decoder multiply B rows
    with other kernels than one row (MKL picks them by size), about 1e-7 relative, which greedy
    argmax has not felt in our tests.
    """
    out: list[Answer | UserError | None] = [None] * len(reqs)
    live: list[_Live] = []
    checked = []
    for i, req in enumerate(reqs):
        try:
            check_answer_settings(req.prompt, req.music, req.duration)
            check_against(pipe, req)              # fits the context alone, music fits the decoder
            checked.append(i)
        except UserError as e:
            out[i] = e
    chunk = slots or max(1, len(checked))
    feats, seconds = [], []
    for at in range(0, len(checked), chunk):
        f, s = batch_features(pipe, [reqs[i].media() for i in checked[at:at + chunk]])   # each (1, ...)
        feats += f
        seconds += s
    for i, f, s in zip(checked, feats, seconds):
        if isinstance(f, UserError):
            out[i] = f
            continue
        ids = pipe.tokenizer.encode(format_prompt(reqs[i].prompt), bos=True)
        live.append(_Live(i, reqs[i], ids, {k: v[0] for k, v in f.items()}, s))
    if live:
        pending = _generate(pipe, live, out, decode_step, slots)
        if music is not None:
            music.extend(pending)
        else:
            for key, err in render_pending(pipe, pending, slots or max(1, len(pending))).items():
                out[key] = err
    return out


def _generate(pipe, live: list[_Live], out: list, decode_step, slots: int | None) -> list[PendingMusic]:
    feats = {m: [x.feats.get(m) for x in live] for m in MODALITIES if any(m in x.feats for x in live)}
    t0 = time.perf_counter()
    result = pipe.model.generate(
        [x.ids for x in live], feats, max_new_tokens=[x.req.max_new_tokens for x in live],
        temperature=[x.req.temperature for x in live], top_p=[x.req.top_p for x in live],
        eos_id=pipe.tokenizer.eos_id,
        force_music=[x.req.music for x in live],
        generator=[torch.Generator().manual_seed(x.req.seed) for x in live], decode_step=decode_step,
        slots=slots)
    gen_s = time.perf_counter() - t0
    answers = []
    for b, x in enumerate(live):
        ans = Answer(pipe.tokenizer.decode(result.tokens[b]).strip(), result.tokens[b])
        ans.timings = {"encode_s": x.encode_s, "generate_s": gen_s, "new_tokens": len(result.tokens[b]),
                       "batch_size": min(len(live), slots or len(live))}
        answers.append(ans)
        out[x.index] = ans
    return [PendingMusic(x.index, answers[b], result.music_cond[b] / pipe.model.cfg.bridge_scale,
                         x.req.duration, x.req.guidance_scale, x.req.seed, x.req.audio, x.req.edit_kwargs())
            for b, x in enumerate(live) if result.music_cond[b] is not None]


def run_in_order(todo: list[tuple[str, object]], get_pipe, settings: BatchSettings, emit, progress=None) -> None:
    """Answer `todo` ((id, Request or the RequestError it failed with), input order) and call
    emit(id, request, Answer | UserError) in input order, each as soon as all before it are.

    Batch size 1 answers one request at a time through `pipe.answer`; larger batches go through
    one continuous-batching decoder fed across the whole job (`llama.batch_stream`), at most
    `settings.window` requests ahead of the first unwritten one, so a kill loses at most that.
    """
    from .batch_stream import BatchStream

    if settings.batch_size > 1:
        BatchStream(todo, get_pipe, settings, emit, progress).run()
        return
    for rid, req in todo:
        res = req
        if not isinstance(req, Exception):
            try:
                check_against(get_pipe(), req)
                res = _answer_alone(get_pipe(), req, settings.decode_step)[0]
            except UserError as e:
                res = e
        emit(rid, req, res)
        if progress is not None:
            progress.update(1)


def _answer_alone(pipe, req: Request, decode_step) -> list:
    """--batch-size 1: `pipe.answer`, the one-request path, exactly as before batching existed."""
    step = {} if decode_step is None else {"decode_step": decode_step}
    try:
        return [pipe.answer(req.prompt, **req.media(), **req.gen_kwargs(), **req.edit_kwargs(), **step)]
    except UserError as e:
        return [e]
