"""A MusicGen stand-in trained on the world: its EnCodec and its language model.

The tiny bundle's MusicGen has a trained T5 (`standins_text.pretrain_t5`) but a random EnCodec and
a random LM, so the music the model makes carries no signal. This rewrites the MusicGen folder in
place, in the same HF format the project's `MusicGenDecoder.from_pretrained` loads:

- EnCodec (a little wider than the tiny preset, `CodecSettings`) trained as an autoencoder with
  its residual VQ on the world's clips (`standins_codec.py`);
- the LM (decoder + enc_to_dec_proj) trained with teacher forcing on those clips' codes in
  MusicGen's delay pattern, cross-attending to the frozen T5's encodings of their captions, with
  some captions dropped to the zero "null" condition so that classifier-free guidance has a
  meaning. The T5 and the tokenizer are kept as they are.

    python -m DataSet.synth.standins_decoder BUNDLE_DIR --world WORLD_DIR [--seed 0]
    # writes BUNDLE_DIR/decoder_report.json (decoder_eval before/after, losses, seconds)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import world as W
from .standins_codec import CodecSettings, encode_codes, to_codec_rate, train_codec
from .standins_fit import _fit
from .standins_folders import _copy_files, replace_folder

REPORT_FILE = "decoder_report.json"


@dataclass
class DecoderSettings:
    """The stand-in's widths and training lengths (defaults: ~5 min on one core, 400 clips)."""

    codec: CodecSettings = field(default_factory=CodecSettings)
    width: int = 64
    layers: int = 3
    heads: int = 4
    ffn: int = 256
    lm_steps: int = 1500               # with the pitch-true codec 600 were too few (caption -> instrument 0.3)
    lm_batch: int = 16
    lm_lr: float = 3e-3
    lm_frames: int = 150               # teacher-forced window (3 s at 50 frames/s), random offset
    null_rate: float = 0.15            # captions replaced by the zero null condition (CFG)


@dataclass
class Clips:
    """World clips to train on: waves (N, T) float32 at 32 kHz and each clip's caption phrasings."""

    waves: np.ndarray
    captions: list                     # N lists of strings
    pieces: list = field(default_factory=list)

    @classmethod
    def from_pieces(cls, pieces) -> "Clips":
        waves = to_codec_rate(np.stack([W.render_audio(p) for p in pieces]))
        return cls(waves, [[W.describe(p, v) for v in range(W.CAPTION_VARIANTS)] for p in pieces], list(pieces))


def world_pieces(split_dir: Path, with_edits: bool = False) -> tuple[list, list]:
    """(names, Pieces) of a world split's originals (and the `_edit` targets, which are clips of
    their own, with `with_edits`), from world.json."""
    meta = json.loads((Path(split_dir) / "world.json").read_text())["pieces"]
    names = [k for k in meta if with_edits or not k.endswith("_edit")]
    keys = {f.name for f in dataclasses.fields(W.Piece)}
    return names, [W.Piece(**{k: v for k, v in meta[n].items() if k in keys}) for n in names]


def world_clips(split_dir: Path, limit: int | None = None, with_edits: bool = False) -> Clips:
    """A world split's audio as written (audio/NAME.wav, 24 kHz) resampled to 32 kHz, with its
    pieces' captions in every phrasing (edit targets too with `with_edits`)."""
    import soundfile as sf

    names, pieces = world_pieces(split_dir, with_edits)
    names, pieces = names[:limit], pieces[:limit]
    waves = np.stack([sf.read(Path(split_dir) / "audio" / f"{n}.wav", dtype="float32")[0] for n in names])
    caps = [[W.describe(p, v) for v in range(W.CAPTION_VARIANTS)] for p in pieces]
    return Clips(to_codec_rate(waves), caps, pieces)


# ---------------------------------------------------------------- the model

def _new_model(old, s: DecoderSettings):
    """A MusicgenForConditionalGeneration with `old`'s T5 (weights copied) and generation config,
    the wider codec and the stand-in's LM widths, random elsewhere."""
    from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

    from llama.decoders.tiny_decoders import _tiny_text_and_codec

    cfg = old.config
    _, audio = _tiny_text_and_codec(cfg.text_encoder.vocab_size, cfg.text_encoder.d_model,
                                    **s.codec.codec_kwargs())
    V = s.codec.codebook_size
    decoder = MusicgenDecoderConfig(
        vocab_size=V, hidden_size=s.width, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        ffn_dim=s.ffn, num_codebooks=s.codec.n_codebooks, max_position_embeddings=2048, dropout=0.0,
        initializer_factor=0.02, pad_token_id=V, bos_token_id=V)
    config = MusicgenConfig(text_encoder=cfg.text_encoder, audio_encoder=audio, decoder=decoder,
                            decoder_start_token_id=V, pad_token_id=V)
    model = MusicgenForConditionalGeneration(config)
    model.text_encoder.load_state_dict(old.text_encoder.state_dict())
    gen = old.generation_config
    gen.bos_token_id = gen.decoder_start_token_id = gen.pad_token_id = V
    model.generation_config = gen
    return model


