"""MusicGen-Melody as the music decoder: conditioned on the projector output and on the chroma
(the melody) of a source clip, the way an edit keeps the source's notes while it follows the
instruction. Also the chroma and prefix builders that training a melody model uses, so that it
learns from exactly what `render` hands the model.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import one_line
from . import DecoderError
from .musicgen import _MusicGenCore


class MusicGenMelodyDecoder(_MusicGenCore):
    """A loaded MusicGen-Melody (transformers `MusicgenMelodyForConditionalGeneration`).

    MusicGen-Melody has no cross-attention: its decoder reads a prefix of `chroma_length` chroma
    frames (one-hot pitch class per frame, projected to the decoder width) followed by the text
    states (projected by `enc_to_dec_proj`). `render` builds that prefix itself from the
    projector output and the source's chroma, exactly as the model's generate does from T5 states
    and `input_features`, and hands it over as `encoder_hidden_states`. transformers' melody model
    has no audio-prompt continuation, so no windows: one pass, at most max_duration.
    """

    melody = True
    # MusicgenMelodyFeatureExtractor's defaults (preprocessor_config.json overrides them)
    n_fft, hop_length, chunk_length = 16384, 4096, 30

    def _read_chroma_settings(self, folder: Path) -> None:
        path = folder / "preprocessor_config.json"
        if not path.is_file():
            return
        try:
            cfg = json.loads(path.read_text())
            self.n_fft = int(cfg.get("n_fft", self.n_fft))
            self.hop_length = int(cfg.get("hop_length", self.hop_length))
            self.chunk_length = int(cfg.get("chunk_length", self.chunk_length))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
            raise DecoderError(one_line(f"{path}: unreadable ({e})")) from e

    def render_projected(self, projected: torch.Tensor, duration: float, **kwargs) -> np.ndarray:
        return self.render(projected, duration, **kwargs)

    def chroma(self, audio) -> torch.Tensor:
        """(B, T) waveform at `sampling_rate` -> (B, frames, num_chroma) one-hot chroma
        (`melody_chroma` with this folder's settings)."""
        return melody_chroma(audio, self.sampling_rate, self.n_fft, self.hop_length,
                             self.chunk_length, int(self.model.config.num_chroma))

    def _melody_inputs(self, hidden, mask, batch: int, guidance_scale: float, melody) -> dict:
        """generate() kwargs: the (chroma prefix, text states) sequence the melody decoder reads,
        built as the model's own `_prepare_encoder_hidden_states_kwargs_for_generation` builds it.
        hidden/mask are already doubled for guidance (real rows first, then the zero null rows)."""
        cfg = self.model.config
        if melody is None:                 # no source: the model's own "no melody" input
            audio = null_chroma(batch, cfg.num_chroma)
        else:
            audio = self.chroma(melody)                                     # (B, frames, 12)
            if audio.shape[0] != batch:
                raise DecoderError(f"melody audio for {audio.shape[0]} rows, batch {batch}")
        if guidance_scale > 1:
            audio = torch.cat([audio, null_chroma(batch, cfg.num_chroma, audio.shape[1])])
        states = melody_prefix(self.model, hidden, mask, audio.to(self.device, self.model.dtype))
        dummy = torch.full((batch, 1), -100, dtype=torch.long, device=self.device)
        return dict(inputs=dummy, encoder_hidden_states=states)


def null_chroma(batch: int, num_chroma: int = 12, frames: int = 1) -> torch.Tensor:
    """MusicGen-Melody's own "no melody" input: pitch class 0 on. (B, frames, num_chroma)"""
    audio = torch.zeros(batch, frames, num_chroma)
    audio[:, :, 0] = 1
    return audio


@torch.no_grad()
def melody_chroma(audio, sampling_rate: int, n_fft: int = 16384, hop_length: int = 4096,
                  chunk_length: int = 30, num_chroma: int = 12) -> torch.Tensor:
    """(B, T) waveform -> (B, frames, num_chroma) one-hot chroma, what transformers'
    MusicgenMelodyFeatureExtractor computes (its first `chunk_length` seconds; torchaudio's
    normalised power spectrogram, librosa's chroma filters, argmax per frame), written with
    torch.stft because that extractor needs torchaudio. Training a melody model uses it too, so
    the model learns from exactly what it is given at inference."""
    from transformers.audio_utils import chroma_filter_bank

    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    if wave.dim() == 1:
        wave = wave[None]
    if wave.dim() != 2 or wave.shape[-1] == 0:
        raise DecoderError(f"melody audio of shape {tuple(wave.shape)}: need (B, T > 0) samples "
                           f"at {sampling_rate} Hz")
    wave = wave[:, :chunk_length * sampling_rate]
    if wave.shape[-1] < n_fft:
        pad = n_fft - wave.shape[-1]
        wave = torch.nn.functional.pad(wave, (pad // 2, pad - pad // 2))
    window = torch.hann_window(n_fft)
    spec = torch.stft(wave, n_fft, hop_length, window=window, center=True,
                      pad_mode="reflect", return_complex=True)                 # (B, F, frames)
    power = (spec.abs() / window.pow(2).sum().sqrt()) ** 2
    filters = torch.from_numpy(chroma_filter_bank(sampling_rate=sampling_rate, num_frequency_bins=n_fft,
                                                  tuning=0, num_chroma=num_chroma)).float()
    raw = torch.einsum("cf,bft->btc", filters, power)                       # (B, frames, 12)
    norm = torch.nn.functional.normalize(raw, p=float("inf"), dim=-1, eps=1e-6)
    return torch.zeros_like(norm).scatter_(-1, norm.argmax(-1, keepdim=True), 1.0)


def melody_prefix(model, hidden: torch.Tensor, mask: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """The (chroma prefix, text states) sequence a MusicGen-Melody decoder reads, built as the
    model's own `_prepare_encoder_hidden_states_kwargs_for_generation` builds it.

    hidden (B, L, C) conditioning states with mask (B, L); chroma (B, frames, num_chroma).
    Returns (B, chroma_length + L', D), L' = the last position any row attends to."""
    cfg = model.config
    dec_width = cfg.decoder.hidden_size
    # T5 positions no row attends to are dropped: the text path then sees exactly its tokens
    keep = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1
    text, mask = hidden[:, :keep], mask[:, :keep]
    if cfg.text_encoder.hidden_size != dec_width:
        text = model.enc_to_dec_proj(text)
    text = text * mask[..., None].to(text.dtype)                            # (B, L', D)
    audio = chroma
    if cfg.num_chroma != dec_width:
        audio = model.audio_enc_to_dec_proj(audio)
    if audio.shape[1] < cfg.chroma_length:                                  # repeat, then cut
        audio = audio.repeat(1, math.ceil(cfg.chroma_length / audio.shape[1]), 1)
    audio = audio[:, :cfg.chroma_length]                                    # (B, chroma_length, D)
    return torch.cat([audio, text], dim=1)
