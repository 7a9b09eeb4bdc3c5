"""Music decoders: turn the output projector's conditioning into a waveform."""
from __future__ import annotations

import math

from ..errors import UserError


class DecoderError(UserError, ValueError):
    """A decoder folder or a render request is unusable; the message says which and why."""


def duration_samples(duration: float, sampling_rate: int) -> int:
    """Samples in `duration` seconds at `sampling_rate` (at least one); DecoderError unless a
    positive finite number of seconds."""
    try:
        seconds = float(duration)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds <= 0:
        raise DecoderError(f"duration must be a positive number of seconds, got {duration!r}")
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


__all__ = ["DecoderError", "MusicGenDecoder", "AudioLDM2Decoder", "load_decoder", "DECODERS"]
