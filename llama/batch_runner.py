"""Batched answering: many requests through one continuous-batching decoder and few music calls.

Why batch: a decode step reads every weight once whatever the batch, so B requests cost about
one on memory-bound hardware. The batch job (`run_in_order`) and the Python API (`answer_all`,
`MuMuPipeline.answer_batch`) feed one continuous-batching decoder (`llama.batch_stream`); each
request keeps its own sampling settings. Promise kept: a request's answer (tokens, WAV) is what
it gets alone, and a request that fails (corrupt media, too long) fails alone while its
batch-mates are answered.

Equality with one-at-a-time: the sampled token of a request comes from a generator seeded by that
request alone; the decoder draws each row's noise from the request's own seed. What remains is
fp32 rounding: the encoders (`batch_features`), the LLM and the decoder multiply B rows with
other kernels than one row (MKL picks them by size), about 1e-7 relative, which greedy argmax has
not felt in our tests.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError
from .request_schema import Request, check_against


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


def answer_all(pipe, requests: list[Request], batch_size: int | None = None, decode_step=None) -> list:
    """Requests -> an Answer or the UserError it failed with, per request in order, through the
    batch job's own path (`llama.batch_stream`), `batch_size` rows at a time (default: all)."""
    from .batch_stream import BatchStream

    out: list = [None] * len(requests)
    settings = BatchSettings(batch_size=batch_size or max(1, len(requests)), decode_step=decode_step)

    def keep(index, req, result):
        out[index] = result

    BatchStream(list(enumerate(requests)), lambda: pipe, settings, keep).run()
    return out


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
                res = _answer_alone(get_pipe(), req, settings.decode_step)
            except UserError as e:
                res = e
        emit(rid, req, res)
        if progress is not None:
            progress.update(1)


def _answer_alone(pipe, req: Request, decode_step):
    """--batch-size 1: `pipe.answer`, the one-request path, exactly as before batching existed."""
    step = {} if decode_step is None else {"decode_step": decode_step}
    return pipe.answer(req.prompt, **req.media(), **req.gen_kwargs(), **req.edit_kwargs(), **step)
