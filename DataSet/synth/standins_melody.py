"""A MusicGen-Melody stand-in trained on the world: the MusicGen stand-in's codec and T5, and a
language model that reads the chroma of the clip it makes beside the caption.

Why: an edit that hears its source through MusicGen's audio prompt continues the source, timbre
and all, so it can keep the melody or follow "play it on the flute", hardly both. MusicGen-Melody
(Copet et al. 2023) is trained on (the clip's own chroma, its text) -> the clip; given a source's
chroma and the edited caption it keeps the notes and takes the rest from the text. This trains
the same thing on the world, with transformers' `MusicgenMelodyForConditionalGeneration` in its
real on-disk format, so `--music-decoder-path .../MusicGenMelody --edit-mode melody` loads it
through the project's own loader. The chroma and the decoder's input sequence are built by the
functions `MusicGenMelodyDecoder.render` uses (`melody_chroma`, `melody_prefix`).

Trained on whole clips (the chroma prefix is the clip's own chroma, aligned frame for frame);
some captions are replaced by the null text condition and some chromas by the null melody, so
that guidance and text-only generation have a meaning.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .standins_codec import encode_codes
from .standins_decoder import Clips, DecoderSettings, _conditions, delayed_labels
from .standins_fit import _fit
from .standins_folders import replace_folder

FOLDER = "MusicGenMelody"               # next to MusicGen in the trained bundle


@dataclass
class MelodySettings:
    """The LM's widths and training; its codec and T5 are the MusicGen stand-in's."""

    width: int = 64
    layers: int = 3
    heads: int = 4
    ffn: int = 256
    steps: int = 1500
    batch: int = 16
    lr: float = 3e-3
    null_rate: float = 0.15            # captions replaced by the zero null condition (CFG)
    melody_drop: float = 0.25          # chromas replaced by the null melody (text-only generation)
    # rows whose chroma is another clip's with the same notes and timing (a training edit pair that
    # changed the instrument or the drums), so the timbre must come from the text: trained on
    # its own chroma alone, the chain's edits kept the notes (profile correlation 0.74) but the
    # asked-for instrument was heard in 0.18 of them (0.35 from scratch): the chroma's frame-by-
    # frame pattern (a piano's decay, a violin's sustain) tells the instrument.
    cross_rate: float = 0.5
    # init of the chroma projection. HF's 0.02 (600 steps, 400 clips): held-out loss with / without
    # the melody 1.786 / 1.789, edits' profile correlation to the source 0.26 (0.15 without);
    # 1.0 (1500 steps): 1.858 / 1.897 and 0.56 (0.17): the model learns to read the chroma
    chroma_init_std: float = 1.0

    @classmethod
    def like(cls, s: DecoderSettings) -> "MelodySettings":
        """The MusicGen stand-in's LM widths and training length."""
        return cls(width=s.width, layers=s.layers, heads=s.heads, ffn=s.ffn, steps=s.lm_steps,
                   batch=s.lm_batch, lr=s.lm_lr, null_rate=s.null_rate)


def new_melody_model(plain, s: MelodySettings, chroma_length: int):
    """A MusicgenMelodyForConditionalGeneration with `plain`'s (a trained
    MusicgenForConditionalGeneration) T5 and codec, weights copied, and a fresh LM."""
    from transformers import (MusicgenMelodyConfig, MusicgenMelodyDecoderConfig,
                              MusicgenMelodyForConditionalGeneration)

    cfg = plain.config
    V = cfg.decoder.vocab_size
    decoder = MusicgenMelodyDecoderConfig(
        vocab_size=V, hidden_size=s.width, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        ffn_dim=s.ffn, num_codebooks=cfg.decoder.num_codebooks, max_position_embeddings=2048,
        dropout=0.0, initializer_factor=0.02, pad_token_id=V, bos_token_id=V)
    config = MusicgenMelodyConfig(text_encoder=cfg.text_encoder, audio_encoder=cfg.audio_encoder,
                                  decoder=decoder, num_chroma=12, chroma_length=chroma_length,
                                  decoder_start_token_id=V, pad_token_id=V)
    model = MusicgenMelodyForConditionalGeneration(config)
    model.text_encoder.load_state_dict(plain.text_encoder.state_dict())
    model.audio_encoder.load_state_dict(plain.audio_encoder.state_dict())
    torch.nn.init.normal_(model.audio_enc_to_dec_proj.weight, std=s.chroma_init_std)
    model.generation_config = plain.generation_config
    return model


