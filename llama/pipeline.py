"""Everything needed to answer one request: tokenizer, model, frozen encoders, music decoder.

A checkpoint tree is described by `bundle.json` (the tiny bundle writes one; for real weights
write your own, see README) or by explicit paths. Encoders and the decoder are loaded on first
use, so a text-only request never pays for MERT or MusicGen.
"""
from __future__ import annotations

import json
import time
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (CheckpointError, load_llama_base, load_published_checkpoint, load_trained,
                         published_state_dict, read_trained_config)
from .checkpoint_config import FlavourError, check_music_decoder, config_from_published, published_variant
from .config import MuMuConfig, preset
from .hf_llama import llama_format, load_llama_weights
from .llama import LoRALinear
from .media import load_audio, load_image, load_video
from .mumu_llama import MuMuLLaMA
from .tokenizer import Tokenizer, format_prompt


@dataclass
class BundlePaths:
    """Where each part lives. Relative paths in bundle.json are relative to the bundle folder."""

    llama_dir: Path                      # tokenizer.model + <llama_type>/ (Meta or HF), or an HF folder
    llama_type: str = "7B"
    mert: Path | None = None
    vit: Path | None = None
    vivit: Path | None = None
    musicgen: Path | None = None
    musicgen_melody: Path | None = None  # a MusicGen-Melody for edits beside MusicGen (edit_decoder)
    audioldm2: Path | None = None
    mumu: Path | None = None             # our trained weights (model.safetensors + config.json)
    mumu_audioldm2: Path | None = None   # the same, trained for the AudioLDM2 decoder
    checkpoint: Path | None = None       # a published M2UGen / MuMu-LLaMA checkpoint.pth
    preset: str = "7b"
    variant: str | None = None           # mumu / m2ugen; None: what the checkpoint is (else mumu)
    music_decoder: str = "musicgen"

    @classmethod
    def from_bundle(cls, folder: str | Path, **overrides) -> "BundlePaths":
        folder = Path(folder)
        path = folder / "bundle.json"
        try:
            spec = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: missing (not a checkpoint bundle folder)") from e
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: invalid JSON ({e})") from e
        names = {f.name for f in fields(cls)}
        unknown = set(spec) - names
        if unknown:
            raise CheckpointError(f"{path}: unknown entries {sorted(unknown)}")
        spec.update({k: v for k, v in overrides.items() if v is not None})
        paths = {"llama_dir", "mert", "vit", "vivit", "musicgen", "musicgen_melody", "audioldm2", "mumu",
                 "mumu_audioldm2", "checkpoint"}
        for k in paths & set(spec):
            spec[k] = folder / spec[k] if spec[k] is not None else None
        return cls(**spec)

    def llama_locations(self) -> tuple[Path, Path]:
        """(weights folder, tokenizer.model). The weights: <llama_dir>/<llama_type> in Meta's or
        HF's format, else llama_dir itself if it is an HF folder (`Llama-2-7b-hf`). The tokenizer:
        in llama_dir, else in the weights folder."""
        weights = self.llama_dir / self.llama_type
        if llama_format(weights) is None and llama_format(self.llama_dir) == "hf":
            weights = self.llama_dir
        tokenizer = self.llama_dir / "tokenizer.model"
        if not tokenizer.is_file() and (weights / "tokenizer.model").is_file():
            tokenizer = weights / "tokenizer.model"
        return weights, tokenizer

    @property
    def trained(self) -> Path | None:
        """Our trained weights for the chosen music decoder, if any."""
        return self.mumu_audioldm2 if self.music_decoder == "audioldm2" else self.mumu


@dataclass
class Answer:
    text: str
    tokens: list[int]
    audio: np.ndarray | None = None      # (n_samples,) float32
    sample_rate: int | None = None
    timings: dict = field(default_factory=dict)


def _fresh(module: torch.nn.Module) -> torch.nn.Module:
    """A freshly initialised CPU twin of a module built on the meta device: ours are rebuilt
    from their `cfg`, torch layers re-initialised by their `reset_parameters`."""
    if hasattr(module, "cfg"):
        return type(module)(module.cfg)
    if isinstance(module, torch.nn.ModuleDict):
        return torch.nn.ModuleDict({k: _fresh(v) for k, v in module.items()})
    if hasattr(module, "reset_parameters") and not list(module.children()):
        module = module.to_empty(device="cpu")
        module.reset_parameters()
        return module
    raise TypeError(f"cannot rebuild {type(module).__name__} off the meta device")


