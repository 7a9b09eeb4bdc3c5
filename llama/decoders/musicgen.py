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
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import DecoderError

META_FILE = "mumu_decoder.json"
DEFAULT_COND_TOKENS = 128
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")

_WORDS = ("music song piano guitar drums bass violin cello flute organ choir voice jazz rock pop "
          "blues funk metal reggae calm upbeat slow fast happy sad melody rhythm beat groove synth "
          "ambient electronic classical folk loud soft bright dark warm dreamy energetic gentle "
          "a the with and of in an on track playing by over under some 0 1 2 3 4 5 6 7 8 9 bpm").split()


def _train_tiny_spm(path: Path, seed: int, vocab_size: int = 96) -> None:
    """A tiny sentencepiece unigram model in T5's id layout (<pad>=0, </s>=1, <unk>=2)."""
    import sentencepiece as spm

    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(8)) for _ in range(400)]
    lines.append(" ".join("abcdefghijklmnopqrstuvwxyz,.-'"))   # cover every plain character
    with open(path, "wb") as f:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=f, vocab_size=vocab_size,
            model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
            character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)


def build_tiny_musicgen(folder: str | Path, cond_dim: int, seed: int = 0,
                        n_cond_tokens: int = 16) -> Path:
    """Write a random-weight MusicGen in the real on-disk format (seconds, deterministic per seed).

    T5 width = cond_dim (what the projector must emit); EnCodec at 32 kHz with the real hop of
    640 samples (50 frames/s) but tiny widths; a 2-layer, 48-wide, 2-codebook decoder over 64 codes.
    """
    from transformers import (EncodecConfig, EncodecFeatureExtractor, GenerationConfig,
                              MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, MusicgenProcessor, T5Config,
                              T5Tokenizer)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _train_tiny_spm(Path(tmp) / "spiece.model", seed)
        tokenizer = T5Tokenizer.from_pretrained(tmp, extra_ids=0, model_max_length=512,
                                                local_files_only=True)
    n_codebooks, codebook_size, ratios, sr = 2, 64, [8, 5, 4, 4], 32000
    frame_rate = math.ceil(sr / math.prod(ratios))
    text = T5Config(vocab_size=len(tokenizer), d_model=cond_dim, d_kv=16, d_ff=2 * cond_dim,
                    num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                    dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    audio = EncodecConfig(
        sampling_rate=sr, audio_channels=1, hidden_size=16, num_filters=4, upsampling_ratios=ratios,
        num_residual_layers=1, num_lstm_layers=1, codebook_size=codebook_size, codebook_dim=16,
        # num_quantizers = 1000 * bandwidth // (frame_rate * bits per code) = n_codebooks
        target_bandwidths=[n_codebooks * frame_rate * math.log2(codebook_size) / 1000],
        normalize=False, use_causal_conv=False, use_conv_shortcut=False,
        chunk_length_s=None, overlap=None)
    # decoder width != cond_dim so that enc_to_dec_proj exists, as in the real one (768 -> 1024);
    # initializer_factor 0.2 (real: 0.02) so that random weights give peaked, condition-dependent
    # logits rather than near-uniform ones
    width = 48 if cond_dim != 48 else 32
    decoder = MusicgenDecoderConfig(
        vocab_size=codebook_size, hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
        ffn_dim=64, num_codebooks=n_codebooks, max_position_embeddings=2048, dropout=0.0,
        initializer_factor=0.2, pad_token_id=codebook_size, bos_token_id=codebook_size)
    config = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder,
                            decoder_start_token_id=codebook_size, pad_token_id=codebook_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config).eval()
        # EnCodec initialises its codebooks to zeros (real ones are learned): every code would
        # decode to the same sound, so give each code its own random vector
        for layer in model.audio_encoder.quantizer.layers:
            book = layer.codebook
            book.embed.copy_(torch.randn_like(book.embed))
            book.embed_avg.copy_(book.embed)
            book.cluster_size.fill_(1.0)
    model.generation_config = GenerationConfig(
        do_sample=True, guidance_scale=3.0, max_length=1500, bos_token_id=codebook_size,
        decoder_start_token_id=codebook_size, pad_token_id=codebook_size)
    model.save_pretrained(folder)
    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=sr, padding_value=0.0),
        tokenizer=tokenizer)
    processor.save_pretrained(folder)
    (folder / META_FILE).write_text(json.dumps({"n_cond_tokens": n_cond_tokens}) + "\n")
    return folder