def melody_loss(model, codes, hidden, mask, chroma, gen: torch.Generator | None = None,
                null_rate: float = 0.0, melody_drop: float = 0.0) -> torch.Tensor:
    """Teacher-forced cross-entropy of the melody model on whole clips.

    codes (B, K, T); hidden (B, L, C) T5 encodings with mask (B, L); chroma (B, F, 12), the clips'
    own. gen=None: no null conditions (evaluation)."""
    from llama.decoders.musicgen_melody import melody_prefix, null_chroma
    from transformers.models.musicgen_melody.modeling_musicgen_melody import shift_tokens_right

    B, K, _ = codes.shape
    if gen is not None:
        keep = (torch.rand(B, generator=gen) >= null_rate).float()                  # (B,)
        hidden, mask = hidden * keep[:, None, None], (mask * keep[:, None]).long()
        drop = torch.rand(B, generator=gen) < melody_drop                            # (B,)
        chroma = torch.where(drop[:, None, None], null_chroma(B, chroma.shape[2], chroma.shape[1]), chroma)
    states = melody_prefix(model, hidden, mask.long(), chroma)                       # (B, P, D)
    pad = model.config.decoder.pad_token_id
    labels = delayed_labels(codes, pad)                                              # (B, T+K-1, K)
    inputs = shift_tokens_right(labels, pad, model.config.decoder.bos_token_id)      # (B, K, T+K-1)
    return model(encoder_hidden_states=states, decoder_input_ids=inputs.reshape(B * K, -1),
                 labels=labels).loss


