"""Ask MuMu-LLaMA about music, images and video, or have it write music.

One request:   python inference.py --prompt "Describe this music." --audio song.flac
Make music:    python inference.py --prompt "Write a calm piano piece." --music --duration 10 --output out.wav
Batch:         python inference.py --input requests.jsonl --output-dir results/
               (one JSON object per line: id, prompt, audio/image/video paths, music, duration;
               writes results.jsonl + WAVs; a rerun skips requests already answered)
With no --ckpt-dir the tiny offline bundle in ckpts/tiny is used (built on first use).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_CKPT = Path(__file__).resolve().parent / "ckpts" / "tiny"
MEDIA_KEYS = ("audio", "image", "video")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("weights")
    src.add_argument("--ckpt-dir", type=Path, default=None,
                     help="checkpoint bundle folder with bundle.json (default: the tiny bundle, built if missing)")
    src.add_argument("--llama-dir", type=Path, help="folder with tokenizer.model and <llama-type>/params.json")
    src.add_argument("--llama-type", help="subfolder of --llama-dir holding the weights, e.g. 7B")
    src.add_argument("--mert-path", type=Path, dest="mert")
    src.add_argument("--vit-path", type=Path, dest="vit")
    src.add_argument("--vivit-path", type=Path, dest="vivit")
    src.add_argument("--music-decoder", choices=["musicgen", "audioldm2"])
    src.add_argument("--music-decoder-path", type=Path)
    src.add_argument("--checkpoint", type=Path, help="published M2UGen/MuMu-LLaMA checkpoint.pth")
    src.add_argument("--mumu", type=Path, help="our trained weights folder (model.safetensors + config.json)")
    src.add_argument("--variant", choices=["mumu", "m2ugen"], help="adapter pooling of the checkpoint")
    src.add_argument("--trust-remote-code", action="store_true",
                     help="allow running the code shipped in a model folder (needed by real MERT)")
    req = p.add_argument_group("one request")
    req.add_argument("--prompt")
    req.add_argument("--audio", type=Path)
    req.add_argument("--image", type=Path)
    req.add_argument("--video", type=Path)
    req.add_argument("--output", type=Path, default=Path("output.wav"), help="WAV path for generated music")
    batch = p.add_argument_group("batch")
    batch.add_argument("--input", type=Path, help="requests JSONL")
    batch.add_argument("--output-dir", type=Path, help="where results.jsonl and WAVs go")
    gen = p.add_argument_group("generation")
    gen.add_argument("--music", action="store_true", help="always produce music (append [AUD0..7])")
    gen.add_argument("--duration", type=float, default=5.0, help="seconds of music")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=float, default=0.9)
    gen.add_argument("--guidance-scale", type=float, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    args = p.parse_args(argv)
    if (args.prompt is None) == (args.input is None):
        p.error("give either --prompt (one request) or --input (batch)")
    if args.input is not None and args.output_dir is None:
        p.error("--input needs --output-dir")
    if args.duration <= 0:
        p.error(f"--duration must be positive, got {args.duration}")
    if args.max_new_tokens < 0:
        p.error("--max-new-tokens must be >= 0")
    return args


def load_pipeline(args):
    import torch

    from llama.pipeline import BundlePaths, MuMuPipeline
    from llama.tiny import ensure_tiny_bundle

    ckpt = args.ckpt_dir
    if ckpt is None:
        ckpt = DEFAULT_CKPT
        ensure_tiny_bundle(ckpt)
    paths = BundlePaths.from_bundle(ckpt, llama_type=args.llama_type, variant=args.variant,
                                    music_decoder=args.music_decoder)
    for k in ("llama_dir", "mert", "vit", "vivit", "checkpoint"):   # CLI paths are cwd-relative
        if getattr(args, k) is not None:
            setattr(paths, k, getattr(args, k))
    if args.mumu is not None:
        setattr(paths, "mumu_audioldm2" if paths.music_decoder == "audioldm2" else "mumu", args.mumu)
    if args.music_decoder_path is not None:
        setattr(paths, paths.music_decoder, args.music_decoder_path)
    return MuMuPipeline.load(paths, device=args.device, dtype=getattr(torch, args.dtype),
                             trust_remote_code=args.trust_remote_code)


def write_wav(path: Path, audio, sample_rate: int) -> None:
    """Written to a temp file and renamed, so a killed run never leaves a truncated WAV."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".wav")
    os.close(fd)
    try:
        sf.write(tmp, audio, sample_rate, subtype="PCM_16")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def gen_kwargs(args, req: dict | None = None) -> dict:
    req = req or {}
    return dict(music=bool(req.get("music", args.music)), duration=float(req.get("duration", args.duration)),
                max_new_tokens=int(req.get("max_new_tokens", args.max_new_tokens)),
                temperature=float(req.get("temperature", args.temperature)), top_p=args.top_p,
                seed=int(req.get("seed", args.seed)), guidance_scale=args.guidance_scale)


