"""What a request may say, checked before any work starts.

One schema for the CLI options, each line of a batch file and the demo: every field has a type
and a range, so a wrong type fails that request alone with a one-line reason instead of
aborting a batch mid-way or being coerced silently (`bool("false")` is True). Unknown fields are
errors: a typo such as "durration" would otherwise fall back to the default unnoticed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import UserError, one_line

MEDIA_KEYS = ("audio", "image", "video")
MAX_PROMPT_CHARS = 200_000          # far beyond any context; bounds the tokenizer's work
MAX_NEW_TOKENS = 100_000
MAX_SEED = 2**63 - 1


class RequestError(UserError):
    """A request field has the wrong type or range; the message names the field."""


def _shown(value) -> str:
    return one_line(repr(value), 60)


def number(name: str, value, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False):
    """`value` as a finite int/float within [lo, hi] ((lo, hi] with lo_open); bools refused."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise RequestError(f"{name} must be {kind}, got {_shown(value)}")
    if not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {_shown(value)}")
    if value < lo or (lo_open and value == lo) or value > hi:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise RequestError(f"{name} must be {low} and <= {hi:g}, got {_shown(value)}")
    return int(value) if integer else float(value)


def max_duration_s() -> float:
    from .decoders import MAX_DURATION_S
    return MAX_DURATION_S


EDIT_MODES = ("auto", "prompt", "melody", "init", "none")      # = llama.long_music.EDIT_MODES (a test pins it)


def choice(name: str, value, allowed: tuple) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise RequestError(f"{name} must be one of {', '.join(allowed)}, got {_shown(value)}")
    return value


CHECKS = {
    "duration": lambda v: number("duration", v, 0, max_duration_s(), lo_open=True),
    "max_new_tokens": lambda v: number("max_new_tokens", v, 0, MAX_NEW_TOKENS, integer=True),
    "temperature": lambda v: number("temperature", v, 0, 100),
    "top_p": lambda v: number("top_p", v, 0, 1, lo_open=True),
    "seed": lambda v: number("seed", v, 0, MAX_SEED, integer=True),
    "guidance_scale": lambda v: None if v is None else number("guidance_scale", v, 0, 100),
    "edit_mode": lambda v: choice("edit_mode", v, EDIT_MODES),
    "edit_strength": lambda v: number("edit_strength", v, 0, 1),
}


def text(name: str, value) -> str:
    """A non-blank string that is valid Unicode (no lone surrogates from undecodable bytes)."""
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string, got {_shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(f"{name} is not valid UTF-8 text (undecodable byte at character {e.start})") from None
    if not value.strip():
        raise RequestError(f"{name} is empty")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(f"{name} has {len(value)} characters (at most {MAX_PROMPT_CHARS})")
    return value


def media_path(name: str, value, base: Path | None) -> str | None:
    """None, or a usable path string (relative ones are taken from `base`)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"{name} must be a file path string, got {_shown(value)}")
    if "\0" in value:
        raise RequestError(f"{name} contains a NUL character")
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        raise RequestError(f"{name} is not a valid file name") from None
    if base is not None and not os.path.isabs(value):
        value = str(base / value)
    return value


@dataclass
class Request:
    id: str
    prompt: str
    audio: str | None = None
    image: str | None = None
    video: str | None = None
    music: bool = False
    duration: float = 5.0
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 0.9
    seed: int = 0
    guidance_scale: float | None = None
    edit_mode: str = "auto"             # music with an audio input: how the source conditions it
    edit_strength: float = 0.6          # edit_mode init (AudioLDM2): 0 the source .. 1 from scratch

    def media(self) -> dict:
        return {k: getattr(self, k) for k in MEDIA_KEYS}

    def gen_kwargs(self) -> dict:
        return dict(music=self.music, duration=self.duration, max_new_tokens=self.max_new_tokens,
                    temperature=self.temperature, top_p=self.top_p, seed=self.seed,
                    guidance_scale=self.guidance_scale)

    def edit_kwargs(self) -> dict:
        return dict(edit_mode=self.edit_mode, edit_strength=self.edit_strength)


FIELDS = tuple(f.name for f in fields(Request))
GEN_FIELDS = tuple(CHECKS) + ("music",)


def request_id(raw: dict, line: int) -> str:
    """The id as given (a string or an integer), else `line<N>`."""
    value = raw.get("id")
    if value is None:
        return f"line{line}"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(f"id must be a string or an integer, got {_shown(value)}")
    value = str(value)
    if not value.strip():
        raise RequestError("id is empty")
    if len(value) > 200:
        raise RequestError(f"id has {len(value)} characters (at most 200)")
    return value


def from_json(raw: dict, req_id: str, defaults: dict, base: Path | None) -> Request:
    """A checked Request from one batch line (its id already read); RequestError names the field."""
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise RequestError(f"unknown field {_shown(unknown[0])} (known: {', '.join(FIELDS)})")
    values = {"id": req_id, "prompt": text("prompt", raw.get("prompt"))}
    for k in MEDIA_KEYS:
        values[k] = media_path(k, raw.get(k), base)
    music = raw.get("music", defaults.get("music", False))
    if not isinstance(music, bool):
        raise RequestError(f"music must be true or false, got {_shown(music)}")
    values["music"] = music
    for k, check in CHECKS.items():
        if k in raw:
            if raw[k] is None and k != "guidance_scale":
                raise RequestError(f"{k} must not be null (leave it out for the default)")
            values[k] = check(raw[k])
        elif k in defaults:
            values[k] = defaults[k]
    return Request(**values)


def check_against(pipe, req: Request) -> None:
    """What needs the loaded model: the prompt fits the context; music fits the decoder."""
    from .decoders import max_duration
    from .tokenizer import format_prompt

    L = pipe.model.cfg.llama
    n_prompt = len(pipe.tokenizer.encode(format_prompt(req.prompt), bos=True))
    if n_prompt + req.max_new_tokens + L.n_aud_tokens > L.max_seq_len:
        raise RequestError(f"prompt of {n_prompt} tokens + max_new_tokens {req.max_new_tokens} exceeds "
                           f"the context of {L.max_seq_len} tokens")
    if req.music:
        limit = max_duration(pipe.decoder())
        if req.duration > limit:
            raise RequestError(f"duration {req.duration:g} s is longer than the {limit:.4g} s the "
                               f"{pipe.model.cfg.music_decoder} decoder can render")