class MusicGenDecoder:
    """A loaded MusicGen that renders audio from (B, cond_tokens, cond_dim) conditioning."""

    def __init__(self, model, processor, cond_tokens: int):
        self.model = model.eval()
        self.processor = processor          # None when the folder has no tokenizer
        self.cond_tokens = cond_tokens

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "MusicGenDecoder":
        from transformers import MusicgenForConditionalGeneration, MusicgenProcessor

        folder = Path(folder)
        if not folder.is_dir():
            raise DecoderError(f"MusicGen folder {folder} does not exist")
        if not (folder / "config.json").is_file():
            raise DecoderError(f"MusicGen folder {folder} has no config.json")
        if not any((folder / name).is_file() for name in _WEIGHT_FILES):
            raise DecoderError(f"MusicGen folder {folder} has no weights ({', '.join(_WEIGHT_FILES)})")
        try:
            model = MusicgenForConditionalGeneration.from_pretrained(
                folder, local_files_only=True, dtype=dtype).to(device)
            processor = None
            if any((folder / name).is_file() for name in _TOKENIZER_FILES):
                processor = MusicgenProcessor.from_pretrained(folder, local_files_only=True)
            meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
        except (OSError, ValueError, KeyError) as e:
            raise DecoderError(f"cannot load MusicGen from {folder}: {e}".splitlines()[0]) from e
        return cls(model, processor, int(meta.get("n_cond_tokens", DEFAULT_COND_TOKENS)))

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

    def render_projected(self, projected: torch.Tensor, duration: float, **kwargs) -> np.ndarray:
        """Render from the projector output (already divided by the bridge scale)."""
        return self.render(projected, duration, **kwargs)

    def render(self, cond: torch.Tensor, duration: float, guidance_scale: float = 3.0,
               temperature: float = 1.0, top_k: int = 250, do_sample: bool = True,
               seed: int | None = None, cond_mask: torch.Tensor | None = None) -> np.ndarray:
        """Audio (B, round(duration * sampling_rate)) float32 conditioned on `cond`.

        cond: (B, cond_tokens, cond_dim), the projector output already divided by the bridge
        scale. cond_mask: (B, cond_tokens), 1 = attend; default all ones.
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
        return self._generate(kwargs, B, duration, guidance_scale, temperature, top_k,
                              do_sample, seed)

    def _n_samples(self, duration: float) -> int:
        try:
            seconds = float(duration)
        except (TypeError, ValueError):
            seconds = float("nan")
        if not math.isfinite(seconds) or seconds <= 0:
            raise DecoderError(f"duration must be a positive number of seconds, got {duration!r}")
        return max(1, round(seconds * self.sampling_rate))

    @torch.no_grad()
    def _generate(self, kwargs: dict, batch: int, duration: float, guidance_scale: float,
                  temperature: float, top_k: int, do_sample: bool, seed: int | None) -> np.ndarray:
        n_samples = self._n_samples(duration)
        hop = math.prod(self.model.config.audio_encoder.upsampling_ratios)
        frames = math.ceil(n_samples / hop)
        # the delay pattern costs K - 1 steps (K codebooks per channel): codebook k starts k late
        per_channel = self.model.decoder.num_codebooks // self.model.config.decoder.audio_channels
        max_new_tokens = frames + per_channel - 1
        sampling = dict(do_sample=True, temperature=temperature, top_k=top_k) if do_sample else \
            dict(do_sample=False, temperature=None, top_k=None)
        # a seed forks the RNG so the caller's random stream is untouched; no seed = global RNG
        fork = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []) \
            if seed is not None else contextlib.nullcontext()
        with fork:
            if seed is not None:
                torch.manual_seed(seed)
            audio = self.model.generate(**kwargs, max_new_tokens=max_new_tokens,
                                        guidance_scale=guidance_scale, **sampling)  # (B, 1, T)
        audio = audio[:, 0].float().cpu().numpy()              # (B, T), first channel
        assert audio.shape[0] == batch, (audio.shape, batch)
        out = np.zeros((batch, n_samples), dtype=np.float32)                  # trim or zero-pad
        n = min(n_samples, audio.shape[1])
        out[:, :n] = audio[:, :n]
        return out
