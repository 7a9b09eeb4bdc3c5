"""MusicGen as MuMu-LLaMA's music decoder, conditioned on the output projector's embeddings.

The projector output (B, cond_tokens, cond_dim) takes the place of MusicGen's T5 text-encoder
output. The published code computed these embeddings and then fed MusicGen the decoded text;
here `render` conditions on the embeddings themselves, through `generate(encoder_outputs=...)`.

Folder format: a transformers `MusicgenForConditionalGeneration` folder (config.json, weights,
generation_config.json, optionally the MusicgenProcessor files) plus an optional
`mumu_decoder.json` {"n_cond_tokens": N}; without it N = 128, what the published projector emits.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..encoders import load_checked
from ..errors import one_line
from . import DecoderError, duration_samples

META_FILE = "mumu_decoder.json"
DEFAULT_COND_TOKENS = 128
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")

def _read_meta(path: Path) -> int:
    """n_cond_tokens from mumu_decoder.json (DEFAULT_COND_TOKENS without the file)."""
    if not path.is_file():
        return DEFAULT_COND_TOKENS
    try:
        n = json.loads(path.read_text()).get("n_cond_tokens", DEFAULT_COND_TOKENS)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise DecoderError(one_line(f"{path}: unreadable ({e})")) from e
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DecoderError(f"{path}: n_cond_tokens must be a positive integer, got {n!r}")
    return n


def _model_type(folder: Path) -> str | None:
    """config.json's model_type ("musicgen", "musicgen_melody"); None if unreadable (the loader
    then says what is wrong)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


