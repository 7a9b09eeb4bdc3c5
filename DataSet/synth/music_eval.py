"""Does the trained model make the world's music? The whole chain, heard by measures that know
nothing of how it was trained.

`decoder_eval` asks it of the decoder alone (its own T5 text path). This asks it of what users run:
held-out caption -> LLM -> [AUD] states -> output projector -> decoder -> audio, read by the same
measures (tempo and instrument classifiers fit on REAL train clips, Krumhansl key/mode), beside
the decoder's own text path on the same captions (what a perfect bridge would give) and the real
clips (what the measures can read at all).

Edits: for held-out MUEdit items whose change keeps the melody (instrument, tempo, drums), the
pitch-class-profile correlation of the new audio with the source's, with the decoder hearing the
source (`--edit-mode prompt`, the project's default for MusicGen; `melody`, the source's chroma,
when a MusicGen-Melody folder is given) and without it (`none`), and whether the changed attribute
is heard as asked.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from . import decoder_eval as E

KEEPS_MELODY = ("instrument", "tempo", "drums")      # edit kinds whose target keeps the source's notes


def _piece(attrs: dict) -> SimpleNamespace:
    """A record's true attributes, read like a Piece's by `decoder_eval.accuracy`."""
    return SimpleNamespace(**attrs)


def _render(decoder, conds: list[torch.Tensor], duration: float, seed: int, sources=None,
            batch: int = 20, mode: str = "prompt") -> np.ndarray:
    """(N, T) audio from N projector outputs (cond_tokens, C); row i samples with seed + i, so a
    row does not depend on its batch. sources: (N, T) waves the decoder hears in edit `mode`."""
    from llama.long_music import render_music

    out = []
    for i in range(0, len(conds), batch):
        cond = torch.stack(conds[i:i + batch])                                   # (B, N, C)
        seeds = list(range(seed + i, seed + i + len(cond)))
        if sources is None:
            out.append(decoder.render_projected(cond, duration, seeds=seeds))
        else:
            out.append(np.stack([render_music(decoder, cond[b:b + 1], duration, seeds[b],
                                              source=sources[i + b], edit_mode=mode)
                                 for b in range(len(cond))]))
    return np.concatenate(out)


def _render_captions(decoder, captions: list[str], duration: float, seed: int, batch: int = 20) -> np.ndarray:
    """(N, T) from the decoder's own T5 encodings of the captions, row i with seed + i."""
    out = []
    for i in range(0, len(captions), batch):
        cond, mask = decoder.condition_text(captions[i:i + batch], return_mask=True)   # (B, N, C), (B, N)
        out.append(decoder.render(cond, duration, cond_mask=mask, seeds=list(range(seed + i, seed + i + len(cond)))))
    return np.concatenate(out)


def fad_to_real(waves: np.ndarray, sr: int, real: list[Path], embed_model: Path, out_dir: Path) -> dict:
    """Writes `waves` to out_dir (to listen to) and returns the Frechet distance between their
    embeddings and the real clips' (evaluate.py's FAD, `--embed-kind audio` on `embed_model`)."""
    import soundfile as sf

    from llama.metrics.audio import AudioConfig, AudioModel
    from llama.metrics.frechet import frechet_distance

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, w in enumerate(waves):
        paths.append(out_dir / f"{i:03d}.wav")
        sf.write(paths[-1], w, sr)
    model = AudioModel(embed_model, "audio", AudioConfig(progress=False))
    gen, ref = model.vectors(paths), model.vectors(real)
    if gen.skipped or ref.skipped:
        raise ValueError(f"unreadable clips: {sorted(gen.skipped) + sorted(ref.skipped)}")
    a = np.stack([gen.by_file[p] for p in paths])                     # (N, H)
    b = np.stack([ref.by_file[Path(p)] for p in real])                # (N, H)
    return {"fad": round(frechet_distance(a, b), 4), "n": len(paths), "embed_model": str(embed_model)}


