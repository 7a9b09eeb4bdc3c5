"""The offline default bundle: `python -m llama.tiny ckpts/tiny`.

Writes, in seconds and with random weights, a complete checkpoint tree in the same on-disk
formats as the real weights (Meta LLaMA folder, transformers folders for MERT/ViT/ViViT/MusicGen,
a diffusers folder for AudioLDM2, our own trained-weights checkpoint for each music decoder), so
the real loading code is exercised end to end without a model hub. Every size comes from
`llama.config.preset("tiny")`. Same seed -> same bytes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from llama.config import MuMuConfig, preset
from llama.encoders import quiet_progress

BUNDLE_FILE = "bundle.json"
LAYOUT = {"preset": "tiny", "llama_dir": "LLaMA", "llama_type": "tiny", "mert": "MERT",
          "vit": "ViT", "vivit": "ViViT", "musicgen": "MusicGen", "mumu": "mumu",
          "audioldm2": "AudioLDM2", "mumu_audioldm2": "mumu_audioldm2"}

# Geometry the preset does not fix (it only fixes token counts and widths, checked below).
MERT_SAMPLING_RATE = 24000
IMAGE_SIZE = 16
VIDEO_FRAMES, VIDEO_TUBELET = 32, (8, 8, 8)
N_HEADS, FFN_MULT = 4, 2  # attention heads and MLP width multiple of the tiny encoders
LDM_T5_TOKENS, LDM_T5_DIM, LDM_GPT2_DIM = 16, 32, 32   # AudioLDM2: prompt_embeds 16 x 32, GPT-2 32 wide


# ---------------------------------------------------------------- tokenizer

_INSTRUMENTS = ["piano", "guitar", "violin", "drums", "bass", "cello", "flute", "trumpet",
                "saxophone", "synthesizer", "organ", "harp", "clarinet", "ukulele", "choir"]
_GENRES = ["jazz", "rock", "classical", "pop", "hip hop", "electronic", "blues", "folk",
           "reggae", "country", "metal", "ambient", "funk", "soul", "techno", "orchestral"]
_MOODS = ["calm", "energetic", "sad", "happy", "dark", "dreamy", "uplifting", "melancholic",
          "aggressive", "peaceful", "romantic", "mysterious"]
_SCENES = ["a beach at sunset", "a busy city street", "a quiet forest", "a snowy mountain",
           "a crowded concert hall", "a rainy window", "two dogs playing in a park",
           "a car driving at night", "a chef cooking in a kitchen", "children dancing"]
_TASKS = ["Describe the music in detail.", "What instruments can you hear?",
          "Generate a music that matches this image.", "Compose music for this video.",
          "Make the music faster and add drums.", "What is the genre of this song?",
          "Describe the image.", "What is happening in the video?",
          "Write a short poem about the sea.", "Replace the piano with a violin."]
_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately "
           "completes the request.\n\n### Instruction:\n{}\n\n### Response:")


def tokenizer_corpus() -> list[str]:
    """A fixed English corpus about music, images and video, with the Alpaca template."""
    lines = []
    for i, (inst, genre, mood) in enumerate(itertools.product(_INSTRUMENTS, _GENRES, _MOODS)):
        if i % 7:
            continue
        bpm, key = 60 + (i * 13) % 120, "CDEFGAB"[i % 7] + ["", " minor", " major"][i % 3]
        lines.append(f"A {mood} {genre} song with {inst}, played at {bpm} BPM in {key}.")
        lines.append(f"The {inst} carries the melody while the rhythm feels {mood}; it lasts "
                     f"{i % 5 + 1}:{i % 60:02d} minutes!")
    for i, (scene, task) in enumerate(itertools.product(_SCENES, _TASKS)):
        lines.append(f"The image shows {scene}. The video has {i % 32 + 1} frames.")
        lines.append(_PROMPT.format(task) + f" This is music for {scene}, mostly "
                     f"{_GENRES[i % len(_GENRES)]} with {_INSTRUMENTS[i % len(_INSTRUMENTS)]}.")
    lines += [f"{n} + {n * 3} = {n * 4}, ({n / 7:.3f}) [{n}%] \"quote\" #{n}" for n in range(200)]
    return lines


def write_tokenizer(path: Path, vocab_size: int) -> Path:
    """Train a LLaMA-style sentencepiece BPE (unk 0, bos 1, eos 2, no pad, byte fallback)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus()), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path


