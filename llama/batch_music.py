"""Rendering the music of a window of batched answers: few decoder calls, each row what it gets alone.

Plain music (no audio input) renders in calls of up to `max_rows` rows per (duration, guidance).
Edits (music with an audio input and an edit mode) render through the decoder `edit_decoder`
picks: those that continue (`prompt`) or follow (`melody`) a source batch together when their
sources have one length (a dataset's clips often do), since a batch of sources of one length
needs no padding; `init` edits and sources of other lengths render alone, exactly as
`MuMuPipeline.answer` renders them. Each row's noise comes from its request's seed and MusicGen's
codec decodes row by row, so a row's samples are the ones it gets alone. A failure in a batched
call is found by rendering its rows alone, so it does not sink the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import UserError
from .media import load_audio
from .pipeline import Answer

BATCHED_EDITS = {"prompt": "audio_prompt", "melody": "melody"}    # edit mode -> render_projected kwarg


@dataclass
class PendingMusic:
    """A music answer whose audio is still to render: batched with others by `render_pending`."""

    key: object                             # the caller's name for the slot (a list index)
    answer: Answer
    cond: torch.Tensor                      # (cond_tokens, C), already divided by the bridge scale
    duration: float
    guidance: float | None
    seed: int
    source: str | None = None               # the request's audio: the source of an edit
    edit: dict = field(default_factory=dict)    # edit_mode, edit_strength


def render_pending(pipe, pending: list[PendingMusic], max_rows: int) -> dict:
    """Render the pending music answers, at most `max_rows` per decoder call. Returns
    {key: UserError} for the answers that failed."""
    failed: dict = {}
    groups: dict[tuple, list[tuple[PendingMusic, np.ndarray | None]]] = {}
    for m in pending:
        if m.source is None or m.edit.get("edit_mode", "none") == "none":
            groups.setdefault((pipe.decoder(), None, m.duration, m.guidance, 0), []).append((m, None))
            continue
        try:
            decoder, mode = pipe.edit_decoder(m.edit["edit_mode"])
            if mode not in BATCHED_EDITS:
                _alone(pipe, m, failed)
                continue
            source = load_audio(m.source, decoder.sampling_rate)
        except UserError as e:
            failed[m.key] = e
            continue
        groups.setdefault((decoder, mode, m.duration, m.guidance, len(source)), []).append((m, source))
    for (decoder, mode, duration, guidance, _), items in groups.items():
        for start in range(0, len(items), max_rows):
            _render_chunk(pipe, decoder, mode, duration, guidance, items[start:start + max_rows], failed)
    return failed


def _render_chunk(pipe, decoder, mode, duration, guidance, chunk, failed: dict) -> None:
    t0 = time.perf_counter()
    kwargs = {} if guidance is None else {"guidance_scale": guidance}
    if mode is not None:
        kwargs[BATCHED_EDITS[mode]] = np.stack([source for _, source in chunk])       # (B, T)
    conds = torch.stack([m.cond for m, _ in chunk])                                  # (B, N, C)
    try:
        waves = decoder.render_projected(conds, duration=duration, seeds=[m.seed for m, _ in chunk], **kwargs)
    except UserError as e:
        if len(chunk) == 1:
            failed[chunk[0][0].key] = e
            return
        for m, _ in chunk:                               # find out which request it was: alone
            _alone(pipe, m, failed)
        return
    for j, (m, _) in enumerate(chunk):
        m.answer.audio, m.answer.sample_rate = waves[j], decoder.sampling_rate
        m.answer.timings["render_s"] = time.perf_counter() - t0
        m.answer.timings["render_batch"] = len(chunk)


def _alone(pipe, m: PendingMusic, failed: dict) -> None:
    """One answer's music exactly as `MuMuPipeline.answer` renders it for the request alone."""
    t0 = time.perf_counter()
    try:
        m.answer.audio, m.answer.sample_rate = pipe.render_music(
            m.cond, m.duration, m.seed, m.guidance, m.source if m.edit.get("edit_mode", "none") != "none" else None,
            **m.edit)
    except UserError as e:
        failed[m.key] = e
        return
    m.answer.timings["render_s"] = time.perf_counter() - t0
    m.answer.timings["render_batch"] = 1