def caption_to_music(ev, decoder, ref: E.Reference, n: int, seed: int = 0, duration: float = 4.0,
                     fad: dict | None = None) -> dict:
    """Held-out MUCaps captions through the trained chain, vs the decoder's own text path.
    fad: {"embed_model": folder, "out_dir": folder} adds the FAD of the chain's music to the real
    clips of the same pieces (and writes the chain's WAVs there)."""
    samples = ev.samples(2, "mucaps")[:n]
    if not samples:
        return {"n": 0}
    conds, pieces, captions = [], [], []
    for s in samples:
        _, cond = ev.run(s, music=True)
        conds.append(cond)
        pieces.append(_piece(ev.truth[s.id]["attributes"]))
        captions.append(s.target_caption)
    chain = _render(decoder, conds, duration, seed)
    alone = _render_captions(decoder, captions, duration, seed)
    out = {"n": len(samples), "model": E.accuracy(ref.read(chain), pieces),
           "decoder_alone": E.accuracy(ref.read(alone), pieces)["accuracy"]}
    if fad is not None:
        real = [ev.split / ev.truth[s.id]["file"] for s in samples]
        out["fad_to_real_clips"] = fad_to_real(chain, decoder.sampling_rate, real, fad["embed_model"], fad["out_dir"])
    return out


def edits(ev, decoder, ref: E.Reference, n: int, seed: int = 0, duration: float = 4.0,
          melody_decoder=None) -> dict:
    """Held-out melody-keeping edits, rendered hearing the source and not (and following its
    chroma, with a MusicGen-Melody `melody_decoder`)."""
    import soundfile as sf

    from .standins_codec import to_codec_rate

    samples = [s for s in ev.samples(3, "muedit") if ev.truth[s.id]["kind"] in KEEPS_MELODY][:n]
    if not samples:
        return {"n": 0}
    conds, sources, targets, kinds = [], [], [], []
    for s in samples:
        rec = ev.truth[s.id]
        _, cond = ev.run(s, music=True)
        conds.append(cond)
        wave, rate = sf.read(ev.split / rec["input_file"], dtype="float32")
        sources.append(to_codec_rate(wave, rate))
        targets.append(_piece(rec["attributes"]))
        kinds.append(rec["kind"])
    out = {"n": len(samples), "kinds": {k: kinds.count(k) for k in KEEPS_MELODY}}
    runs = [("prompt", decoder, sources), ("none", decoder, None)]
    if melody_decoder is not None:
        runs.append(("melody", melody_decoder, sources))
    for mode, dec, srcs in runs:
        waves = _render(dec, conds, duration, seed, srcs, mode=mode)
        heard = ref.read(waves)
        asked = [h[k] == getattr(t, k) for h, t, k in zip(heard, targets, kinds) if k != "drums"]
        by_kind = {k: [h[k] == getattr(t, k) for h, t, kk in zip(heard, targets, kinds) if kk == k]
                   for k in ("instrument", "tempo")}
        out[mode] = {"profile_corr_to_source": round(float(np.mean([E.profile_corr(w, s) for w, s in zip(waves, sources)])), 4),
                     # frame by frame: the melody itself, not only its key
                     "chroma_corr_to_source": round(float(np.mean([E.chroma_corr(w, s) for w, s in zip(waves, sources)])), 4),
                     "key_mode_of_source": E.accuracy(heard, targets)["accuracy"]["key_mode"],
                     "changed_attribute_heard": round(float(np.mean(asked)), 4) if asked else None,
                     "changed_attribute_heard_by_kind": {k: round(float(np.mean(v)), 4) if v else None
                                                         for k, v in by_kind.items()}}
    return out


def music_report(ev, decoder_folder: Path, world_train: Path, n: int = 40, seed: int = 0,
                 fad: dict | None = None, melody_folder: Path | None = None) -> dict:
    """Both measures for the model behind Evaluator `ev`, rendered by the MusicGen at
    `decoder_folder` (fad: see `caption_to_music`); edits also by the MusicGen-Melody at
    `melody_folder`, when given."""
    from llama.decoders.musicgen import MusicGenDecoder

    from .standins_decoder import world_clips

    decoder = MusicGenDecoder.from_pretrained(decoder_folder)
    melody = MusicGenDecoder.from_pretrained(melody_folder) if melody_folder is not None else None
    ref = E.Reference.fit(world_clips(world_train, 200))
    heldout = world_clips(ev.split, n)
    with torch.random.fork_rng(devices=[]):
        return {"caption_to_music": caption_to_music(ev, decoder, ref, n, seed, fad=fad),
                "edits": edits(ev, decoder, ref, n, seed, melody_decoder=melody),
                "real_clips": E.real_ceiling(heldout, ref)["accuracy"],
                "chance": {k: round(v, 4) for k, v in E.CHANCE.items()}}