# ---------------------------------------------------------------- LLaMA (Meta format)

def llama_state_dict(cfg: MuMuConfig, seed: int) -> dict[str, torch.Tensor]:
    """Meta key names and shapes; normal weights scaled by 1/sqrt(fan-in), ones for norms.

    Fan-in scaling keeps the tiny model's activations and logits O(1), as in a trained model,
    so that a few optimiser steps visibly move it (0.02 would leave it near-uniform at dim 64).
    """
    c = cfg.llama
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) / shape[-1] ** 0.5).contiguous()

    D, F, V = c.dim, c.ffn_dim, c.vocab_size
    sd = {"tok_embeddings.weight": rand(V, D), "norm.weight": torch.ones(D),
          "output.weight": rand(V, D)}
    for i in range(c.n_layers):
        p = f"layers.{i}."
        for name in ("wq", "wk", "wv", "wo"):
            sd[p + f"attention.{name}.weight"] = rand(D, D)
        sd[p + "feed_forward.w1.weight"] = rand(F, D)
        sd[p + "feed_forward.w2.weight"] = rand(D, F)
        sd[p + "feed_forward.w3.weight"] = rand(F, D)
        sd[p + "attention_norm.weight"] = torch.ones(D)
        sd[p + "ffn_norm.weight"] = torch.ones(D)
    hd = c.head_dim
    sd["rope.freqs"] = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2).float() / hd))  # (hd/2,)
    return sd


def write_llama(folder: Path, cfg: MuMuConfig, seed: int) -> Path:
    """LLaMA/tokenizer.model + LLaMA/<type>/params.json + consolidated.00.pth, as Meta ships them."""
    c = cfg.llama
    write_tokenizer(folder / "tokenizer.model", c.vocab_size)
    model_dir = folder / LAYOUT["llama_type"]
    model_dir.mkdir(parents=True, exist_ok=True)
    params = {"dim": c.dim, "multiple_of": c.multiple_of, "n_heads": c.n_heads,
              "n_layers": c.n_layers, "norm_eps": c.norm_eps, "vocab_size": -1}
    (model_dir / "params.json").write_text(json.dumps(params))
    torch.save(llama_state_dict(cfg, seed), model_dir / "consolidated.00.pth")
    return folder


# ---------------------------------------------------------------- encoders (transformers folders)

@contextlib.contextmanager
def _seeded(seed: int):
    """transformers initialises weights from the global RNG: seed it without leaking the state
    (and without progress bars)."""
    with torch.random.fork_rng(devices=[]), quiet_progress():
        torch.manual_seed(seed)
        yield


def _encoder_sizes(width: int) -> dict:
    return dict(hidden_size=width, num_hidden_layers=2, num_attention_heads=N_HEADS,
                intermediate_size=FFN_MULT * width)


# Frames seen by the positional convolution (real MERT-v1: 128 frames = 1.7 s at 75 Hz; here 8).
# Wider kernels did not help the world-pretrained stand-in hear tempo: held-out mean-pooled linear
# probe, tempo / instrument, one run each: 8 frames 0.73 / 0.98; 64 frames 0.59 / 0.99 (0.63 with
# 3 copies of the pretraining set); 128 frames with 3 copies 0.79 / 0.92.
MERT_POS_CONV_KERNEL = 8


