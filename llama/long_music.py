"""Music rendering beyond one decoder pass, and edits that hear their source.

MusicGen was trained on 30 s clips, and its position table ends at ~41 s. A longer piece is
rendered in overlapping windows: each window is a MusicGen audio-prompt continuation of the last
`overlap_s` seconds of the piece so far, and only its new part is appended, so every seam is a
continuation the decoder itself produced rather than a cut between two independent clips.

An edit (music requested with source audio) conditions the decoder on the source as well as on
the projector's output: `prompt` continues the source's last seconds (MusicGen audio prompt),
`melody` follows the source's chroma (a MusicGen-Melody folder), `init` starts AudioLDM2's
diffusion from the source's VAE latents noised to `edit_strength` (0: the source, 1: scratch).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decoders import DecoderError

EDIT_MODES = ("auto", "prompt", "melody", "init", "none")
DEFAULT_EDIT_STRENGTH = 0.6


@dataclass
class WindowConfig:
    window_s: float = 30.0           # new audio per window: MusicGen's training length
    overlap_s: float = 5.0           # seconds of the previous audio each window continues
    # Each window continues the codec's reconstruction of that audio, not the audio itself, so
    # joined as is the seam jumps (measured: as much as pasted independent clips). So a window
    # continues the audio up to `crossfade_s` before the end and fades in over that last stretch.
    crossfade_s: float = 0.25


def edit_mode_for(decoder, mode: str) -> str:
    """The concrete conditioning for `mode` on `decoder`: `auto` is `prompt` for MusicGen, `melody`
    for MusicGen-Melody and `init` for AudioLDM2; an impossible choice is a one-line error."""
    if mode not in EDIT_MODES:
        raise DecoderError(f"--edit-mode {mode!r}: choose from {', '.join(EDIT_MODES)}")
    prompts = hasattr(decoder, "_audio_prompt")                 # MusicGen: audio-prompt continuation
    melody = getattr(decoder, "melody", False)                  # MusicGen-Melody: chroma
    latents = hasattr(decoder, "source_latents")                # AudioLDM2: latent init
    folder = getattr(decoder, "folder", None)
    where = f" ({folder})" if folder is not None else ""
    if mode == "auto":
        return "prompt" if prompts else "melody" if melody else "init" if latents else "none"
    if mode == "prompt" and not prompts:
        raise DecoderError("--edit-mode prompt needs a MusicGen decoder" + (
            f": the MusicGen-Melody folder{where} has no audio-prompt continuation in transformers"
            if melody else " (AudioLDM2 has no audio prompt)"))
    if mode == "melody" and not melody:
        raise DecoderError(f"--edit-mode melody needs a MusicGen-Melody decoder folder (config model_type "
                           f"musicgen_melody); the decoder folder{where} is not one")
    if mode == "init" and not latents:
        raise DecoderError(f"--edit-mode init needs an AudioLDM2 decoder; the decoder folder{where} is MusicGen")
    return mode


def check_strength(strength) -> float:
    """--edit-strength: a number from 0 (keep the source) to 1 (render from scratch)."""
    import math
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
            or not 0 <= strength <= 1:
        raise DecoderError(f"--edit-strength must be a number from 0 to 1, got {strength!r}")
    return float(strength)


def needs_windows(decoder, duration: float, cfg: WindowConfig | None = None) -> bool:
    return hasattr(decoder, "_audio_prompt") and duration > (cfg or WindowConfig()).window_s


def render_music(decoder, cond, duration: float, seed: int, source: np.ndarray | None = None,
                 edit_mode: str = "none", progress=None, edit_strength: float = DEFAULT_EDIT_STRENGTH,
                 **kwargs) -> np.ndarray:
    """One clip (n_samples,) from the projector output `cond` (1, N, C), already divided by the
    bridge scale. With a mono `source` at the decoder's rate: edit_mode `prompt` continues it,
    `melody` follows its chroma, `init` starts the diffusion from it at `edit_strength`. With
    neither a source nor `progress` this is exactly
    `decoder.render_projected(cond, duration, seeds=[seed])`; MusicGen renders long pieces in
    windows itself (`render_long`)."""
    if edit_mode in ("prompt", "melody", "init") and source is not None:
        if len(source) == 0:
            raise DecoderError("the source audio of the edit is empty")
        wave = np.asarray(source, dtype=np.float32)[None]                          # (1, T)
        if edit_mode == "prompt":
            kwargs["audio_prompt"] = wave
        elif edit_mode == "melody":
            kwargs["melody"] = wave
        else:
            kwargs.update(init_audio=wave, strength=check_strength(edit_strength))
    if progress is not None and hasattr(decoder, "_generate"):                  # MusicGen(-Melody)
        kwargs["progress"] = progress
    return decoder.render_projected(cond, duration=duration, seeds=[seed], **kwargs)[0]


def render_long(decoder, cond, duration: float, seed: int, prompt: np.ndarray | None = None,
                progress=None, window: WindowConfig | None = None, **kwargs) -> np.ndarray:
    """(n_samples,) in windows of `window_s` new seconds, each continuing `overlap_s` seconds of
    the piece so far up to `crossfade_s` before its end (the source's last seconds, for the first
    window of an edit) and fading in over that last stretch. cond: (1, N, C).
    progress(done, 1000) reports the fraction of the piece; window i samples with seed + i."""
    from .decoders import duration_samples

    window = window or WindowConfig()
    if not 0 < window.overlap_s < window.window_s:
        raise DecoderError(f"window overlap {window.overlap_s:g} s must be > 0 and < the window "
                           f"{window.window_s:g} s")
    if not 0 <= window.crossfade_s < window.overlap_s:
        raise DecoderError(f"window crossfade {window.crossfade_s:g} s must be >= 0 and < the overlap "
                           f"{window.overlap_s:g} s")
    sr = decoder.sampling_rate
    total = duration_samples(duration, sr)
    lengths, left = [], total
    while left > 0:
        lengths.append(min(left, round(window.window_s * sr)))
        left -= lengths[-1]
    out = np.zeros(0, np.float32)                         # the piece so far
    keep, fade = round(window.overlap_s * sr), round(window.crossfade_s * sr)
    bar = _bar(len(lengths)) if progress is None else None
    for i, n in enumerate(lengths):
        def tick(done, steps, i=i):                      # progress in 1/1000 of the whole piece
            if progress is not None:
                progress(round(1000 * (i + done / steps) / len(lengths)), 1000)
        f = fade if out.size > fade else 0               # between windows only
        context = out[max(0, out.size - f - keep):out.size - f] if out.size else prompt
        extra = {} if context is None else {"audio_prompt": np.asarray(context, np.float32)[None]}
        new = decoder.render(cond, (n + f) / sr, seeds=[seed + i], progress=tick,
                             **extra, **kwargs)[0]                                # (n + f,)
        if f:                                  # fade the new window in over the last f samples
            ramp = (np.arange(f, dtype=np.float32) + 0.5) / f
            out[-f:] = out[-f:] * (1 - ramp) + new[:f] * ramp
        out = np.concatenate([out, new[f:]])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out[:total]


def _bar(n: int):
    """A progress bar over the windows on stderr (tqdm hides itself when stderr is no terminal)."""
    import sys

    from tqdm import tqdm
    return tqdm(total=n, desc="music windows", unit="window", file=sys.stderr, disable=None)


def seam_report(audio: np.ndarray, sr: int, seams_s: list[float], frame_s: float = 0.05) -> dict:
    """RMS change between consecutive `frame_s` frames: at each seam vs all frame pairs inside the
    windows (the measure of a seam jump)."""
    hop = max(1, round(frame_s * sr))
    n = len(audio) // hop
    rms = np.sqrt(np.mean(audio[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))   # (n,)
    change = np.abs(np.diff(rms))                                                           # (n-1,)
    at = sorted({min(n - 2, max(0, round(s * sr / hop) - 1)) for s in seams_s})
    inside = np.delete(change, at)
    return {"seam_changes": [float(change[i]) for i in at],
            "within_median": float(np.median(inside)), "within_p95": float(np.percentile(inside, 95)),
            "within_max": float(inside.max()), "mean_rms": float(rms.mean())}
