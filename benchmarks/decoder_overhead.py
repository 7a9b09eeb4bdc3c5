"""Overhead of our music-decoder wrappers over calling diffusers / transformers directly.

    python benchmarks/decoder_overhead.py [--sizes tiny,medium --reps 7 --threads 1
                                           --device cpu --json out.json --write-readme]

For each decoder and size, the same conditioning, steps and seed go through
  ours:    AudioLDM2Decoder.render_projected (split of the flat projector output, zero negatives,
           exact-length trim) / MusicGenDecoder.render (zero null condition, forked RNG, trim);
  direct:  AudioLDM2Pipeline(prompt_embeds=..., negative_prompt_embeds=0, ...) /
           MusicgenForConditionalGeneration.generate(encoder_outputs=...) with torch.manual_seed;
the two outputs are checked to be identical (so both do the same work), then timed alternately,
`--reps` times each after one warm-up call. Overhead = ours / direct - 1, on the median and on
the minimum (the least disturbed run on a shared machine). On a busy machine that A/B
difference is mostly noise, so the wrapper's own cost is also timed in isolation: `ours` with the
pipeline / generate call replaced by a replay of its recorded output, minus the same for
`direct` ("wrapper us"), as a share of the direct call ("wrapper %").

Sizes: `tiny` is the tiny bundle's decoders (fixed costs dominate); `medium` has the real
conditioning shapes (AudioLDM2: 128 x 1024 T5 + 8 x 768 GPT-2 = 137216; MusicGen: 128 x 768)
with a 52M-parameter UNet / a 6-layer 512-wide MusicGen decoder, random weights, built here in
seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llama.decoders import AudioLDM2Decoder, MusicGenDecoder  # noqa: E402
from llama.decoders.tiny_decoders import build_tiny_audioldm2, build_tiny_musicgen  # noqa: E402
from llama.encoders import quiet_progress  # noqa: E402

README = Path(__file__).resolve().parent / "README.md"
HEADING = "## Decoder overhead"

# per size: AudioLDM2 build kwargs, steps, seconds; MusicGen builder args, seconds; A/B runs
SIZES = {
    "tiny": dict(ldm=dict(), ldm_steps=10, ldm_seconds=1.0, mg=dict(width=None), mg_seconds=1.0,
                 reps=21),
    "medium": dict(ldm=dict(t5_dim=1024, gpt2_dim=768, n_t5_tokens=128, unet_channels=(64, 128, 256),
                            layers_per_block=2, mel_bins=64),
                   ldm_steps=10, ldm_seconds=2.0, mg=dict(width=512), mg_seconds=2.0, reps=5),
}
WRAPPER_REPS = 200


# ------------------------------------------------------------------------------ models
def build_musicgen(folder: Path, width: int | None, seed: int = 0) -> Path:
    """width None: the tiny bundle's MusicGen (16 x 32 conditioning). Otherwise the real
    conditioning (128 x 768) into a 6-layer decoder of that width over 4 codebooks of 2048."""
    if width is None:
        return build_tiny_musicgen(folder, cond_dim=32, n_cond_tokens=16, seed=seed)
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, T5Config)

    n_codebooks, codebook_size, ratios, sr = 4, 2048, [8, 5, 4, 4], 32000
    frame_rate = math.ceil(sr / math.prod(ratios))
    text = T5Config(vocab_size=128, d_model=768, d_kv=64, d_ff=1024, num_layers=1, num_heads=12,
                    dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    audio = EncodecConfig(
        sampling_rate=sr, audio_channels=1, hidden_size=32, num_filters=8, upsampling_ratios=ratios,
        num_residual_layers=1, num_lstm_layers=1, codebook_size=codebook_size, codebook_dim=32,
        target_bandwidths=[n_codebooks * frame_rate * math.log2(codebook_size) / 1000],
        normalize=False, use_causal_conv=False, use_conv_shortcut=False, chunk_length_s=None, overlap=None)
    decoder = MusicgenDecoderConfig(
        vocab_size=codebook_size, hidden_size=width, num_hidden_layers=6, num_attention_heads=8,
        ffn_dim=4 * width, num_codebooks=n_codebooks, max_position_embeddings=2048, dropout=0.0,
        initializer_factor=0.2, pad_token_id=codebook_size, bos_token_id=codebook_size)
    config = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder,
                            decoder_start_token_id=codebook_size, pad_token_id=codebook_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        MusicgenForConditionalGeneration(config).save_pretrained(folder)
    (folder / "mumu_decoder.json").write_text(json.dumps({"n_cond_tokens": 128}) + "\n")
    return folder


# ------------------------------------------------------------------------------ the two calls
def audioldm2_calls(dec: AudioLDM2Decoder, steps: int, seconds: float, seed: int = 0):
    """ours: render_projected; direct: the diffusers pipeline with the same four embeddings."""
    flat = torch.randn(1, 1, dec.cond_dim, generator=torch.Generator().manual_seed(1)).to(dec.device)
    prompt, generated = dec.split(flat)
    mask = torch.ones(1, dec.n_t5_tokens, dtype=torch.long, device=dec.device)
    n = round(seconds * dec.sampling_rate)

    def ours():
        return dec.render_projected(flat, seconds, steps=steps, guidance_scale=3.5, seed=seed)[0]

    def direct():
        out = dec.pipe(prompt_embeds=prompt, negative_prompt_embeds=torch.zeros_like(prompt),
                       generated_prompt_embeds=generated,
                       negative_generated_prompt_embeds=torch.zeros_like(generated),
                       attention_mask=mask, negative_attention_mask=mask, audio_length_in_s=seconds,
                       num_inference_steps=steps, guidance_scale=3.5,
                       generator=torch.Generator().manual_seed(seed), output_type="np")
        return out.audios[0, :n]

    return ours, direct, f"{steps} steps, {seconds:g} s"


def musicgen_calls(dec: MusicGenDecoder, seconds: float, seed: int = 0):
    """ours: render; direct: generate() on the same encoder output plus the zero null condition."""
    from transformers.modeling_outputs import BaseModelOutput

    cond = torch.randn(1, dec.cond_tokens, dec.cond_dim, generator=torch.Generator().manual_seed(1))
    cond = cond.to(dec.device)
    n = round(seconds * dec.sampling_rate)
    hop = math.prod(dec.model.config.audio_encoder.upsampling_ratios)
    new_tokens = math.ceil(n / hop) + dec.model.decoder.num_codebooks - 1
    hidden = torch.cat([cond, torch.zeros_like(cond)])
    mask = torch.cat([torch.ones(1, dec.cond_tokens, dtype=torch.long),
                      torch.zeros(1, dec.cond_tokens, dtype=torch.long)]).to(dec.device)
    dummy = torch.full((1, 1), -100, dtype=torch.long, device=dec.device)

    def ours():
        return dec.render(cond, seconds, guidance_scale=3.0, seed=seed)[0]

    @torch.no_grad()
    def direct():
        torch.manual_seed(seed)
        audio = dec.model.generate(inputs=dummy, attention_mask=mask,
                                   encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                                   max_new_tokens=new_tokens, guidance_scale=3.0, do_sample=True,
                                   temperature=1.0, top_k=250)
        return audio[0, 0, :n].float().cpu().numpy()

    return ours, direct, f"{new_tokens} tokens, {seconds:g} s"


# ------------------------------------------------------------------------------ timing
class _Replay:
    """Stands in for the pipeline: every attribute is the real one's, a call returns `out`."""

    def __init__(self, real, out):
        self._real, self._out = real, out

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __call__(self, *args, **kwargs):
        return self._out


