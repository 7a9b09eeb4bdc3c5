"""Peak memory of loading huge media through llama.media (issue 13).

    python benchmarks/media_memory.py [--dir /tmp/media_memory] [--cases jpeg,png,flac,wav]

Writes (once, into --dir, never into the repository) a 12000 x 12000 JPEG and PNG and a 1-hour
48 kHz stereo FLAC and WAV, then loads each in a fresh subprocess (`load_image` /
`load_audio` at 24 kHz) and reports that process's peak RSS (`ru_maxrss`), next to the peak
of a process that only imports llama.media. Files are written by a subprocess too: Linux keeps
ru_maxrss across exec, so a parent that had written them would pass its own peak to every
child. The `llama` package imported is whatever PYTHONPATH finds first (default: this
checkout), so an older tree can be measured the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIDE = 12000              # image side, pixels
SECONDS, RATE = 3600, 48000

_CHILD = """
import json, resource, sys, time
from llama.media import load_audio, load_image
kind, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if kind == "image":
    out = load_image(path)
    shape = [out.height, out.width]
elif kind == "audio":
    out = load_audio(path, 24000)
    shape = list(out.shape)
else:
    shape = []
seconds = time.perf_counter() - t0
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "shape": shape, "seconds": seconds}))
"""


def write_image(path: Path) -> None:
    """A smooth gradient with mild noise (compresses in seconds, decodes like a photo)."""
    from PIL import Image

    rows = []
    rng = np.random.default_rng(0)
    for y0 in range(0, SIDE, 1000):  # built in strips: the whole RGB array is 432 MB
        yy, xx = np.mgrid[y0:y0 + 1000, 0:SIDE]
        strip = np.stack([xx * 255 // SIDE, yy * 255 // SIDE, (xx + yy) * 127 // SIDE], -1)
        rows.append((strip + rng.integers(0, 8, strip.shape)).astype(np.uint8))
    Image.fromarray(np.concatenate(rows)).save(path, quality=90) if path.suffix == ".jpg" else \
        Image.fromarray(np.concatenate(rows)).save(path, compress_level=1)


def write_audio(path: Path) -> None:
    """One hour of quiet stereo noise plus a tone, written a minute at a time."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as f:
        for minute in range(SECONDS // 60):
            t = np.arange(60 * RATE) / RATE + 60 * minute
            tone = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None]
            f.write((tone + 0.05 * rng.standard_normal((60 * RATE, 2))).astype(np.float32))


CASES = {"jpeg": ("image", "huge.jpg", write_image), "png": ("image", "huge.png", write_image),
         "flac": ("audio", "hour.flac", write_audio), "wav": ("audio", "hour.wav", write_audio)}


def measure(kind: str, path: Path | None) -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(ROOT))
    args = [sys.executable, "-c", _CHILD, kind, str(path or "")]
    run = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/media_memory"))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--write", choices=CASES, help=argparse.SUPPRESS)  # the writer subprocess
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.write:
        _, filename, write = CASES[args.write]
        return write(args.dir / filename)
    base = measure("none", None)
    print(f"import only: peak {base['peak_mb']:.0f} MB")
    for name in args.cases.split(","):
        kind, filename, write = CASES[name]
        path = args.dir / filename
        if not path.is_file():
            subprocess.run([sys.executable, __file__, "--write", name, "--dir", str(args.dir)], check=True)
        r = measure(kind, path)
        print(f"{name:5s} {path.stat().st_size / 2**20:7.0f} MB file -> {r['shape']}: peak "
              f"{r['peak_mb']:.0f} MB ({r['peak_mb'] - base['peak_mb']:+.0f} MB over import), "
              f"{r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
