"""Music decoders: turn the output projector's conditioning into a waveform."""
from __future__ import annotations


class DecoderError(ValueError):
    """A decoder folder or a render request is unusable; the message says which and why."""


from .musicgen import MusicGenDecoder, build_tiny_musicgen  # noqa: E402  (needs DecoderError)

DECODERS = {"musicgen": MusicGenDecoder}


def load_decoder(name: str, folder, device="cpu", dtype=None):
    """The music decoder `name` ("musicgen", ...) from its local folder."""
    import torch

    if name not in DECODERS:
        raise DecoderError(f"unknown music decoder {name!r} (choose from {', '.join(DECODERS)})")
    return DECODERS[name].from_pretrained(folder, device=device, dtype=dtype or torch.float32)


__all__ = ["DecoderError", "MusicGenDecoder", "build_tiny_musicgen", "load_decoder", "DECODERS"]
