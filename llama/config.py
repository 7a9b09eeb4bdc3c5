"""Dataclass configs for every part of MuMu-LLaMA, with the `tiny` and `7b` presets.

No size is hard-coded anywhere else: modules read their dimensions from these objects, and the
loaders fill in what the weights on disk say (vocabulary size, encoder widths, ...).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError


@dataclass
class LLaMAConfig:
    """Shape of the language model, as in Meta's params.json, plus our tuning extras."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    vocab_size: int = 32000          # base sentencepiece vocabulary, without the [AUD] tokens
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    ffn_dim_override: int | None = None   # set when the weights' FFN width is not Meta's rule (HF configs)
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096
    lora_rank: int = 16
    n_aud_tokens: int = 8            # [AUD0]..[AUD7], appended after the base vocabulary
    adapter_layers_per_modality: int = 6  # audio, image, video: 3 x 6 = the last 18 layers

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        """Meta's rule: 2/3 * 4 * dim, times the multiplier, rounded up to `multiple_of`
        (unless `ffn_dim_override` gives the width outright)."""
        if self.ffn_dim_override is not None:
            return self.ffn_dim_override
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def full_vocab_size(self) -> int:
        return self.vocab_size + self.n_aud_tokens

    @property
    def n_adapter_layers(self) -> int:
        return 3 * self.adapter_layers_per_modality

    @classmethod
    def from_params_json(cls, path: str | Path, **overrides) -> "LLaMAConfig":
        """Read Meta's params.json (unknown keys are ignored, vocab_size -1 means 'from tokenizer')."""
        params = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in params.items() if k in known and v is not None}
        if kwargs.get("vocab_size", 0) <= 0:
            kwargs.pop("vocab_size", None)
        kwargs.update(overrides)
        return cls(**kwargs)


@dataclass
class AdapterConfig:
    """One modality adapter: pool the frozen encoder output to one vector, project to the LLM width.

    pooling:
      "conv"      Conv1d(n_pool -> 1) over tokens (image, video), then L2 normalise.
      "mean_conv" M2UGen audio: mean over time per layer, Conv1d(n_pool -> 1) over layers, L2 norm.
      "conv_rnn"  MuMu-LLaMA audio: Conv1d over layers per frame, L2 norm per frame, RNN over
                  time, attention pooling.
    """

    pooling: str = "conv"
    n_pool: int = 197                # channels of the Conv1d: encoder layers or tokens
    in_dim: int = 768                # encoder feature width
    out_dim: int = 4096              # LLM width
    n_blocks: int = 3
    rnn_size: int | None = None      # size of the RNN (conv_rnn), or of the published video RNN
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.pooling not in ("conv", "mean_conv", "conv_rnn"):
            raise ValueError(f"unknown adapter pooling {self.pooling!r}")
        if self.pooling == "conv_rnn" and self.rnn_size != self.in_dim:
            raise ValueError(
                f"conv_rnn pooling needs rnn_size == in_dim (got {self.rnn_size} vs {self.in_dim})")


@dataclass
class ProjectorConfig:
    """Output projector: [AUD] hidden states -> the music decoder's conditioning space."""

    in_dim: int = 4096
    d_model: int = 512
    n_heads: int = 4
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    ff_dim: int = 2048
    n_queries: int = 128             # 128 for MusicGen, 1 for AudioLDM2
    out_dim: int = 768               # 768 for MusicGen, 137216 for AudioLDM2


