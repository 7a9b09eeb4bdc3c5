"""Music decoders: turn the output projector's conditioning into a waveform."""
from __future__ import annotations

import math

from ..errors import UserError


class DecoderError(UserError, ValueError):
    """A decoder folder or a render request is unusable; the message says which and why."""


# A sane cap for any decoder: both were trained on 10-30 s clips, and a render of minutes
# exhausts memory long before it finishes (1e9 s would ask for ~800 GB of samples).
MAX_DURATION_S = 120.0


def max_duration(decoder) -> float:
    """Longest clip `decoder` can render, in seconds: MAX_DURATION_S (MusicGen renders past its
    position table in overlapping windows, llama/long_music.py); else a MusicGen-like decoder's
    position table over its frame rate (2048 / 50 Hz ~ 41 s, less the codebook delay)."""
    if hasattr(decoder, "_audio_prompt"):
        return MAX_DURATION_S
    model_cfg = getattr(getattr(decoder, "model", None), "config", None)
    positions = getattr(getattr(model_cfg, "decoder", None), "max_position_embeddings", None)
    codebooks = getattr(getattr(model_cfg, "decoder", None), "num_codebooks", 0) or 0
    frame_rate = getattr(decoder, "frame_rate", None)
    if isinstance(positions, int) and isinstance(frame_rate, (int, float)) and frame_rate > 0:
        return min(MAX_DURATION_S, (positions - codebooks) / frame_rate)
    return MAX_DURATION_S


def duration_samples(duration: float, sampling_rate: int, max_seconds: float = MAX_DURATION_S) -> int:
    """Samples in `duration` seconds at `sampling_rate` (at least one); DecoderError unless a
    positive finite number of seconds no longer than `max_seconds`."""
    try:
        seconds = float(duration)
    except (TypeError, ValueError, OverflowError):
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds <= 0:
        raise DecoderError(f"duration must be a positive number of seconds, got {duration!r}")
    if seconds > max_seconds:
        raise DecoderError(f"duration {duration!r} s is longer than the {max_seconds:g} s the decoder can render")
    return max(1, round(seconds * sampling_rate))


from .audioldm2 import AudioLDM2Decoder  # noqa: E402  (needs DecoderError, duration_samples)
from .musicgen import MusicGenDecoder  # noqa: E402

DECODERS = {"musicgen": MusicGenDecoder, "audioldm2": AudioLDM2Decoder}


def load_decoder(name: str, folder, device="cpu", dtype=None):
    """The music decoder `name` ("musicgen" or "audioldm2") from its local folder."""
    import torch

    if name not in DECODERS:
        raise DecoderError(f"unknown music decoder {name!r} (choose from {', '.join(DECODERS)})")
    return DECODERS[name].from_pretrained(folder, device=device, dtype=dtype or torch.float32)


__all__ = ["DecoderError", "MAX_DURATION_S", "max_duration", "duration_samples", "MusicGenDecoder", "AudioLDM2Decoder", "load_decoder", "DECODERS"]