@torch.no_grad()
def _merge_in_fp32(m: LoRALinear) -> None:
    """`m.merge()` with the sum taken in fp32 and rounded once to the weight's dtype (as when the
    whole model was merged in fp32 and then cast); one weight at a time."""
    dtype = m.weight.dtype
    if m.lora_b is None or dtype == torch.float32 or not m.lora_b.weight.any():
        m.merge()
        return
    m.weight.data = m.weight.data.float()
    m.merge()
    m.weight.data = m.weight.data.to(dtype)


class MuMuPipeline:
    def __init__(self, paths: BundlePaths, model: MuMuLLaMA, tokenizer: Tokenizer,
                 device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False):
        self.paths, self.model, self.tokenizer = paths, model, tokenizer
        self.device, self.dtype = device, dtype
        self.trust_remote_code = trust_remote_code
        self._encoders: dict[str, object] = {}
        self._decoder = None
        self._melody_decoder = None

    @classmethod
    def load(cls, paths: BundlePaths, device: str = "cpu", dtype: torch.dtype = torch.float32,
             trust_remote_code: bool = False, merge_lora: bool = True,
             layout: str = "columns") -> "MuMuPipeline":
        """Memory: the LLM is built on the meta device and takes each base weight as read, in
        `dtype`, so loading peaks at about the final model (benchmarks/load_memory.py). `layout`:
        the fp32 CPU weight layout (`Transformer.merge_lora`; "rows" for batch servers)."""
        weights_dir, tokenizer_path = paths.llama_locations()
        tokenizer = Tokenizer(tokenizer_path)
        llama_cfg, base = load_llama_weights(weights_dir)
        cfg = build_config(paths, llama_cfg, tokenizer.n_base)
        with torch.device("meta"):
            model = MuMuLLaMA(cfg)
        for name, child in list(model.named_children()):
            if name != "llm":                       # adapters, queries, projector: small, built now
                setattr(model, name, _fresh(child).to(dtype))
        load_llama_base(model.llm, base, dtype)
        del base
        if paths.checkpoint is not None:
            load_published_checkpoint(model, paths.checkpoint)
        if paths.trained is not None:
            load_trained(model, paths.trained)
        model.eval().requires_grad_(False)
        if merge_lora:                  # fold LoRA into the base weights: fewer kernels per token
            for m in model.llm.modules():
                if isinstance(m, LoRALinear):
                    _merge_in_fp32(m)
        model.to(device=device, dtype=dtype)
        if merge_lora and dtype == torch.float32:
            # Nothing left to fold: packs the weights for CPU decoding, as measured in
            # benchmarks/README.md. Other dtypes keep the plain layout, as before (the cast after
            # packing undid it), and so do not pay packing's transient copies.
            model.llm.merge_lora(layout)
        return cls(paths, model, tokenizer, torch.device(device), dtype, trust_remote_code)

    # ------------------------------------------------------------ lazily loaded parts
    def encoder(self, kind: str):
        if kind not in self._encoders:
            from .encoders import ImageEncoder, MusicEncoder, VideoEncoder
            folder = {"audio": self.paths.mert, "image": self.paths.vit, "video": self.paths.vivit}[kind]
            if folder is None:
                raise CheckpointError(f"no {kind} encoder folder configured (bundle.json / --{kind}-encoder)")
            if kind == "audio":
                enc = MusicEncoder.from_pretrained(folder, trust_remote_code=self.trust_remote_code,
                                                   device=self.device, dtype=self.dtype)
            else:
                enc = {"image": ImageEncoder, "video": VideoEncoder}[kind].from_pretrained(
                    folder, device=self.device, dtype=self.dtype)
            enc.check_adapter(getattr(self.model.cfg, f"{kind}_adapter"), f"{kind} adapter")
            self._encoders[kind] = enc
        return self._encoders[kind]

    def decoder(self):
        if self._decoder is None:
            from .decoders import load_decoder
            from .encoders import quiet_progress
            name = self.model.cfg.music_decoder
            folder = getattr(self.paths, name)
            if folder is None:
                raise CheckpointError(f"no {name} folder configured (bundle.json / --music-decoder-path)")
            with quiet_progress():
                self._decoder = load_decoder(name, folder, device=self.device, dtype=self.dtype)
            self._decoder.check_projector(self.model.cfg.projector)
        return self._decoder

    def edit_decoder(self, edit_mode: str):
        """(decoder, concrete edit mode) for music made with a source clip. With MusicGen as the
        music decoder and a MusicGen-Melody beside it (bundle.json "musicgen_melody"), `auto` and
        `melody` edits go to the melody model, which keeps the source's notes while the text
        changes the rest (measured on the world: docs/synth_report.json); else as
        `long_music.edit_mode_for` says for the music decoder."""
        from .long_music import edit_mode_for
        main = self.decoder()
        if (edit_mode in ("auto", "melody") and self.paths.musicgen_melody is not None
                and self.model.cfg.music_decoder == "musicgen" and not getattr(main, "melody", False)):
            if self._melody_decoder is None:
                from .decoders import load_decoder
                from .encoders import quiet_progress
                with quiet_progress():
                    dec = load_decoder("musicgen", self.paths.musicgen_melody, device=self.device, dtype=self.dtype)
                dec.check_projector(self.model.cfg.projector)
                edit_mode_for(dec, "melody")                    # a MusicGen-Melody, or a one-line error
                self._melody_decoder = dec
            return self._melody_decoder, "melody"
        return main, edit_mode_for(main, edit_mode)

    # ------------------------------------------------------------ one request
    def features(self, audio=None, image=None, video=None) -> dict[str, torch.Tensor]:
        """Media paths -> encoder features with a batch axis of 1."""
        feats = {}
        if audio is not None:
            enc = self.encoder("audio")
            feats["audio"] = enc.encode(load_audio(audio, enc.sampling_rate))[None]    # (1, L, T, W)
        if image is not None:
            feats["image"] = self.encoder("image").encode([load_image(image)])          # (1, N, W)
        if video is not None:
            enc = self.encoder("video")
            feats["video"] = enc.encode([load_video(video, enc.num_frames)])            # (1, N, W)
        return {k: v.to(self.device, self.dtype) for k, v in feats.items()}

    def answer(self, prompt: str, audio=None, image=None, video=None, music: bool = False,
               duration: float = 5.0, max_new_tokens: int = 128, temperature: float = 0.0,
               top_p: float = 0.9, seed: int = 0, guidance_scale: float | None = None,
               template: bool = True, decode_step=None, on_token=None, edit_mode: str = "none",
               progress=None, prompt_ids: list[int] | None = None, edit_strength: float = 0.6) -> Answer:
        """on_token(row, id) sees each token as chosen (streaming); edit_mode (llama.long_music)
        conditions the music on `audio` too (edit_strength: AudioLDM2's `init`); progress(done, total) follows the music render;
        prompt_ids replaces the templated prompt (a conversation, llama/chat.py).
        With the defaults this is the plain one-request path."""
        check_answer_settings(prompt, music, duration)
        t0 = time.perf_counter()
        feats = self.features(audio, image, video)
        t1 = time.perf_counter()
        ids = prompt_ids if prompt_ids is not None else \
            self.tokenizer.encode(format_prompt(prompt) if template else prompt, bos=True)
        gen = torch.Generator().manual_seed(seed)
        result = self.model.generate([ids], feats, max_new_tokens=max_new_tokens, temperature=temperature,
                                     top_p=top_p, eos_id=self.tokenizer.eos_id, force_music=music,
                                     generator=gen, decode_step=decode_step, on_token=on_token)
        t2 = time.perf_counter()
        out = Answer(self.tokenizer.decode(result.tokens[0]).strip(), result.tokens[0])
        out.timings = {"encode_s": t1 - t0, "generate_s": t2 - t1, "new_tokens": len(result.tokens[0])}
        cond = result.music_cond[0]
        if cond is not None:
            out.audio, out.sample_rate = self.render_music(
                cond / self.model.cfg.bridge_scale, duration, seed, guidance_scale, audio, edit_mode,
                edit_strength, progress)
            out.timings["render_s"] = time.perf_counter() - t2
        return out

    def render_music(self, cond: torch.Tensor, duration: float, seed: int, guidance_scale=None, audio=None,
                     edit_mode: str = "none", edit_strength: float = 0.6, progress=None) -> tuple:
        """One answer's music from its projector output cond (N, C), already divided by the
        bridge scale: (samples, sample rate). With an `audio` input, `edit_mode` says how the
        source conditions it (`edit_decoder`). The batch job renders edits through this too."""
        from .long_music import render_music
        kwargs = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
        decoder, mode = self.edit_decoder(edit_mode) if audio is not None else (self.decoder(), "none")
        source = load_audio(audio, decoder.sampling_rate) if mode != "none" else None
        wave = render_music(decoder, cond[None], duration, seed, source=source, edit_mode=mode,
                            progress=progress, edit_strength=edit_strength, **kwargs)
        return wave, decoder.sampling_rate

    def answer_batch(self, requests: list, batch_size: int | None = None, decode_step=None) -> list:
        """Requests (llama.request_schema.Request), each with its own settings, answered together,
        `batch_size` at a time (continuous batching; default: all at once): an Answer per request,
        in order, or the UserError that request failed with. Each answer is the one `answer`
        gives that request alone (see llama.batch_runner)."""
        from .batch_runner import answer_all
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return answer_all(self, requests, batch_size, decode_step)


