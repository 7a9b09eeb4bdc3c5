"""AudioLDM2 as MuMu-LLaMA's music decoder, conditioned on the output projector's embeddings.

AudioLDM2's UNet reads two conditioning sequences: `prompt_embeds`, the T5 encoder output
(n_t5_tokens x T5 width; 128 x 1024 for cvssp/audioldm2), and `generated_prompt_embeds`, eight
hidden states that its GPT-2 generates from the projected CLAP + T5 text encodings (8 x 768).
The projector emits both as one flat vector per request, (B, 1, n_t5 * T5 width + 8 * GPT-2
width), T5 part first; `split` cuts it back. Rendering passes all four embeddings (positive and
negative) to diffusers' `AudioLDM2Pipeline`, so neither text encoder nor GPT-2 runs.

Folder format: a diffusers `AudioLDM2Pipeline` folder (model_index.json + one subfolder per
component) plus an optional `mumu_decoder.json` {"n_t5_tokens": N, "num_inference_steps": S};
without it N = 128, what the published projector emits, and S = 200, diffusers' default.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import one_line
from . import DecoderError, duration_samples
from .components import load_components, read_index

META_FILE = "mumu_decoder.json"
DEFAULT_T5_TOKENS = 128
DEFAULT_STEPS = 200
N_GPT2_TOKENS = 8                # hidden states GPT-2 generates; fixed by the published model
DEFAULT_GUIDANCE = 3.5           # diffusers' default for AudioLDM2
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError)


class AudioLDM2Decoder:
    """A loaded AudioLDM2 that renders 16 kHz audio from T5 + GPT-2 conditioning embeddings."""

    def __init__(self, pipe, n_t5_tokens: int = DEFAULT_T5_TOKENS,
                 default_steps: int = DEFAULT_STEPS):
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.n_t5_tokens = int(n_t5_tokens)
        self.n_gpt2_tokens = N_GPT2_TOKENS
        self.default_steps = int(default_steps)
        self.folder = None

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "AudioLDM2Decoder":
        from diffusers import AudioLDM2Pipeline

        folder = Path(folder)
        components = read_index(folder, "AudioLDM2")
        # cvssp/audioldm2 ships a bare GPT2Model; diffusers' own text path calls generation
        # helpers only GPT2LMHeadModel has. Same weights, head tied to wte.
        parts = load_components(folder, components, "AudioLDM2", dtype,
                                replace={"GPT2Model": "GPT2LMHeadModel"})
        wanted = inspect.signature(AudioLDM2Pipeline).parameters
        try:
            pipe = AudioLDM2Pipeline(**{k: parts.get(k) for k in wanted}).to(device)
            meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
        except _LOAD_ERRORS as e:
            raise DecoderError(one_line(f"cannot load AudioLDM2 from {folder}: {e}")) from e
        try:
            n_t5, steps = (int(meta.get("n_t5_tokens", DEFAULT_T5_TOKENS)),
                           int(meta.get("num_inference_steps", DEFAULT_STEPS)))
        except (AttributeError, TypeError, ValueError) as e:
            raise DecoderError(one_line(f"{folder / META_FILE}: bad entry ({e})")) from e
        dec = cls(pipe, n_t5, steps)
        dec.folder = folder
        dec._check_widths(folder)
        return dec

    def _check_widths(self, folder) -> None:
        """The UNet must cross-attend to exactly the widths we feed it. Its blocks list one width
        per attention layer: None = self-attention, positions 0-1 read GPT-2's states, 2+ T5's."""
        blocks = self.pipe.unet.config.cross_attention_dim
        for dims in blocks if isinstance(blocks, (list, tuple)) else [blocks]:
            dims = dims if isinstance(dims, (list, tuple)) else [dims]
            for j, d in enumerate(dims):
                want, name = (self.gpt2_dim, "GPT-2") if j <= 1 else (self.t5_dim, "T5")
                if d is not None and d != want:
                    raise DecoderError(f"AudioLDM2 folder {folder}: UNet cross-attention width {d} does "
                                       f"not match the {name} width {want}")

    # ------------------------------------------------------------------------------ sizes
    @property
    def sampling_rate(self) -> int:
        return int(self.pipe.vocoder.config.sampling_rate)

    @property
    def t5_dim(self) -> int:
        """Width of `prompt_embeds` (the T5 hidden size; 1024 for the real one)."""
        return int(self.pipe.text_encoder_2.config.d_model)

    @property
    def gpt2_dim(self) -> int:
        """Width of `generated_prompt_embeds` (GPT-2's hidden size; 768 for the real one)."""
        return int(self.pipe.language_model.config.n_embd)

    @property
    def cond_tokens(self) -> int:
        """Projector queries: one flat vector per request."""
        return 1

    @property
    def cond_dim(self) -> int:
        """Flat conditioning width: n_t5 x T5 width + 8 x GPT-2 width (137216 for the real one)."""
        return self.n_t5_tokens * self.t5_dim + self.n_gpt2_tokens * self.gpt2_dim

    @property
    def prompt_shape(self) -> tuple[int, int]:
        return (self.n_t5_tokens, self.t5_dim)

    @property
    def generated_shape(self) -> tuple[int, int]:
        return (self.n_gpt2_tokens, self.gpt2_dim)

    # diffusers' ModelMixin.device/.dtype walk every submodule (3 ms for the tiny UNet); the
    # first parameter says the same
    @property
    def device(self) -> torch.device:
        return next(self.pipe.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.pipe.unet.parameters()).dtype

    # ------------------------------------------------------------------------ flat <-> split
    def split(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, cond_dim) -> prompt_embeds (B, n_t5, T5 width), generated (B, 8, GPT-2 width)."""
        want = (1, self.cond_dim)
        if not isinstance(flat, torch.Tensor) or flat.dim() != 3 or tuple(flat.shape[1:]) != want:
            shape = tuple(flat.shape) if isinstance(flat, torch.Tensor) else type(flat).__name__
            raise DecoderError(f"projected conditioning has shape {shape}, AudioLDM2 expects "
                               f"(B, 1, {self.cond_dim}) = {self.n_t5_tokens} x {self.t5_dim} T5 + "
                               f"{self.n_gpt2_tokens} x {self.gpt2_dim} GPT-2")
        B = flat.shape[0]
        n = self.n_t5_tokens * self.t5_dim
        return (flat[:, 0, :n].reshape(B, *self.prompt_shape),
                flat[:, 0, n:].reshape(B, *self.generated_shape))

    def join(self, prompt_embeds: torch.Tensor, generated_prompt_embeds: torch.Tensor) -> torch.Tensor:
        """The inverse of `split`: (B, 1, cond_dim), T5 part first."""
        B = prompt_embeds.shape[0]
        return torch.cat([prompt_embeds.reshape(B, 1, -1), generated_prompt_embeds.reshape(B, 1, -1)], -1)

    def check_projector(self, cfg) -> None:
        """The LLM's output projector must produce exactly this decoder's conditioning shape."""
        if (cfg.n_queries, cfg.out_dim) != (1, self.cond_dim):
            raise DecoderError(
                f"output projector makes ({cfg.n_queries} x {cfg.out_dim}) but this AudioLDM2 expects "
                f"(1 x {self.cond_dim}) = {self.n_t5_tokens} x {self.t5_dim} T5 + {self.n_gpt2_tokens} x "
                f"{self.gpt2_dim} GPT-2: checkpoint and --music-decoder disagree")

    # ----------------------------------------------------------------------------------- text
    def _check_captions(self, captions, what="captions") -> list[str]:
        if isinstance(captions, str) or not captions or not all(isinstance(c, str) for c in captions):
            raise DecoderError(f"{what} must be a non-empty list of strings")
        if self.pipe.tokenizer is None or self.pipe.tokenizer_2 is None:
            raise DecoderError("this AudioLDM2 folder has no tokenizers, so it cannot read captions")
        return list(captions)

    @torch.no_grad()
    def condition_text(self, captions: list[str], return_mask: bool = False):
        """AudioLDM2's own conditioning of `captions` as the projector emits it: (B, 1, cond_dim).

        The bridge-loss target. `prompt_embeds` is the pipeline's T5 output, zero-padded (or cut) to
        n_t5_tokens; `generated_prompt_embeds` GPT-2's 8 states, both from `encode_prompt`. The
        pipeline pads T5 to the longest caption of its batch and GPT-2 counts those pads as
        positions, so a caption's states would depend on its batch-mates: captions are encoded in
        groups of equal T5 length (no padding), which gives each exactly what it gets alone.
        The mask (B, n_t5_tokens) marks real T5 tokens; `render(..., attention_mask=mask)` then
        reproduces `render_text` of that caption.
        """
        captions = self._check_captions(captions)
        tok = self.pipe.tokenizer_2
        ids = tok(captions, truncation=True, max_length=tok.model_max_length)["input_ids"]
        lengths = [len(x) for x in ids]
        B = len(captions)
        prompt = torch.zeros(B, *self.prompt_shape, device=self.device, dtype=self.dtype)
        generated = torch.zeros(B, *self.generated_shape, device=self.device, dtype=self.dtype)
        mask = torch.zeros(B, self.n_t5_tokens, dtype=torch.long, device=self.device)
        for length in sorted(set(lengths)):
            rows = [i for i, n in enumerate(lengths) if n == length]
            p, m, g = self.pipe.encode_prompt(
                [captions[i] for i in rows], self.device, num_waveforms_per_prompt=1,
                do_classifier_free_guidance=False, max_new_tokens=self.n_gpt2_tokens)
            L = min(p.shape[1], self.n_t5_tokens)
            idx = torch.tensor(rows, device=self.device)
            prompt[idx, :L] = (p[:, :L] * m[:, :L, None].to(p.dtype)).to(self.dtype)
            mask[idx, :L] = m[:, :L].to(torch.long)
            generated[idx] = g.to(self.dtype)
        flat = self.join(prompt, generated)                                 # (B, 1, cond_dim)
        return (flat, mask) if return_mask else flat

    def render_text(self, captions: list[str], duration: float, steps: int | None = None,
                    guidance_scale: float = DEFAULT_GUIDANCE, seed: int | None = None,
                    num_waveforms: int = 1, all_waveforms: bool = False,
                    negative_prompt: str | list[str] | None = None) -> np.ndarray:
        """The pipeline's own text path (`prompt=`); the reference for `render`. With several
        waveforms per prompt the pipeline ranks them by CLAP score, best first."""
        settings = self._settings(duration, steps, guidance_scale, num_waveforms)
        captions = self._check_captions(captions)
        if negative_prompt is not None:
            negative_prompt = self._negatives(negative_prompt, len(captions))
        return self._call(dict(prompt=captions, negative_prompt=negative_prompt), len(captions),
                          *settings, seed, all_waveforms)

    # ------------------------------------------------------------------------------ embeddings
    def render_projected(self, projected: torch.Tensor, duration: float, **kwargs) -> np.ndarray:
        """Render from the projector output (B, 1, cond_dim), already divided by the bridge scale."""
        prompt, generated = self.split(projected)
        return self.render(prompt, generated, duration, **kwargs)

    def render(self, prompt_embeds: torch.Tensor, generated_prompt_embeds: torch.Tensor,
               duration: float, steps: int | None = None, guidance_scale: float = DEFAULT_GUIDANCE,
               seed: int | None = None, num_waveforms: int = 1, all_waveforms: bool = False,
               negative_prompt: str | list[str] | None = None,
               attention_mask: torch.Tensor | None = None, seeds: list[int] | None = None,
               init_audio=None, strength: float = 0.6) -> np.ndarray:
        """Audio (B, round(duration * 16000)) float32, or (B, num_waveforms, n) with all_waveforms.

        prompt_embeds (B, n_t5, T5 width), generated_prompt_embeds (B, 8, GPT-2 width);
        attention_mask (B, n_t5), 1 = attend, default all ones. Classifier-free guidance
        (guidance_scale > 1) contrasts with zero embeddings, or with the pipeline's own encoding
        of `negative_prompt` if given (which runs the text encoders and GPT-2; ignored without
        guidance, as in diffusers). `seeds` (one per row, instead of `seed`) draws each row's
        noise from its own generator, so a row's noise does not depend on its batch-mates.
        init_audio (B, T) at 16 kHz: an edit. The diffusion starts from the source's VAE latents
        noised to `strength` and runs only the last round(strength * steps) steps (diffusers'
        img2img recipe); strength 0 gives the source's own VAE reconstruction, strength 1 is
        exactly the render without a source.
        """
        settings = self._settings(duration, steps, guidance_scale, num_waveforms)
        B = self._check_embeds(prompt_embeds, generated_prompt_embeds)
        start, latents = 0, None
        if init_audio is not None and float(strength) < 1:
            if settings[3] != 1:
                raise DecoderError("an edit renders one waveform per request (num_waveforms 1)")
            latents, start = self._init_latents(init_audio, B, settings[0], settings[1], float(strength),
                                                seeds if seeds is not None else [seed] * B)
        dev, dt = self.device, self.dtype
        prompt = prompt_embeds.to(dev, dt)                                  # (B, n_t5, C5)
        generated = generated_prompt_embeds.to(dev, dt)                     # (B, 8, C2)
        if attention_mask is None:
            mask = torch.ones(B, self.n_t5_tokens, dtype=torch.long, device=dev)
        elif tuple(attention_mask.shape) != (B, self.n_t5_tokens):
            raise DecoderError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                               f"{(B, self.n_t5_tokens)} to match prompt_embeds {tuple(prompt_embeds.shape)}")
        else:
            mask = attention_mask.to(dev, torch.long)
            # drop the T5 positions no row attends to: the UNet result is the same, and a negative
            # prompt is then padded to the length the pipeline's text path would pad it to
            keep = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1
            prompt, mask = prompt[:, :keep], mask[:, :keep]
        kwargs = dict(prompt_embeds=prompt, generated_prompt_embeds=generated, attention_mask=mask)
        if settings[2] > 1:
            if negative_prompt is None:
                kwargs.update(negative_prompt_embeds=torch.zeros_like(prompt),
                              negative_generated_prompt_embeds=torch.zeros_like(generated),
                              negative_attention_mask=torch.ones_like(mask))
            else:
                kwargs.update(self._encode_negative(self._negatives(negative_prompt, B), kwargs))
        if seeds is not None:
            if seed is not None or len(seeds) != B or settings[3] != 1:
                raise DecoderError(f"seeds: one per row and one waveform each ({len(seeds)} seeds, batch {B})")
            seed = [int(s) for s in seeds]
        if latents is not None:
            kwargs["latents"] = latents
        return self._call(kwargs, B, *settings, seed, all_waveforms, start=start)

    # ------------------------------------------------------------------------------ edits
    @torch.no_grad()
    def log_mel(self, audio) -> torch.Tensor:
        """(B, T) waveform at 16 kHz -> (B, frames, mel bins) log-magnitude mel spectrogram, the
        vocoder's input (AudioLDM's STFT: 1024-point Hann window, hop = the vocoder's upsampling,
        Slaney mels up to 8 kHz, log of the magnitude clamped at 1e-5)."""
        import librosa

        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if wave.dim() == 1:
            wave = wave[None]
        if wave.dim() != 2 or wave.shape[-1] == 0:
            raise DecoderError(f"source audio of shape {tuple(wave.shape)}: need (B, T > 0) samples at 16 kHz")
        n_fft, hop = 1024, math.prod(self.pipe.vocoder.config.upsample_rates)
        n_mels = int(self.pipe.vocoder.config.model_in_dim)
        pad = (n_fft - hop) // 2
        wave = torch.nn.functional.pad(wave[:, None], (pad, pad), mode="reflect" if wave.shape[-1] > pad
                                       else "constant")[:, 0]
        spec = torch.stft(wave, n_fft, hop, window=torch.hann_window(n_fft), center=False,
                          return_complex=True).abs()                         # (B, F, frames)
        mel = torch.from_numpy(librosa.filters.mel(sr=self.sampling_rate, n_fft=n_fft, n_mels=n_mels,
                                                   fmin=0, fmax=self.sampling_rate // 2)).float()
        return torch.log(torch.clamp(mel @ spec, min=1e-5)).transpose(1, 2)  # (B, frames, mels)

    @torch.no_grad()
    def source_latents(self, audio, n_samples: int) -> torch.Tensor:
        """The source's VAE latents (B, C, frames / 4, mels / 4) for a render of n_samples: its
        first frames, padded with silence if shorter; the VAE's mean, times its scaling factor."""
        mel = self.log_mel(audio)                                            # (B, F, mels)
        hop = math.prod(self.pipe.vocoder.config.upsample_rates)
        frames = round(self._length_in_s(n_samples) * self.sampling_rate / hop - 0.5)
        if mel.shape[1] < frames:
            mel = torch.nn.functional.pad(mel, (0, 0, 0, frames - mel.shape[1]), value=math.log(1e-5))
        x = mel[:, None, :frames].to(self.device, self.dtype)                # (B, 1, frames, mels)
        vae = self.pipe.vae
        return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor

    def _init_latents(self, audio, batch: int, n_samples: int, steps: int, strength: float,
                      seeds) -> tuple[torch.Tensor, int]:
        """(latents to start from, steps skipped): the source latents noised with the scheduler to
        the first timestep that is still run; noise from each row's seed (the global RNG without)."""
        if not 0 <= strength <= 1:
            raise DecoderError(f"--edit-strength must be a number from 0 to 1, got {strength!r}")
        clean = self.source_latents(audio, n_samples)
        if clean.shape[0] != batch:
            raise DecoderError(f"source audio for {clean.shape[0]} rows, batch {batch}")
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(steps, device=self.device)
        run = min(steps, int(round(steps * strength)))
        start = steps - run
        if run == 0:
            return clean / scheduler.init_noise_sigma, steps
        noise = torch.stack([torch.randn(clean.shape[1:], generator=None if s is None else
                                         torch.Generator().manual_seed(int(s))) for s in seeds])
        t = scheduler.timesteps[start * scheduler.order:][:1].repeat(batch)
        noisy = scheduler.add_noise(clean, noise.to(clean.device, clean.dtype), t)
        # the pipeline multiplies given latents by init_noise_sigma: undo it
        return noisy / scheduler.init_noise_sigma, start

    def _check_embeds(self, prompt, generated) -> int:
        for name, x, want in (("prompt_embeds", prompt, self.prompt_shape),
                              ("generated_prompt_embeds", generated, self.generated_shape)):
            if not isinstance(x, torch.Tensor) or x.dim() != 3 or tuple(x.shape[1:]) != want:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise DecoderError(f"{name} has shape {shape}, AudioLDM2 expects (B, {want[0]}, {want[1]})")
        if prompt.shape[0] != generated.shape[0]:
            raise DecoderError(f"prompt_embeds has batch {prompt.shape[0]} but generated_prompt_embeds "
                               f"has {generated.shape[0]}")
        return prompt.shape[0]

    def _negatives(self, negative_prompt, batch: int) -> list[str]:
        negatives = [negative_prompt] * batch if isinstance(negative_prompt, str) else negative_prompt
        negatives = self._check_captions(negatives, "negative_prompt")
        if len(negatives) != batch:
            raise DecoderError(f"negative_prompt has {len(negatives)} entries for a batch of {batch}")
        return negatives

    @torch.no_grad()
    def _encode_negative(self, negatives: list[str], positive: dict) -> dict:
        """The pipeline's own negative encoding (T5 padded to the positive's length, as its text
        path does). encode_prompt only reads `prompt` for its batch size and type once the positive
        embeddings are given, so a list of placeholders stands in for the captions."""
        p, m, g = self.pipe.encode_prompt(
            [""] * len(negatives), self.device, num_waveforms_per_prompt=1,
            do_classifier_free_guidance=True, negative_prompt=negatives,
            max_new_tokens=self.n_gpt2_tokens, **positive)
        B = len(negatives)                       # returned as [negative; positive] along the batch
        return dict(negative_prompt_embeds=p[:B], negative_attention_mask=m[:B],
                    negative_generated_prompt_embeds=g[:B])

    # ------------------------------------------------------------------------------ sampling
    def _length_in_s(self, n_samples: int) -> float:
        """audio_length_in_s that makes the pipeline produce >= n_samples (it floors the frame
        count and rounds it up to the VAE's downsampling; aim at a frame middle to dodge float
        rounding), never below its minimum of one latent frame."""
        hop = math.prod(self.pipe.vocoder.config.upsample_rates)
        scale = self.pipe.vae_scale_factor
        frames = scale * max(1, math.ceil(math.ceil(n_samples / hop) / scale))
        return (frames + 0.5) * hop / self.sampling_rate

    def _settings(self, duration, steps, guidance_scale, num_waveforms) -> tuple[int, int, float, int]:
        """Checked (n_samples, steps, guidance_scale, num_waveforms); steps None = the folder's default."""
        n_samples = duration_samples(duration, self.sampling_rate)
        steps = self.default_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise DecoderError(f"steps must be a positive integer, got {steps!r}")
        if isinstance(num_waveforms, bool) or not isinstance(num_waveforms, int) or num_waveforms < 1:
            raise DecoderError(f"num_waveforms must be a positive integer, got {num_waveforms!r}")
        try:
            guidance = float(guidance_scale)
        except (TypeError, ValueError):
            guidance = float("nan")
        if not math.isfinite(guidance):
            raise DecoderError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        return n_samples, steps, guidance, num_waveforms

    @torch.no_grad()
    def _call(self, kwargs: dict, batch: int, n_samples: int, steps: int, guidance_scale: float,
              num_waveforms: int, seed: int | list[int] | None, all_waveforms: bool,
              start: int = 0) -> np.ndarray:
        # a CPU generator gives the same noise on every device; no seed = the global RNG; a list
        # of seeds = one generator per row (diffusers draws row i's latents from generator i)
        if isinstance(seed, list):
            generator = [torch.Generator().manual_seed(s) for s in seed]
        else:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with _skip_first_steps(self.pipe.scheduler, start):
            out = self.pipe(**kwargs, audio_length_in_s=self._length_in_s(n_samples),
                            num_inference_steps=steps, guidance_scale=guidance_scale,
                            num_waveforms_per_prompt=num_waveforms, generator=generator,
                            max_new_tokens=self.n_gpt2_tokens, output_type="np")
        audio = np.asarray(out.audios, dtype=np.float32)                    # (B * W, T)
        audio = audio.reshape(batch, num_waveforms, -1)                     # grouped per prompt
        wave = np.zeros((batch, num_waveforms, n_samples), dtype=np.float32)  # trim or zero-pad
        n = min(n_samples, audio.shape[-1])
        wave[..., :n] = audio[..., :n]
        return wave if all_waveforms else wave[:, 0]


@contextlib.contextmanager
def _skip_first_steps(scheduler, start: int):
    """While rendering, the scheduler's timesteps lose their first `start` steps (an edit runs
    only the rest, from latents noised to the first one kept)."""
    if not start:
        yield
        return
    real = scheduler.set_timesteps

    def set_timesteps(*args, **kwargs):
        real(*args, **kwargs)
        scheduler.timesteps = scheduler.timesteps[start * scheduler.order:]

    scheduler.set_timesteps = set_timesteps
    try:
        yield
    finally:
        del scheduler.set_timesteps                                     # back to the class method