def write_mert(folder: Path, cfg: MuMuConfig, seed: int) -> Path:
    """A HuBERT model shaped like MERT-v1 (stable layer norm, 320x downsampling = 75 Hz at 24 kHz)."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    a = cfg.audio_adapter
    conf = HubertConfig(
        **{**_encoder_sizes(a.in_dim), "num_hidden_layers": a.n_pool - 1},
        conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
        num_conv_pos_embeddings=MERT_POS_CONV_KERNEL, num_conv_pos_embedding_groups=4)
    with _seeded(seed):
        HubertModel(conf).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=MERT_SAMPLING_RATE, padding_value=0.0,
                             do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def _patch(tokens: int, image_size: int) -> int:
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1 or image_size % grid:
        raise ValueError(f"cannot tile {image_size}px images into {tokens - 1} patches")
    return image_size // grid


def write_vit(folder: Path, cfg: MuMuConfig, seed: int) -> Path:
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    a = cfg.image_adapter
    conf = ViTConfig(**_encoder_sizes(a.in_dim), image_size=IMAGE_SIZE,
                     patch_size=_patch(a.n_pool, IMAGE_SIZE))
    with _seeded(seed):
        ViTModel(conf).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


def write_vivit(folder: Path, cfg: MuMuConfig, seed: int) -> Path:
    from transformers import VivitConfig, VivitImageProcessor, VivitModel

    a = cfg.video_adapter
    t, h, w = VIDEO_TUBELET
    tokens = (VIDEO_FRAMES // t) * (IMAGE_SIZE // h) * (IMAGE_SIZE // w) + 1
    if tokens != a.n_pool:
        raise ValueError(f"tiny ViViT gives {tokens} tokens, the preset expects {a.n_pool}")
    conf = VivitConfig(**_encoder_sizes(a.in_dim), image_size=IMAGE_SIZE,
                       num_frames=VIDEO_FRAMES, tubelet_size=list(VIDEO_TUBELET))
    with _seeded(seed):
        VivitModel(conf).save_pretrained(folder)
    VivitImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- AudioLDM2 (diffusers folder)

def write_audioldm2(folder: Path, cfg: MuMuConfig, seed: int) -> Path:
    """A random-weight AudioLDM2 pipeline whose conditioning is what `cfg`'s projector emits."""
    from llama.decoders.audioldm2 import N_GPT2_TOKENS
    from llama.decoders.tiny_decoders import build_tiny_audioldm2

    p = cfg.projector
    size = LDM_T5_TOKENS * LDM_T5_DIM + N_GPT2_TOKENS * LDM_GPT2_DIM
    if (p.n_queries, p.out_dim) != (1, size):
        raise ValueError(f"tiny AudioLDM2 conditions on 1 x {size}, the preset's projector makes "
                         f"{p.n_queries} x {p.out_dim}")
    return build_tiny_audioldm2(folder, t5_dim=LDM_T5_DIM, gpt2_dim=LDM_GPT2_DIM,
                                n_t5_tokens=LDM_T5_TOKENS, seed=seed)


# ---------------------------------------------------------------- the bundle

LLM_SIZE_FIELDS = ("dim", "n_layers", "n_heads", "adapter_layers_per_modality", "lora_rank")


def llm_sizes(cfg: MuMuConfig) -> dict[str, int]:
    return {k: getattr(cfg.llama, k) for k in LLM_SIZE_FIELDS}


def tiny_config(music_decoder: str = "musicgen", **llm) -> MuMuConfig:
    """The tiny preset, with the LLM's sizes (`LLM_SIZE_FIELDS`) changed where given; adapters and
    projector follow the LLM's width. Encoders and decoders keep the preset's sizes."""
    cfg = preset("tiny", music_decoder=music_decoder)
    unknown = set(llm) - set(LLM_SIZE_FIELDS)
    if unknown:
        raise ValueError(f"unknown LLM size {sorted(unknown)} (known: {', '.join(LLM_SIZE_FIELDS)})")
    for k, v in llm.items():
        setattr(cfg.llama, k, int(v))
    for adapter in (cfg.audio_adapter, cfg.image_adapter, cfg.video_adapter):
        adapter.out_dim = cfg.llama.dim
    cfg.projector.in_dim = cfg.llama.dim
    return cfg


