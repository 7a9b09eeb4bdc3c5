"""Seams of long music: a piece rendered in overlapping windows (`llama.long_music.render_long`)
against the same number of independent clips pasted end to end.

For each seam: the RMS change between the 50 ms frames on either side (vs the changes inside the
windows), and the pitch-class-profile correlation of the 2 s before and after it (a continuation
keeps its key; an independent clip need not). Conditioning is the decoder's own T5 encoding of a
caption, so only the decoder is measured.

    .venv/bin/python benchmarks/long_music_seams.py --musicgen outputs/synth/trained_bundle/MusicGen \
        --duration 90 --caption "A calm piano melody in C major at a slow tempo, without drums."
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llama.long_music import WindowConfig as _WC  # noqa: E402

WINDOW_DEFAULTS = _WC()


def seam_measures(audio: np.ndarray, sr: int, seams: list[float], inside: list[float], side_s: float = 2.0) -> dict:
    """`inside`: points in the middle of windows, the same profile measure where there is no seam."""
    from DataSet.synth.decoder_eval import profile_corr
    from llama.long_music import seam_report

    out = seam_report(audio, sr, seams)
    k = round(side_s * sr)

    def across(points):
        return [round(profile_corr(audio[round(s * sr) - k:round(s * sr)], audio[round(s * sr):round(s * sr) + k]), 4)
                for s in points]

    out["profile_corr_across"] = across(seams)
    out["profile_corr_inside"] = across(inside)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--musicgen", type=Path, required=True, help="a MusicGen folder")
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--overlap", type=float, default=5.0)
    ap.add_argument("--crossfade", type=float, default=WINDOW_DEFAULTS.crossfade_s)
    ap.add_argument("--caption", default="A calm piano melody in C major at a slow tempo, without drums.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the JSON here too")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from llama.decoders.musicgen import MusicGenDecoder
    from llama.long_music import WindowConfig, render_long

    dec = MusicGenDecoder.from_pretrained(args.musicgen)
    sr = dec.sampling_rate
    cond, mask = dec.condition_text([args.caption], return_mask=True)          # (1, N, C), (1, N)
    window = WindowConfig(args.window, args.overlap, args.crossfade)
    t = time.perf_counter()
    long = render_long(dec, cond, args.duration, args.seed, window=window, cond_mask=mask)
    seconds = time.perf_counter() - t
    n_windows = int(np.ceil(args.duration / args.window))
    seams = [args.window * i for i in range(1, n_windows)]
    inside = [min(args.window * (i + 0.5), args.duration - 2.5) for i in range(n_windows)]
    pasted = np.concatenate([dec.render(cond, min(args.window, args.duration - args.window * i), cond_mask=mask,
                                        seeds=[args.seed + 100 + i])[0] for i in range(n_windows)])
    report = {"musicgen": str(args.musicgen), "caption": args.caption, "duration_s": args.duration,
              "window_s": args.window, "overlap_s": args.overlap, "crossfade_s": args.crossfade, "seams_s": seams, "render_seconds": round(seconds, 1),
              "windowed": seam_measures(long, sr, seams, inside),
              "pasted_independent": seam_measures(pasted, sr, seams, inside)}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
