"""The batch job with `--batch-size N > 1`: one decoder fed across the whole job.

Why: a decoder that ends with each window idles its rows while the window's last answers finish
(about 10 % more forward passes on 128 world requests in windows of 32). Here requests are taken
in input order, N at a time (their media read and encoded together), and submitted to one
continuous-batching `llama.generation.Decoder` whenever fewer than N wait; its rows never wait
for a window to end. Answers are emitted in input order as soon as all before them are; music
answers wait until N are pending (or nothing else runs) and then render together, up to N rows
per decoder call. At most `window` requests are taken ahead of the first unwritten one, which
bounds memory and what a kill can lose.
"""
from __future__ import annotations

import torch

from .batch_features import batch_features
from .batch_music import PendingMusic, render_pending
from .errors import UserError
from .generation import Decoder, room
from .mumu_llama import MODALITIES
from .pipeline import Answer, check_answer_settings
from .request_schema import check_against
from .tokenizer import format_prompt


class BatchStream:
    """todo: (id, Request or the RequestError it failed with), input order; emit(id, request,
    Answer | UserError) is called once per request, in input order."""

    def __init__(self, todo: list, get_pipe, settings, emit, progress=None):
        self.todo, self.get_pipe, self.settings, self.emit, self.progress = todo, get_pipe, settings, emit, progress
        self.B = settings.batch_size
        self.results: dict[int, object] = {}         # todo index -> Answer | UserError
        self.music: list[PendingMusic] = []           # key = todo index
        self.taken = 0                                # requests taken from todo
        self.written = 0                              # requests emitted
        self.decoder: Decoder | None = None

    @torch.inference_mode()
    def run(self) -> None:
        while self.written < len(self.todo):
            while self.taken < len(self.todo) and self._wants_more():
                self._take(self.todo[self.taken:self.taken + self.B])
            dec = self.decoder
            if dec is not None and (dec.waiting or dec.running):
                for p in dec.step():
                    self._finished(p)
            if self.music:
                self._render(self._to_render())
            self._emit_ready()

    # ------------------------------------------------------------------ intake
    def _wants_more(self) -> bool:
        """Take more when fewer than B wait, unless `window` requests are already taken ahead."""
        ahead = self.taken - self.written < self.settings.window
        return ahead and (self.decoder is None or len(self.decoder.waiting) < self.B)

    def _take(self, chunk: list) -> None:
        """Check, read and encode up to B requests together and submit them to the decoder."""
        start, live = self.taken, []
        self.taken += len(chunk)
        for i, (_, req) in enumerate(chunk, start):
            if isinstance(req, Exception):
                self.results[i] = req
                continue
            try:
                check_answer_settings(req.prompt, req.music, req.duration)
                check_against(self.get_pipe(), req)
            except UserError as e:
                self.results[i] = e
                continue
            live.append(i)
        if not live:
            return
        pipe = self.get_pipe()
        feats, seconds = batch_features(pipe, [self.todo[i][1].media() for i in live])
        ok = []
        for i, f, s in zip(live, feats, seconds):
            if isinstance(f, UserError):
                self.results[i] = f
            else:
                ok.append((i, self.todo[i][1], {k: v[0] for k, v in f.items()}, s))
        if ok:
            self._submit(pipe, ok)

    def _submit(self, pipe, ok: list) -> None:
        reqs = [r for _, r, _, _ in ok]
        ids = [pipe.tokenizer.encode(format_prompt(r.prompt), bos=True) for r in reqs]
        if self.decoder is None:
            self.decoder = self._decoder(pipe)
        feats = {m: [f.get(m) for _, _, f, _ in ok] for m in MODALITIES if any(m in f for _, _, f, _ in ok)}
        prefixes = pipe.model.prefix_inputs(len(ok), feats)
        prompts = self.decoder.prompts(
            ids, prefixes, [r.max_new_tokens for r in reqs], [r.music for r in reqs],
            [r.temperature for r in reqs], [r.top_p for r in reqs],
            [torch.Generator().manual_seed(r.seed) for r in reqs])
        for p, (i, _, _, s) in zip(prompts, ok):
            p.key = (i, s)                                   # todo index, seconds encoding it
        self.decoder.submit(prompts)

    def _decoder(self, pipe) -> Decoder:
        """One decoder for the job: rows with room for the largest prompt + answer among the
        requests that fit the context alone."""
        L = pipe.model.cfg.llama
        lengths, budgets = [], []
        for _, req in self.todo:
            if isinstance(req, Exception):
                continue
            n = len(pipe.tokenizer.encode(format_prompt(req.prompt), bos=True))
            if n + req.max_new_tokens + L.n_aud_tokens <= L.max_seq_len:
                lengths.append(n)
                budgets.append(req.max_new_tokens)
        capacity = room(lengths, budgets, L.n_aud_tokens, L.max_seq_len)
        w = pipe.model.prefix_query.weight
        return Decoder(pipe.model, self.B, capacity, pipe.tokenizer.eos_id, w.device, w.dtype,
                       decode_step=self.settings.decode_step)

    # ------------------------------------------------------------------ answers
    def _finished(self, p) -> None:
        pipe = self.get_pipe()
        i, encode_s = p.key
        req = self.todo[i][1]
        ans = Answer(pipe.tokenizer.decode(p.tokens).strip(), p.tokens)
        ans.timings = {"encode_s": encode_s, "generate_s": p.finished_s - p.started_s,
                       "new_tokens": len(p.tokens), "batch_size": self.B}
        self.results[i] = ans
        if len(p.aud_hidden) == pipe.model.cfg.llama.n_aud_tokens:
            cond = pipe.model.music_cond(torch.stack(p.aud_hidden)) / pipe.model.cfg.bridge_scale
            self.music.append(PendingMusic(i, ans, cond, req.duration, req.guidance_scale, req.seed, req.audio,
                                           req.edit_kwargs()))

    def _to_render(self) -> list[PendingMusic]:
        """The music to render now: everything when nothing else is decoding, or when the first
        unwritten answer waits for its music and no more requests may be taken; otherwise each
        kind (plain or edit mode, duration, guidance) that has a decoder call's worth, B rows."""
        dec = self.decoder
        idle = dec is None or not (dec.waiting or dec.running)
        full = self.taken - self.written >= self.settings.window      # no request may be taken
        blocked = full and self.written in {m.key for m in self.music}
        if idle or blocked:
            return self.music
        kinds: dict[tuple, list[PendingMusic]] = {}
        for m in self.music:
            mode = m.edit.get("edit_mode", "none") if m.source is not None else "none"
            kinds.setdefault((mode, m.duration, m.guidance), []).append(m)
        return [m for group in kinds.values() if len(group) >= self.B for m in group]

    def _render(self, pending: list[PendingMusic]) -> None:
        if not pending:
            return
        for key, err in render_pending(self.get_pipe(), pending, self.B).items():
            self.results[key] = err
        done = {id(m) for m in pending}
        self.music = [m for m in self.music if id(m) not in done]

    def _emit_ready(self) -> None:
        held = {m.key for m in self.music}
        while self.written in self.results and self.written not in held:
            rid, req = self.todo[self.written]
            self.emit(rid, req, self.results.pop(self.written))
            self.written += 1
            if self.progress is not None:
                self.progress.update(1)