class _MusicGenCore:
    """What MusicGen and MusicGen-Melody share: loading, text conditioning, sampling."""

    melody = False                          # MusicGen-Melody: conditioned on the chroma of audio

    def __init__(self, model, processor, cond_tokens: int, folder: Path | None = None):
        self.model = model.eval()
        self.processor = processor          # None when the folder has no tokenizer
        self.cond_tokens = cond_tokens
        self.folder = folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "_MusicGenCore":
        """A MusicGen folder; a MusicGen-Melody folder (config model_type "musicgen_melody")
        gives a MusicGenMelodyDecoder."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DecoderError(f"MusicGen folder {folder} does not exist")
        if not (folder / "config.json").is_file():
            raise DecoderError(f"MusicGen folder {folder} has no config.json")
        if not any((folder / name).is_file() for name in _WEIGHT_FILES):
            raise DecoderError(f"MusicGen folder {folder} has no weights ({', '.join(_WEIGHT_FILES)})")
        melody = _model_type(folder) == "musicgen_melody"
        if melody:
            from transformers import AutoTokenizer as Processor
            from transformers import MusicgenMelodyForConditionalGeneration as Model
            from .musicgen_melody import MusicGenMelodyDecoder as kind
        else:
            from transformers import MusicgenForConditionalGeneration as Model
            from transformers import MusicgenProcessor as Processor
            kind = MusicGenDecoder
        # every weight must load: a missing or mis-shaped one would otherwise stay random
        model = load_checked(Model, folder, "MusicGen-Melody" if melody else "MusicGen", DecoderError,
                             dtype=dtype).to(device)
        processor = None
        if any((folder / name).is_file() for name in _TOKENIZER_FILES):
            try:   # MusicGen-Melody: only the tokenizer (its feature extractor needs torchaudio)
                processor = Processor.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError, KeyError) as e:
                raise DecoderError(one_line(f"cannot load MusicGen's tokenizer from {folder}: {e}")) from e
        dec = kind(model, processor, _read_meta(folder / META_FILE), folder)
        if melody:
            dec._read_chroma_settings(folder)
        return dec

    @property
    def sampling_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def cond_dim(self) -> int:
        """Width MusicGen expects of its encoder output (the T5 hidden size; 768 for the real one)."""
        return int(self.model.config.text_encoder.hidden_size)

    @property
    def frame_rate(self) -> int:
        return int(self.model.config.audio_encoder.frame_rate)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ----------------------------------------------------------------------------------- text
    def _tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        if self.processor is None:
            raise DecoderError("this MusicGen folder has no tokenizer, so it cannot read captions")
        if isinstance(captions, str) or not captions:
            raise DecoderError("captions must be a non-empty list of strings")
        # truncated to cond_tokens: the most conditioning the projector can stand in for
        enc = self.processor(text=list(captions), padding=True, truncation=True,
                             max_length=self.cond_tokens, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device)}

    @torch.no_grad()
    def condition_text(self, captions: list[str], return_mask: bool = False):
        """MusicGen's own T5 conditioning of `captions`, zero-padded to (B, cond_tokens, cond_dim).

        This is the bridge-loss target. Padding positions are exactly zero; the mask (B,
        cond_tokens) marks the real tokens and makes `render(cond, cond_mask=mask)` reproduce
        `render_text` exactly.
        """
        enc = self._tokenize(captions)
        hidden = self.model.text_encoder(**enc).last_hidden_state          # (B, L, C)
        mask = enc["attention_mask"]                                        # (B, L)
        B, L, C = hidden.shape
        cond = hidden.new_zeros(B, self.cond_tokens, C)
        cond[:, :L] = hidden * mask[..., None].to(hidden.dtype)
        full_mask = mask.new_zeros(B, self.cond_tokens)
        full_mask[:, :L] = mask
        return (cond, full_mask) if return_mask else cond

    def render_text(self, captions: list[str], duration: float, guidance_scale: float = 3.0,
                    temperature: float = 1.0, top_k: int = 250, do_sample: bool = True,
                    seed: int | None = None) -> np.ndarray:
        """MusicGen's own text path (tokenizer -> T5 inside generate); the reference for `render`."""
        enc = self._tokenize(captions)
        return self._generate(dict(inputs=enc["input_ids"], attention_mask=enc["attention_mask"]),
                              len(captions), duration, guidance_scale, temperature, top_k,
                              do_sample, seed)

    # ------------------------------------------------------------------------------ embeddings
    def check_projector(self, cfg) -> None:
        """The LLM's output projector must produce exactly this decoder's conditioning shape."""
        if (cfg.n_queries, cfg.out_dim) != (self.cond_tokens, self.cond_dim):
            raise DecoderError(
                f"output projector makes ({cfg.n_queries} x {cfg.out_dim}) but this MusicGen expects "
                f"({self.cond_tokens} x {self.cond_dim}): checkpoint and --music-decoder disagree")

    def render(self, cond: torch.Tensor, duration: float, guidance_scale: float = 3.0,
               temperature: float = 1.0, top_k: int = 250, do_sample: bool = True,
               seed: int | None = None, cond_mask: torch.Tensor | None = None,
               seeds: list[int] | None = None, audio_prompt=None, progress=None,
               melody=None) -> np.ndarray:
        """Audio (B, round(duration * sampling_rate)) float32 conditioned on `cond`.

        cond: (B, cond_tokens, cond_dim), the projector output already divided by the bridge
        scale. cond_mask: (B, cond_tokens), 1 = attend; default all ones. `seeds` (one per row,
        instead of `seed`) samples each row from its own generator, so a row's audio does not
        depend on the rest of the batch (batched inference).
        audio_prompt: (B, T) float waveform at `sampling_rate` that the clip continues (MusicGen's
        audio-prompt continuation: the decoder hears it, so edits keep its key and timbre); the
        returned audio is only the new part. progress(done, total) is called once per frame step.
        melody: (B, T) float waveform at `sampling_rate` whose chroma a MusicGen-Melody follows.
        """
        want = (self.cond_tokens, self.cond_dim)
        if not isinstance(cond, torch.Tensor) or cond.dim() != 3 or tuple(cond.shape[1:]) != want:
            shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
            raise DecoderError(f"cond has shape {shape}, MusicGen expects (B, {want[0]}, {want[1]})")
        B = cond.shape[0]
        if cond_mask is None:
            cond_mask = torch.ones(B, self.cond_tokens, dtype=torch.long)
        elif tuple(cond_mask.shape) != (B, self.cond_tokens):
            raise DecoderError(f"cond_mask has shape {tuple(cond_mask.shape)}, "
                               f"expected {(B, self.cond_tokens)} to match cond {tuple(cond.shape)}")
        hidden = cond.to(self.device, self.model.dtype)                      # (B, N, C)
        mask = cond_mask.to(self.device, torch.long)                          # (B, N)
        if guidance_scale > 1:
            # what generate does for text itself: a zero "null" condition with a zero mask,
            # stacked after the real one; the CFG logits processor splits the batch in halves
            hidden = torch.cat([hidden, torch.zeros_like(hidden)])            # (2B, N, C)
            mask = torch.cat([mask, torch.zeros_like(mask)])                  # (2B, N)
        from transformers.modeling_outputs import BaseModelOutput

        # `inputs` is a dummy (B, 1): without it generate takes the batch size from the doubled
        # encoder output and builds 2B decoder streams instead of B
        dummy = torch.full((B, 1), -100, dtype=torch.long, device=self.device)
        kwargs = dict(inputs=dummy, attention_mask=mask,
                      encoder_outputs=BaseModelOutput(last_hidden_state=hidden))
        skip = 0
        if audio_prompt is not None:
            if not hasattr(self, "_audio_prompt"):
                raise DecoderError(f"MusicGen-Melody folder {self.folder}: transformers' melody model has no "
                                   f"audio-prompt continuation (use --edit-mode melody)")
            kwargs["input_values"], skip = self._audio_prompt(audio_prompt, B)
        if self.melody:
            kwargs = self._melody_inputs(hidden, mask, B, guidance_scale, melody)
        elif melody is not None:
            raise DecoderError(f"MusicGen folder {self.folder} is not a MusicGen-Melody model "
                               f"(config model_type musicgen_melody), so it cannot follow a melody")
        return self._generate(kwargs, B, duration, guidance_scale, temperature, top_k,
                              do_sample, seed, seeds, skip=skip, progress=progress)

    @torch.no_grad()
    def _generate(self, kwargs: dict, batch: int, duration: float, guidance_scale: float,
                  temperature: float, top_k: int, do_sample: bool, seed: int | None,
                  seeds: list[int] | None = None, skip: int = 0, progress=None) -> np.ndarray:
        n_samples = duration_samples(duration, self.sampling_rate)
        hop = math.prod(self.model.config.audio_encoder.upsampling_ratios)
        frames = math.ceil(n_samples / hop)
        # the delay pattern costs K - 1 steps (K codebooks per channel): codebook k starts k late
        per_channel = self.model.decoder.num_codebooks // self.model.config.decoder.audio_channels
        max_new_tokens = frames + per_channel - 1
        sampling = dict(do_sample=True, temperature=temperature, top_k=top_k) if do_sample else \
            dict(do_sample=False, temperature=None, top_k=None)
        if seeds is not None:
            if seed is not None or len(seeds) != batch:
                raise DecoderError(f"give either seed or one seed per row ({len(seeds)} seeds, batch {batch})")
            if do_sample:       # sampled by our processor; generate's own step is then an argmax
                codebooks = self.model.decoder.num_codebooks
                sampling = dict(do_sample=False, temperature=None, top_k=None,
                                logits_processor=_SamplerLast([PerRowSampler(seeds, codebooks, temperature, top_k)]))
        if progress is not None:
            counter = _StepCounter(progress, max_new_tokens)
            if "logits_processor" in sampling:
                sampling["logits_processor"].append(counter)
            else:
                sampling["logits_processor"] = _LogitsProcessorList([counter])
        # a seed forks the RNG so the caller's random stream is untouched; no seed = global RNG
        fork = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []) \
            if seed is not None else contextlib.nullcontext()
        row_wise = _row_wise_codec(self.model.audio_encoder) if seeds is not None and batch > 1 \
            else contextlib.nullcontext()
        with fork, row_wise:
            if seed is not None:
                torch.manual_seed(seed)
            audio = self.model.generate(**kwargs, max_new_tokens=max_new_tokens,
                                        guidance_scale=guidance_scale, **sampling)  # (B, 1, T)
        audio = audio[:, 0, skip:].float().cpu().numpy()       # (B, T), first channel, new part
        assert audio.shape[0] == batch, (audio.shape, batch)
        out = np.zeros((batch, n_samples), dtype=np.float32)                  # trim or zero-pad
        n = min(n_samples, audio.shape[1])
        out[:, :n] = audio[:, :n]
        return out


