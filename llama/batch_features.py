"""Encoder features for a batch of requests: media read per request, each encoder run once over
the batch's media of its kind.

Why: an encoder call has a fixed cost (Python, dispatch, and on a GPU a batch of B costs about
one), so B requests should not pay it B times. Images and videos always batch (the processors
resize them to the encoder's size); audio clips batch when they have one length, as a dataset's
clips often do (MERT is run without padding, so nothing is masked), and are encoded alone
otherwise. A request's features equal its own up to fp32 rounding of the batched products, and a
file that cannot be read, or a clip the encoder refuses, fails its own request only.
"""
from __future__ import annotations

import time

import torch

from .errors import UserError
from .media import load_audio, load_image, load_video
from .mumu_llama import MODALITIES


def _load(pipe, kind: str, path):
    if kind == "audio":
        return load_audio(path, pipe.encoder("audio").sampling_rate)
    if kind == "image":
        return load_image(path)
    return load_video(path, pipe.encoder("video").num_frames)


def _encode(pipe, kind: str, items: list) -> list[torch.Tensor]:
    """items of one kind -> one feature tensor each, without batch axis."""
    enc = pipe.encoder(kind)
    if kind == "audio":
        return enc.encode_batch(items)                       # each (L+1, frames, width)
    return list(enc.encode(items))                           # each (tokens, width)


def batch_features(pipe, media: list[dict]) -> tuple[list[dict | UserError], list[float]]:
    """media[i] = {modality: path or None} -> (per request: {modality: features (1, ...)} on the
    pipeline's device and dtype, or the UserError it failed with; seconds spent on each request,
    a batched encoder call shared out evenly)."""
    out: list[dict | UserError] = [{} for _ in media]
    seconds = [0.0] * len(media)
    loaded: list[dict] = [{} for _ in media]
    for i, m in enumerate(media):
        t0 = time.perf_counter()
        try:
            for kind in MODALITIES:
                if m.get(kind) is not None:
                    loaded[i][kind] = _load(pipe, kind, m[kind])
        except UserError as e:
            out[i] = e
        seconds[i] += time.perf_counter() - t0
    for kind in MODALITIES:
        rows = [i for i in range(len(media)) if kind in loaded[i] and not isinstance(out[i], UserError)]
        if not rows:
            continue
        t0 = time.perf_counter()
        try:
            feats = _encode(pipe, kind, [loaded[i][kind] for i in rows])
        except UserError:
            feats = [None] * len(rows)                       # find the one it was: each alone
        share = (time.perf_counter() - t0) / len(rows)
        for j, i in enumerate(rows):
            t1 = time.perf_counter()
            try:
                f = feats[j] if feats[j] is not None else _encode(pipe, kind, [loaded[i][kind]])[0]
                out[i][kind] = f[None].to(pipe.device, pipe.dtype)
            except UserError as e:
                out[i] = e
            seconds[i] += share + time.perf_counter() - t1
    return out, seconds