@dataclass
class MuMuConfig:
    """The whole model: LLM, the three adapters, the projector and how generation is conditioned."""

    llama: LLaMAConfig = field(default_factory=LLaMAConfig)
    audio_adapter: AdapterConfig = field(default_factory=lambda: AdapterConfig(
        pooling="conv_rnn", n_pool=25, in_dim=1024, rnn_size=1024))
    image_adapter: AdapterConfig = field(default_factory=lambda: AdapterConfig(
        pooling="conv", n_pool=197, in_dim=768))
    video_adapter: AdapterConfig = field(default_factory=lambda: AdapterConfig(
        pooling="conv", n_pool=3137, in_dim=768, rnn_size=1024))
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    music_decoder: str = "musicgen"
    bridge_scale: float = 10.0       # projector output = scale x decoder conditioning

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MuMuConfig":
        return cls(
            llama=LLaMAConfig(**d["llama"]),
            audio_adapter=AdapterConfig(**d["audio_adapter"]),
            image_adapter=AdapterConfig(**d["image_adapter"]),
            video_adapter=AdapterConfig(**d["video_adapter"]),
            projector=ProjectorConfig(**d["projector"]),
            music_decoder=d.get("music_decoder", "musicgen"),
            bridge_scale=d.get("bridge_scale", 10.0),
        )


def preset(name: str, variant: str = "mumu", music_decoder: str = "musicgen") -> MuMuConfig:
    """`7b`: the published shape (LLaMA-2-7B, MERT-330M, ViT-B/16, ViViT-B-16x2).
    `tiny`: the offline default built by `python -m llama.tiny`.
    variant `mumu` pools audio with the RNN; `m2ugen` with mean-then-conv.
    """
    if variant not in ("mumu", "m2ugen"):
        raise UserError(f"unknown variant {variant!r} (mumu or m2ugen)")
    if name == "7b":
        llama = LLaMAConfig()
        mert_layers, mert_dim, vit_tokens, vit_dim, vivit_tokens, vivit_dim = 25, 1024, 197, 768, 3137, 768
        published_video_rnn = 1024
        t5_dim, t5_tokens, ldm_gpt2_dim, ldm_gpt2_tokens = 768, 128, 768, 8
        ldm_t5_dim = 1024
    elif name == "tiny":
        llama = LLaMAConfig(dim=64, n_layers=4, n_heads=4, vocab_size=512, multiple_of=32,
                            max_seq_len=512, lora_rank=4, adapter_layers_per_modality=1)
        mert_layers, mert_dim, vit_tokens, vit_dim, vivit_tokens, vivit_dim = 3, 32, 17, 32, 17, 32
        published_video_rnn = 32
        t5_dim, t5_tokens, ldm_gpt2_dim, ldm_gpt2_tokens = 32, 16, 32, 8
        ldm_t5_dim = 32
    else:
        raise UserError(f"unknown preset {name!r} (tiny or 7b)")
    D = llama.dim
    if variant == "mumu":
        audio = AdapterConfig("conv_rnn", mert_layers, mert_dim, D, rnn_size=mert_dim)
        video = AdapterConfig("conv", vivit_tokens, vivit_dim, D, rnn_size=published_video_rnn)
    else:
        audio = AdapterConfig("mean_conv", mert_layers, mert_dim, D)
        video = AdapterConfig("conv", vivit_tokens, vivit_dim, D)
    image = AdapterConfig("conv", vit_tokens, vit_dim, D)
    proj_small = name == "tiny"
    if music_decoder == "musicgen":
        n_queries, out_dim = t5_tokens, t5_dim
    elif music_decoder == "audioldm2":
        n_queries, out_dim = 1, ldm_t5_dim * t5_tokens + ldm_gpt2_dim * ldm_gpt2_tokens
    else:
        raise UserError(f"unknown music decoder {music_decoder!r} (musicgen or audioldm2)")
    projector = ProjectorConfig(
        in_dim=D, d_model=32 if proj_small else 512, n_heads=4,
        n_encoder_layers=1 if proj_small else 4, n_decoder_layers=1 if proj_small else 4,
        ff_dim=64 if proj_small else 2048, n_queries=n_queries, out_dim=out_dim)
    return MuMuConfig(llama=llama, audio_adapter=audio, image_adapter=image, video_adapter=video,
                      projector=projector, music_decoder=music_decoder)