def check_answer_settings(prompt, music: bool, duration) -> None:
    """What `answer` refuses before any work: an empty prompt, a bad duration for music."""
    import math

    from .errors import UserError
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("the prompt is empty (--prompt / \"prompt\")")
    if music and not (isinstance(duration, (int, float)) and not isinstance(duration, bool)
                      and math.isfinite(duration) and duration > 0):
        raise UserError(f"--duration must be a positive number of seconds, got {duration!r}")


# LLaMAConfig fields that are ours (tuning, added tokens), not the base model's shape.
_TUNING_FIELDS = {"vocab_size", "n_aud_tokens", "adapter_layers_per_modality", "lora_rank", "max_seq_len"}


def build_config(paths: BundlePaths, llama_cfg, vocab_size: int) -> MuMuConfig:
    """Sizes from what is on disk: the LLaMA folder for the LLM; a published checkpoint's own
    tensor shapes for adapters, RNNs, projector, queries and LoRA rank; else our trained
    weights' config.json; else the preset."""
    if paths.trained is not None:
        cfg = read_trained_config(paths.trained)
        if paths.music_decoder != cfg.music_decoder:
            raise CheckpointError(f"{paths.trained}: trained for the {cfg.music_decoder} decoder, "
                                  f"but {paths.music_decoder} was asked for")
    else:
        cfg = preset(paths.preset, paths.variant or "mumu", paths.music_decoder)
    L = cfg.llama
    for f in dataclasses.fields(llama_cfg):
        if f.name not in _TUNING_FIELDS:
            setattr(L, f.name, getattr(llama_cfg, f.name))
    L.vocab_size = vocab_size
    for adapter in (cfg.audio_adapter, cfg.image_adapter, cfg.video_adapter):
        adapter.out_dim = L.dim
    cfg.projector.in_dim = L.dim
    if paths.checkpoint is not None and paths.trained is None:
        where = str(paths.checkpoint)
        shapes = {k: tuple(v.shape) for k, v in published_state_dict(paths.checkpoint).items()}
        found = published_variant(shapes)
        if paths.variant is not None and paths.variant != found:
            raise FlavourError(f"{where}: a {'MuMu-LLaMA' if found == 'mumu' else 'M2UGen'} checkpoint "
                               f"(variant {found}), but variant {paths.variant} was asked for")
        check_music_decoder(shapes, paths.music_decoder, where)
        cfg = config_from_published(shapes, cfg, where)
    if cfg.llama.n_adapter_layers > cfg.llama.n_layers:
        raise CheckpointError(f"{paths.llama_dir}: a LLaMA of {cfg.llama.n_layers} layers, but the model puts "
                              f"its adapters into the last {cfg.llama.n_adapter_layers} (preset {paths.preset})")
    return cfg