class MusicGenDecoder(_MusicGenCore):
    """A loaded MusicGen that renders audio from (B, cond_tokens, cond_dim) conditioning; it can
    continue an audio prompt, so long pieces render in windows."""

    def render_projected(self, projected: torch.Tensor, duration: float, window=None, **kwargs) -> np.ndarray:
        """Render from the projector output (already divided by the bridge scale). Longer than
        `window.window_s` (30 s, MusicGen's training length): in overlapping windows, row by row
        (llama.long_music.render_long)."""
        from ..long_music import WindowConfig, render_long
        window = window or WindowConfig()
        if float(duration) <= window.window_s:
            return self.render(projected, duration, **kwargs)
        seeds = kwargs.pop("seeds", None)
        seed = kwargs.pop("seed", None)
        prompts = kwargs.pop("audio_prompt", None)
        rows = []
        for b in range(projected.shape[0]):
            row_seed = seeds[b] if seeds is not None else (seed or 0)
            rows.append(render_long(self, projected[b:b + 1], duration, row_seed,
                                    None if prompts is None else prompts[b], window=window, **kwargs))
        return np.stack(rows)                                                      # (B, n_samples)

    def _audio_prompt(self, audio, batch: int) -> tuple[torch.Tensor, int]:
        """(B, T) waveform -> ((B, 1, T') tensor, T') with T' a whole number of codec frames, so
        the prompt's own reconstruction can be cut off the output exactly."""
        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if wave.dim() == 1:
            wave = wave[None]
        hop = math.prod(self.model.config.audio_encoder.upsampling_ratios)
        usable = (wave.shape[-1] // hop) * hop
        if wave.dim() != 2 or wave.shape[0] != batch or usable == 0:
            raise DecoderError(f"audio prompt of shape {tuple(wave.shape)}: need ({batch}, >= {hop}) samples "
                               f"at {self.sampling_rate} Hz")
        limit = self.model.config.decoder.max_position_embeddings // 2
        usable = min(usable, limit * hop)          # at most half the position table
        wave = wave[:, wave.shape[-1] - usable:]   # the last seconds: what the new clip continues
        return wave[:, None].to(self.device, self.model.dtype), usable


@contextlib.contextmanager
def _row_wise_codec(codec):
    """Decode codes to audio one request at a time inside generate: the codec's convolutions give
    a batch of B rows that differ from each row decoded alone in the last bit, and batched
    inference promises each request the samples it gets alone. The language model, the costly
    part, stays batched."""
    batched = codec.decode

    def decode(codes, audio_scales=None, **kw):                       # codes (1, B, K, T)
        # audio_scales: one entry per codec frame (None, or a (B, 1) scale), as EnCodec returns
        # them; generate passes [None] * B when it has none
        outs = [batched(codes[:, b:b + 1], audio_scales=None if audio_scales is None else
                        [None if s is None else s[b:b + 1] for s in audio_scales], **kw)
                for b in range(codes.shape[1])]
        outs[0].audio_values = torch.cat([o.audio_values for o in outs])  # (B, 1, T)
        return outs[0]

    codec.decode = decode
    try:
        yield
    finally:
        del codec.decode                                               # back to the class method


def _logits_processor_base():
    from transformers import LogitsProcessor, LogitsProcessorList
    return LogitsProcessor, LogitsProcessorList


_LogitsProcessor, _LogitsProcessorList = _logits_processor_base()


class _SamplerLast(_LogitsProcessorList):
    """generate() appends its guidance processor to the list it is given; the sampler must stay
    last, after guidance, where generate's own sampling happens."""

    def append(self, processor) -> None:
        self.insert(len(self) - 1, processor)


class PerRowSampler(_LogitsProcessor):
    """A logits processor that samples each request's rows from that request's own generator.

    MusicGen's generate draws every row from one RNG, so a row's audio would depend on its
    batch-mates. This samples the `rows_per_request` consecutive rows of request i (one per
    codebook) from generator i, as `generate(do_sample=True)` would for that request alone
    (temperature, then top-k, then softmax and multinomial), and returns scores that are -inf
    except at the chosen token, for generate's greedy step to pick.
    """

    def __init__(self, seeds: list[int], rows_per_request: int, temperature: float, top_k: int):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.rows, self.temperature, self.top_k = rows_per_request, temperature, top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores / self.temperature if self.temperature not in (None, 1.0) else scores
        if self.top_k:                                                    # (B * K, V)
            k = min(self.top_k, scores.shape[-1])
            kth = torch.topk(scores, k)[0][..., -1, None]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        probs = torch.softmax(scores, dim=-1).cpu()
        chosen = torch.cat([torch.multinomial(probs[i * self.rows:(i + 1) * self.rows], 1, generator=g)
                            for i, g in enumerate(self.generators)])      # (B * K, 1)
        out = torch.full_like(scores, -float("inf"))
        return out.scatter_(-1, chosen.to(scores.device), 0.0)


class _StepCounter(_LogitsProcessor):
    """Reports generation progress (one call per frame step); leaves the scores as they are."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.done += 1
        self.progress(min(self.done, self.total), self.total)
        return scores