def wrapper_cost(dec, ours, direct) -> float:
    """Seconds `ours` spends outside the library call beyond what `direct` spends there (both
    timed with the call replaced by a replay of its recorded output, median of WRAPPER_REPS)."""
    recorded = {}
    if isinstance(dec, AudioLDM2Decoder):
        real = dec.pipe

        class Recorder(_Replay):
            def __call__(self, *args, **kwargs):
                recorded["out"] = self._real(*args, **kwargs)
                return recorded["out"]

        dec.pipe = Recorder(real, None)
        try:
            ours()
            dec.pipe = _Replay(real, recorded["out"])
            return _median_time(ours) - _median_time(direct)
        finally:
            dec.pipe = real
    model = dec.model
    real_generate = model.generate

    def record(*args, **kwargs):
        recorded["out"] = real_generate(*args, **kwargs)
        return recorded["out"]

    model.generate = record
    try:
        ours()
        model.generate = lambda *args, **kwargs: recorded["out"]
        return _median_time(ours) - _median_time(direct)
    finally:
        del model.generate                      # back to the class's method


def _median_time(fn) -> float:
    times = []
    for _ in range(WRAPPER_REPS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(dec, ours, direct, reps: int, device) -> dict:
    a, b = ours(), direct()                                      # warm-up, and same work?
    if a.shape != b.shape or not np.array_equal(a, b):
        raise SystemExit(f"ours and direct differ (max |diff| {np.abs(a - b).max():.3g}): not comparable")
    times = {"ours": [], "direct": []}
    for i in range(reps):
        order = (("ours", ours), ("direct", direct)) if i % 2 == 0 else (("direct", direct), ("ours", ours))
        for name, fn in order:
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    wrapper = wrapper_cost(dec, ours, direct)
    return {"reps": reps, "direct_median_ms": 1e3 * med["direct"], "ours_median_ms": 1e3 * med["ours"],
            "direct_min_ms": 1e3 * low["direct"], "ours_min_ms": 1e3 * low["ours"],
            "overhead_median_pct": 100 * (med["ours"] / med["direct"] - 1),
            "overhead_min_pct": 100 * (low["ours"] / low["direct"] - 1),
            "wrapper_us": 1e6 * wrapper, "wrapper_pct": 100 * wrapper / low["direct"]}


def run(sizes: list[str], reps: int | None, device: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, quiet_progress():
        for size in sizes:
            spec = SIZES[size]
            n = reps or spec["reps"]
            t0 = time.perf_counter()
            folder = build_tiny_audioldm2(Path(tmp) / f"ldm-{size}", seed=0, **spec["ldm"])
            built = time.perf_counter() - t0
            dec = AudioLDM2Decoder.from_pretrained(folder, device=device)
            params = sum(p.numel() for p in dec.pipe.unet.parameters())
            ours, direct, work = audioldm2_calls(dec, spec["ldm_steps"], spec["ldm_seconds"])
            rows.append({"decoder": "audioldm2", "size": size, "cond": f"1 x {dec.cond_dim}",
                         "model": f"UNet {params / 1e6:.1f}M", "work": work, "build_s": built,
                         **measure(dec, ours, direct, n, device)})
            print(_fmt(rows[-1]), flush=True)
            del dec
            t0 = time.perf_counter()
            folder = build_musicgen(Path(tmp) / f"mg-{size}", **spec["mg"])
            built = time.perf_counter() - t0
            dec = MusicGenDecoder.from_pretrained(folder, device=device)
            params = sum(p.numel() for p in dec.model.decoder.parameters())
            ours, direct, work = musicgen_calls(dec, spec["mg_seconds"])
            rows.append({"decoder": "musicgen", "size": size, "cond": f"{dec.cond_tokens} x {dec.cond_dim}",
                         "model": f"decoder {params / 1e6:.1f}M", "work": work, "build_s": built,
                         **measure(dec, ours, direct, n, device)})
            print(_fmt(rows[-1]), flush=True)
            del dec
    return rows


# ------------------------------------------------------------------------------ report
COLUMNS = ("decoder", "size", "cond", "model", "work", "runs", "direct ms (median)", "ours ms (median)",
           "A/B (median)", "A/B (min)", "wrapper us", "wrapper %")


def _cells(r: dict) -> list[str]:
    return [r["decoder"], r["size"], r["cond"], r["model"], r["work"], str(r["reps"]),
            f"{r['direct_median_ms']:.1f}", f"{r['ours_median_ms']:.1f}",
            f"{r['overhead_median_pct']:+.1f}%", f"{r['overhead_min_pct']:+.1f}%",
            f"{r['wrapper_us']:.0f}", f"{r['wrapper_pct']:.3f}%"]


def _fmt(r: dict) -> str:
    return "  ".join(_cells(r))


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
            f"{os.cpu_count()} cores{load}")


def section(rows: list[dict], args) -> str:
    reps = f" --reps {args.reps}" if args.reps else ""
    return f"""{HEADING}

`python benchmarks/decoder_overhead.py --sizes {','.join(args.sizes)}{reps} --threads {args.threads} --device {args.device}`
on {machine(args.device)}, torch {torch.__version__}, fp32, batch 1, guidance on (AudioLDM2 3.5,
MusicGen 3.0). *Direct* calls diffusers' `AudioLDM2Pipeline` with the four embeddings (zero
negatives) or `MusicgenForConditionalGeneration.generate(encoder_outputs=...)`; *ours* is
`AudioLDM2Decoder.render_projected` / `MusicGenDecoder.render` with the same conditioning, steps
and seed. The script first checks that both give identical audio, then times them alternately
("runs" each, after a warm-up): A/B = ours / direct - 1 on the median and on the fastest run.
"wrapper us" is what our code adds: ours minus direct, both timed with the library call replaced
by a replay of its output (medians of {WRAPPER_REPS}); "wrapper %" is that share of the fastest
direct call. Goal: within 5%.

{table(rows)}

What the wrappers add per call: a reshape of the flat projector output, zero negative embeddings
and an all-ones mask (AudioLDM2); a concatenated zero null condition and a forked RNG (MusicGen);
the copy of the trimmed waveform into a new array: the "wrapper" columns. The A/B columns are
the same comparison end to end; where they differ from the wrapper share by more than that, it is
the timing noise of the machine (their sign changes from run to run; a shared machine with a
load average above its core count moves single runs of the tiny models by 20% and more).
"""


def write_readme(text: str, path: Path = README) -> None:
    """Replace this script's section of benchmarks/README.md, or append it; other sections are
    someone else's and stay as they are (the file is re-read right before writing)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(HEADING + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(HEADING))
        new = old[:start] + text + (old[end:] if end >= 0 else "")
    path.write_text(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=lambda s: s.split(","), default=["tiny", "medium"])
    ap.add_argument("--reps", type=int, default=None, help="A/B runs each (default: 21 tiny, 5 medium)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--write-readme", action="store_true", help=f"put the table under '{HEADING}' in {README}")
    args = ap.parse_args(argv)
    unknown = set(args.sizes) - set(SIZES)
    if unknown:
        ap.error(f"unknown sizes {sorted(unknown)} (choose from {', '.join(SIZES)})")
    torch.set_num_threads(args.threads)
    import transformers
    transformers.logging.set_verbosity_error()
    print("  ".join(COLUMNS))
    rows = run(args.sizes, args.reps, args.device)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.write_readme:
        write_readme(section(rows, args))
        print(f"\nwrote '{HEADING}' into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