def run_one(args) -> int:
    pipe = load_pipeline(args)
    ans = pipe.answer(args.prompt, audio=args.audio, image=args.image, video=args.video, **gen_kwargs(args))
    print(ans.text)
    if ans.audio is not None:
        write_wav(args.output, ans.audio, ans.sample_rate)
        print(f"[music: {len(ans.audio) / ans.sample_rate:.2f} s at {ans.sample_rate} Hz -> {args.output}]")
    return 0


def read_requests(path: Path) -> tuple[list[dict], list[str]]:
    """Parse the JSONL; bad lines are reported (line number and reason), never dropped silently."""
    requests, problems, seen = [], [], set()
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise SystemExit(f"{path}: cannot be read ({e.strerror or e})")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{n}: invalid JSON ({e.msg})")
            continue
        if not isinstance(req, dict) or not isinstance(req.get("prompt"), str):
            problems.append(f"{path}:{n}: needs an object with a 'prompt' string")
            continue
        req.setdefault("id", f"line{n}")
        req["id"] = str(req["id"])
        if req["id"] in seen:
            problems.append(f"{path}:{n}: duplicate id {req['id']!r}")
            continue
        seen.add(req["id"])
        for k in MEDIA_KEYS:                       # media paths are relative to the JSONL's folder
            if req.get(k):
                req[k] = str((path.parent / req[k]) if not os.path.isabs(req[k]) else req[k])
        requests.append(req)
    return requests, problems


def run_batch(args) -> int:
    from tqdm import tqdm

    from llama.checkpoint import CheckpointError
    from llama.media import MediaError

    requests, problems = read_requests(args.input)
    for msg in problems:
        print(f"skipped: {msg}", file=sys.stderr)
    out_dir = args.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.jsonl"
    done = set()
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue                          # a line cut by a kill; that request reruns
            if rec.get("error") is None:
                done.add(str(rec.get("id")))
    todo = [r for r in requests if r["id"] not in done]
    print(f"{len(requests)} requests: {len(requests) - len(todo)} already done, {len(todo)} to run, "
          f"{len(problems)} unreadable lines skipped", file=sys.stderr)
    if not todo:
        return 1 if problems else 0
    pipe = load_pipeline(args)
    failed = 0
    with results_path.open("a") as results:
        for req in tqdm(todo, desc="requests", unit="req", file=sys.stderr):
            rec = {"id": req["id"], "prompt": req["prompt"], "answer": None, "audio_out": None, "error": None}
            try:
                ans = pipe.answer(req["prompt"], **{k: req.get(k) for k in MEDIA_KEYS}, **gen_kwargs(args, req))
                rec["answer"] = ans.text
                rec["timings"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in ans.timings.items()}
                if ans.audio is not None:
                    wav = out_dir / f"{req['id']}.wav"
                    write_wav(wav, ans.audio, ans.sample_rate)
                    rec["audio_out"], rec["sample_rate"] = wav.name, ans.sample_rate
                    rec["audio_seconds"] = round(len(ans.audio) / ans.sample_rate, 4)
            except (MediaError, CheckpointError, ValueError) as e:   # this request's fault: record it
                failed += 1
                rec["error"] = str(e).splitlines()[0]
                print(f"request {req['id']}: {rec['error']}", file=sys.stderr)
            results.write(json.dumps(rec) + "\n")
            results.flush()
            if rec["error"] is None:
                print(f"[{req['id']}] {rec['answer']}" + (f"  -> {rec['audio_out']}" if rec["audio_out"] else ""))
    print(f"done: {len(todo) - failed} answered, {failed} failed -> {results_path}", file=sys.stderr)
    return 1 if failed or problems else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()   # config advisories drown the answers otherwise
    from llama.checkpoint import CheckpointError
    from llama.media import MediaError
    try:
        return run_batch(args) if args.input is not None else run_one(args)
    except (MediaError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