def delayed_labels(codes: torch.Tensor, pad: int) -> torch.Tensor:
    """codes (B, K, T) -> labels (B, T + K - 1, K) in MusicGen's delay pattern: codebook k is k
    steps late and `pad` (-> ignored by the loss) elsewhere, which is what generate's
    `build_delay_pattern_mask` makes the decoder read back (BOS = pad at position 0)."""
    B, K, T = codes.shape
    out = torch.full((B, T + K - 1, K), pad, dtype=codes.dtype)
    for k in range(K):
        out[:, k:k + T, k] = codes[:, k]
    return out


@torch.no_grad()
def _conditions(dec, captions: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen T5 encodings of every phrasing: (N, P, L, C) hidden and (N, P, L) mask."""
    flat = [c for caps in captions for c in caps]
    hidden, mask = [], []
    for i in range(0, len(flat), 256):
        h, m = dec.condition_text(flat[i:i + 256], return_mask=True)     # (b, L, C), (b, L)
        hidden.append(h)
        mask.append(m)
    P = len(captions[0])
    h, m = torch.cat(hidden), torch.cat(mask)
    return h.view(len(captions), P, *h.shape[1:]), m.view(len(captions), P, -1)


def lm_loss(model, codes, hidden, mask, frames: int, gen: torch.Generator | None = None,
            null_rate: float = 0.0) -> torch.Tensor:
    """Teacher-forced cross-entropy of MusicGen's own forward on a window of `frames` code frames.

    codes (B, K, T); hidden (B, L, C) T5 encodings; mask (B, L). gen=None: the first window and
    no null conditions (evaluation)."""
    B, K, T = codes.shape
    frames = min(frames, T)
    start = torch.randint(T - frames + 1, (B,), generator=gen) if gen is not None else torch.zeros(B, dtype=torch.long)
    window = torch.stack([codes[b, :, s:s + frames] for b, s in enumerate(start.tolist())])   # (B, K, F)
    if gen is not None and null_rate > 0:
        keep = (torch.rand(B, generator=gen) >= null_rate).float()                         # (B,)
        hidden, mask = hidden * keep[:, None, None], (mask * keep[:, None]).long()
    pad = model.config.decoder.pad_token_id
    labels = delayed_labels(window, pad)                                                     # (B, F+K-1, K)
    from transformers.modeling_outputs import BaseModelOutput
    from transformers.models.musicgen.modeling_musicgen import shift_tokens_right

    inputs = shift_tokens_right(labels, pad, model.config.decoder.bos_token_id)              # (B, K, F+K-1)
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask,
                decoder_input_ids=inputs.reshape(B * K, -1), labels=labels)
    return out.loss


def pretrain_musicgen(folder, media_or_pieces, settings: DecoderSettings | None = None, seed: int = 0,
                      log=print, eval_clips: Clips | None = None) -> dict:
    """Train the MusicGen folder's EnCodec and LM on world clips (a `Clips`, or Pieces to render)
    and rewrite the folder in place; deterministic for a seed (one thread). Returns the report."""
    from llama.decoders.musicgen import MusicGenDecoder

    s = settings or DecoderSettings()
    log = log or (lambda msg: None)
    folder = Path(folder)
    clips = media_or_pieces if isinstance(media_or_pieces, Clips) else Clips.from_pieces(media_or_pieces)
    report: dict = {"seed": seed, "settings": dataclasses.asdict(s), "clips": len(clips.waves), "seconds": {}}
    t0 = time.perf_counter()
    old = MusicGenDecoder.from_pretrained(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = _new_model(old.model, s).eval()
        waves = torch.from_numpy(np.ascontiguousarray(clips.waves))                         # (N, T)
        log(f"EnCodec: {s.codec.steps} steps on {len(waves)} clips")
        closs = train_codec(model.audio_encoder, waves, s.codec, gen, log=log)
        report["codec_loss"] = {"first": round(closs[0], 4), "last": round(float(np.mean(closs[-20:])), 4)}
        report["seconds"]["codec"] = round(time.perf_counter() - t0, 1)
        t1 = time.perf_counter()
        codes = encode_codes(model.audio_encoder, waves)                                     # (N, K, T)
        hidden, mask = _conditions(old, clips.captions)                                     # (N, P, L, C)
        report["codes_used"] = [int(codes[:, k].unique().numel()) for k in range(codes.shape[1])]
        lm_params = [p for n, p in model.named_parameters() if n.startswith(("decoder.", "enc_to_dec_proj."))]
        model.requires_grad_(False)
        for p in lm_params:
            p.requires_grad_(True)
        model.decoder.train()
        N, P = hidden.shape[:2]

        def loss_fn(step):
            rows = torch.randint(N, (s.lm_batch,), generator=gen)
            var = torch.randint(P, (s.lm_batch,), generator=gen)
            return lm_loss(model, codes[rows], hidden[rows, var], mask[rows, var], s.lm_frames, gen, s.null_rate)

        log(f"MusicGen LM: {s.lm_steps} steps")
        lloss = _fit(lm_params, loss_fn, s.lm_steps, s.lm_lr, log, "LM", every=100)
        model.requires_grad_(False)
        model.eval()
        report["lm_loss"] = {"first": round(lloss[0], 4), "last": round(float(np.mean(lloss[-20:])), 4)}
        if eval_clips is not None:
            with torch.no_grad():
                ecodes = encode_codes(model.audio_encoder, torch.from_numpy(eval_clips.waves))
                eh, em = _conditions(old, [c[:1] for c in eval_clips.captions])
                report["lm_heldout_loss"] = round(float(lm_loss(model, ecodes, eh[:, 0], em[:, 0], ecodes.shape[-1])), 4)
        report["seconds"]["lm"] = round(time.perf_counter() - t1, 1)

    def write(tmp: Path):
        _copy_files(folder, tmp)                     # mumu_decoder.json, tokenizer, processor files
        for stale in ("model.safetensors", "config.json", "generation_config.json"):
            (tmp / stale).unlink(missing_ok=True)
        model.save_pretrained(tmp)

    replace_folder(folder, write)
    report["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    return report


# ---------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m DataSet.synth.standins_decoder", description=__doc__.splitlines()[0])
    ap.add_argument("bundle_dir", type=Path)
    ap.add_argument("--world", type=Path, required=True, help="a world folder with train/ and heldout/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codec-steps", type=int, default=CodecSettings.steps)
    ap.add_argument("--lm-steps", type=int, default=DecoderSettings.lm_steps)
    ap.add_argument("--eval-pieces", type=int, default=40, help="held-out pieces the measures use")
    ap.add_argument("--no-eval", action="store_true", help="skip decoder_eval before and after")
    ap.add_argument("--melody-steps", type=int, default=DecoderSettings.lm_steps,
                    help="then train a MusicGen-Melody LM on the same codec into BUNDLE_DIR/MusicGenMelody "
                         "(standins_melody); 0: none")
    args = ap.parse_args(argv)
    from llama.tiny import LAYOUT

    from . import decoder_eval as E

    torch.set_num_threads(1)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    folder = args.bundle_dir / LAYOUT["musicgen"]
    train = world_clips(args.world / "train", with_edits=True)       # 2 x the clips: LMs overfit 400
    heldout = world_clips(args.world / "heldout", args.eval_pieces)
    settings = DecoderSettings(codec=CodecSettings(steps=args.codec_steps), lm_steps=args.lm_steps)
    report: dict = {}
    if not args.no_eval:
        say("measuring the decoder as it is")
        ref = E.Reference.fit(world_clips(args.world / "train", 200))
        report["before"] = E.evaluate(folder, heldout, ref, seed=args.seed)
    report["pretrain"] = pretrain_musicgen(folder, train, settings, args.seed, log=say, eval_clips=heldout)
    if not args.no_eval:
        say("measuring the trained decoder")
        report["after"] = E.evaluate(folder, heldout, ref, seed=args.seed)
        report["real"] = E.real_ceiling(heldout, ref)
    if args.melody_steps > 0:
        from . import standins_melody as M

        say("MusicGen-Melody stand-in on the same codec")
        msettings = dataclasses.replace(M.MelodySettings.like(settings), steps=args.melody_steps)
        report["melody"] = {"pretrain": M.pretrain_melody(folder, args.bundle_dir / M.FOLDER, train, msettings,
                                                          args.seed, log=say, eval_clips=heldout,
                                                          pairs=M.same_notes(train.pieces))}
        if not args.no_eval:
            say("measuring the melody decoder on held-out edits")
            report["melody"]["edits"] = M.evaluate_edits(args.bundle_dir / M.FOLDER, args.world / "heldout", ref,
                                                         n=args.eval_pieces, seed=args.seed)
    # written last: its presence means every folder is complete (decoder_job)
    (args.bundle_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "pretrain"}, indent=1))
    print(f"pretraining took {report['pretrain']['seconds']['total']} s; wrote {args.bundle_dir / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