def _write_all(root: Path, cfg: MuMuConfig, seed: int) -> None:
    from llama.checkpoint import write_tiny_mumu_checkpoint
    from llama.decoders.tiny_decoders import build_tiny_musicgen

    write_llama(root / LAYOUT["llama_dir"], cfg, seed)
    write_mert(root / LAYOUT["mert"], cfg, seed + 1)
    write_vit(root / LAYOUT["vit"], cfg, seed + 2)
    write_vivit(root / LAYOUT["vivit"], cfg, seed + 3)
    build_tiny_musicgen(root / LAYOUT["musicgen"], cond_dim=cfg.projector.out_dim,
                        n_cond_tokens=cfg.projector.n_queries, seed=seed + 4)
    write_tiny_mumu_checkpoint(root / LAYOUT["mumu"], cfg, seed + 5)
    ldm = tiny_config("audioldm2", **llm_sizes(cfg))
    write_audioldm2(root / LAYOUT["audioldm2"], ldm, seed + 6)
    write_tiny_mumu_checkpoint(root / LAYOUT["mumu_audioldm2"], ldm, seed + 7)
    (root / BUNDLE_FILE).write_text(json.dumps(LAYOUT, indent=2) + "\n")  # written last


def build_tiny_bundle(out_dir: str | Path, seed: int = 0, force: bool = False,
                      llm: dict[str, int] | None = None) -> Path:
    """Build the bundle into a temp dir next to `out_dir`, then rename: never a half bundle.
    `llm` changes the LLM's sizes (see `tiny_config`), e.g. a deeper one for the synthetic world."""
    out = Path(out_dir)
    if (out / BUNDLE_FILE).exists() and not force:
        return out
    if out.exists() and any(out.iterdir()) and not (out / BUNDLE_FILE).exists() and not force:
        raise FileExistsError(f"{out} exists and is not a tiny bundle; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the bundle is an ordinary folder
    try:
        with quiet_progress():
            _write_all(tmp, tiny_config(**(llm or {})), seed)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
            shutil.rmtree(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# The trained tiny default: the bundle after `make synth` (pretrained stand-ins + stages 1-3 on the
# synthetic world), shipped in the repo and refreshed by `make ship-default`. Same formats.
TRAINED_DEFAULT = Path(__file__).resolve().parents[1] / "assets" / "tiny_trained"


def install_trained_default(out_dir: str | Path, source: Path | None = None) -> Path:
    """Copy the shipped trained bundle to `out_dir` (whole or not at all)."""
    out, source = Path(out_dir), source or TRAINED_DEFAULT
    if not (source / BUNDLE_FILE).is_file():
        raise FileNotFoundError(f"{source}: no trained default bundle here (run make synth && make ship-default)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copytree(source, tmp / "b")
        (tmp / "b").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_tiny_bundle(path: str | Path = "ckpts/tiny", seed: int = 0, trained: bool = True) -> Path:
    """The bundle at `path`; if missing, the shipped trained default (when `trained` and present),
    else a random one built here."""
    if (Path(path) / BUNDLE_FILE).exists():
        return Path(path)
    if trained and (TRAINED_DEFAULT / BUNDLE_FILE).is_file():
        return install_trained_default(path)
    return build_tiny_bundle(path, seed=seed, force=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llama.tiny", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, nargs="?", default=Path("ckpts/tiny"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if the bundle exists")
    ap.add_argument("--trained", action="store_true",
                    help=f"install the shipped trained default (assets/{TRAINED_DEFAULT.name}) if there is one")
    args = ap.parse_args(argv)
    existed = (args.out_dir / BUNDLE_FILE).exists()
    if existed and not args.force:
        print(f"kept existing tiny bundle at {args.out_dir}")
    elif args.trained and (TRAINED_DEFAULT / BUNDLE_FILE).is_file():
        if existed:
            shutil.rmtree(args.out_dir)
        print(f"installed the trained tiny default at {install_trained_default(args.out_dir)}")
    else:
        print(f"built tiny bundle at {build_tiny_bundle(args.out_dir, seed=args.seed, force=args.force)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
