"""Music decoders: turn the output projector's conditioning into a waveform."""
from __future__ import annotations


class DecoderError(ValueError):
    """A decoder folder or a render request is unusable; the message says which and why."""


from .audioldm2 import AudioLDM2Decoder, build_tiny_audioldm2  # noqa: E402  (needs DecoderError)
from .musicgen import MusicGenDecoder, build_tiny_musicgen  # noqa: E402

DECODERS = {"musicgen": MusicGenDecoder, "audioldm2": AudioLDM2Decoder}


def load_decoder(name: str, folder, device="cpu", dtype=None):
    """The music decoder `name` ("musicgen" or "audioldm2") from its local folder."""
    import torch

    if name not in DECODERS:
        raise DecoderError(f"unknown music decoder {name!r} (choose from {', '.join(DECODERS)})")
    return DECODERS[name].from_pretrained(folder, device=device, dtype=dtype or torch.float32)


__all__ = ["DecoderError", "MusicGenDecoder", "build_tiny_musicgen", "AudioLDM2Decoder",
           "build_tiny_audioldm2", "load_decoder", "DECODERS"]