def pretrain_melody(musicgen_folder, out_folder, clips: Clips, settings: MelodySettings | None = None,
                    seed: int = 0, log=print, eval_clips: Clips | None = None,
                    pairs: list[tuple[int, int]] | None = None) -> dict:
    """Write a MusicGen-Melody folder at `out_folder` whose codec and T5 are the (trained)
    MusicGen folder's and whose LM is trained on `clips`; deterministic for a seed (one thread).
    `pairs` (source, target) indices into `clips` with the same notes and timing (`same_notes`):
    `cross_rate` of the rows take the source's chroma for the target. Returns the report."""
    from llama.decoders.musicgen import MusicGenDecoder
    from llama.decoders.musicgen_melody import MusicGenMelodyDecoder, melody_chroma
    from llama.decoders.tiny_decoders import write_melody_preprocessor

    s = settings or MelodySettings()
    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    plain = MusicGenDecoder.from_pretrained(musicgen_folder)
    sr = plain.sampling_rate
    settings_chroma = dict(n_fft=MusicGenMelodyDecoder.n_fft, hop_length=MusicGenMelodyDecoder.hop_length,
                           chunk_length=MusicGenMelodyDecoder.chunk_length)

    def chroma_of(waves: np.ndarray) -> torch.Tensor:                    # (N, T) -> (N, F, 12)
        return torch.cat([melody_chroma(waves[i:i + 64], sr, **settings_chroma) for i in range(0, len(waves), 64)])

    report: dict = {"seed": seed, "clips": len(clips.waves), "cross_pairs": len(pairs or []), "seconds": {}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        chroma = chroma_of(clips.waves)                                              # (N, F, 12)
        model = new_melody_model(plain.model, s, chroma_length=chroma.shape[1]).eval()
        waves = torch.from_numpy(np.ascontiguousarray(clips.waves))
        codes = encode_codes(model.audio_encoder, waves)                             # (N, K, T)
        hidden, mask = _conditions(plain, clips.captions)                           # (N, P, L, C)
        lm_params = [p for n, p in model.named_parameters()
                     if n.startswith(("decoder.", "enc_to_dec_proj.", "audio_enc_to_dec_proj."))]
        model.requires_grad_(False)
        for p in lm_params:
            p.requires_grad_(True)
        model.decoder.train()
        N, P = hidden.shape[:2]

        pair = torch.as_tensor(pairs or [(0, 0)], dtype=torch.long)                   # (M, 2)

        def loss_fn(step):
            rows = torch.randint(N, (s.batch,), generator=gen)
            var = torch.randint(P, (s.batch,), generator=gen)
            heard = rows.clone()                                                     # whose chroma
            if pairs:
                cross = torch.rand(s.batch, generator=gen) < s.cross_rate
                pick = pair[torch.randint(len(pair), (s.batch,), generator=gen)]     # (B, 2)
                rows, heard = torch.where(cross, pick[:, 1], rows), torch.where(cross, pick[:, 0], heard)
            return melody_loss(model, codes[rows], hidden[rows, var], mask[rows, var], chroma[heard], gen,
                               s.null_rate, s.melody_drop)

        log(f"MusicGen-Melody LM: {s.steps} steps on {N} clips (chroma {tuple(chroma.shape[1:])})")
        losses = _fit(lm_params, loss_fn, s.steps, s.lr, log, "melody LM", every=100)
        model.requires_grad_(False)
        model.eval()
        report["lm_loss"] = {"first": round(losses[0], 4), "last": round(float(np.mean(losses[-20:])), 4)}
        if eval_clips is not None:
            with torch.no_grad():
                ecodes = encode_codes(model.audio_encoder, torch.from_numpy(eval_clips.waves))
                eh, em = _conditions(plain, [c[:1] for c in eval_clips.captions])
                echroma = chroma_of(eval_clips.waves)
                report["heldout_loss"] = round(float(melody_loss(model, ecodes, eh[:, 0], em[:, 0], echroma)), 4)
                null = torch.zeros_like(echroma)
                null[..., 0] = 1
                report["heldout_loss_without_melody"] = round(float(melody_loss(model, ecodes, eh[:, 0], em[:, 0], null)), 4)

    musicgen_folder = Path(musicgen_folder)

    def write(tmp: Path):
        for name in ("mumu_decoder.json", "tokenizer.json", "tokenizer_config.json", "spiece.model",
                     "special_tokens_map.json"):
            if (musicgen_folder / name).is_file():
                (tmp / name).write_bytes((musicgen_folder / name).read_bytes())
        model.save_pretrained(tmp, safe_serialization=True)
        write_melody_preprocessor(tmp, sr)

    Path(out_folder).parent.mkdir(parents=True, exist_ok=True)
    replace_folder(Path(out_folder), write)
    report["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    return report


# ---------------------------------------------------------------- measured on held-out edits

KEEPS_MELODY = ("instrument", "tempo", "drums")     # edit kinds whose target keeps the notes


def same_notes(pieces) -> list[tuple[int, int]]:
    """(i, j) index pairs of pieces with the same melody, key, mode and tempo (so the same notes
    at the same times) and another instrument or drums: both directions."""
    by_notes: dict = {}
    for i, p in enumerate(pieces):
        by_notes.setdefault((p.melody_seed, p.key, p.mode, p.tempo, p.seconds), []).append(i)
    return [(i, j) for group in by_notes.values() for i in group for j in group if i != j]


def edit_pairs(split_dir: Path, limit: int | None = None) -> list[tuple]:
    """(kind, source Piece, target Piece) for a world split's melody-keeping edits, from
    world.json ("pNNN" and its "pNNN_edit" differ in one attribute)."""
    import dataclasses
    import json

    from . import world as W

    meta = json.loads((Path(split_dir) / "world.json").read_text())["pieces"]
    keys = {f.name for f in dataclasses.fields(W.Piece)}
    pairs = []
    for name in meta:
        if name.endswith("_edit") or f"{name}_edit" not in meta:
            continue
        src, tgt = (W.Piece(**{k: v for k, v in meta[n].items() if k in keys}) for n in (name, f"{name}_edit"))
        changed = [k for k in KEEPS_MELODY if getattr(src, k) != getattr(tgt, k)]
        same_notes = (src.key, src.mode, src.melody_seed) == (tgt.key, tgt.mode, tgt.melody_seed)
        if len(changed) == 1 and same_notes:
            pairs.append((changed[0], src, tgt))
    return pairs[:limit]


@torch.no_grad()
def evaluate_edits(folder, split_dir: Path, ref, n: int = 40, seed: int = 0, duration: float = 4.0,
                   batch: int = 20) -> dict:
    """The melody decoder alone (its own T5 path) on held-out edits: the edited caption with the
    source's chroma (`melody`) vs without it (`none`). Per mode: pitch-class-profile and frame-wise
    chroma correlation with the source, the source's key+mode heard, and the changed attribute
    heard (instrument, tempo; drums has no classifier)."""
    from llama.decoders.musicgen import MusicGenDecoder

    from . import decoder_eval as E
    from . import world as W
    from .standins_codec import to_codec_rate

    dec = MusicGenDecoder.from_pretrained(folder)
    pairs = edit_pairs(split_dir, n)
    kinds = [k for k, _, _ in pairs]
    sources = to_codec_rate(np.stack([W.render_audio(src) for _, src, _ in pairs]))   # (N, T)
    captions = [W.describe(tgt, 0) for _, _, tgt in pairs]
    out: dict = {"n": len(pairs), "kinds": {k: kinds.count(k) for k in KEEPS_MELODY}}
    for mode in ("melody", "none"):
        waves = []
        for i in range(0, len(pairs), batch):
            cond, mask = dec.condition_text(captions[i:i + batch], return_mask=True)
            melody = sources[i:i + batch] if mode == "melody" else None
            waves.append(dec.render(cond, duration, cond_mask=mask, melody=melody,
                                    seeds=list(range(seed + i, seed + i + len(cond)))))
        waves = np.concatenate(waves)
        heard = ref.read(waves)
        asked = {k: [h[k] == getattr(t, k) for h, (kk, _, t) in zip(heard, pairs) if kk == k]
                 for k in ("instrument", "tempo")}
        out[mode] = {
            "profile_corr_to_source": round(float(np.mean([E.profile_corr(w, s) for w, s in zip(waves, sources)])), 4),
            "chroma_corr_to_source": round(float(np.mean([E.chroma_corr(w, s) for w, s in zip(waves, sources)])), 4),
            "key_mode_of_source": E.accuracy(heard, [s for _, s, _ in pairs])["accuracy"]["key_mode"],
            "changed_attribute_heard": {k: round(float(np.mean(v)), 4) if v else None for k, v in asked.items()}}
    return out
