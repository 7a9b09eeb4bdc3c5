"""Ask MuMu-LLaMA about music, images and video, or have it write music.

One request:   python inference.py --prompt "Describe this music." --audio song.flac
Make music:    python inference.py --prompt "Write a calm piano piece." --music --duration 10 --output out.wav
Batch:         python inference.py --input requests.jsonl --output-dir results/ --batch-size 8
               (one JSON object per line: id, prompt, audio/image/video paths, music, duration;
               writes results.jsonl + WAVs; a rerun skips requests already answered)
Many GPUs:     accelerate launch --num_processes 4 inference.py --input requests.jsonl --output-dir results/
With no --ckpt-dir the tiny offline bundle in ckpts/tiny is used (built on first use).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CKPT = Path(__file__).resolve().parent / "ckpts" / "tiny"
MEDIA_KEYS = ("audio", "image", "video")


class Parser(argparse.ArgumentParser):
    """Option mistakes print one line `error: ...` (exit 2), like every other user mistake."""

    def error(self, message):
        from llama.errors import one_line
        self.exit(2, f"error: {one_line(message)} (see --help)\n")


def _option(name: str):
    """argparse type for a checked number option: same ranges as a batch request's field."""
    def convert(text: str):
        from llama.request_schema import CHECKS, RequestError
        try:
            value = int(text) if name in ("seed", "max_new_tokens") else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        try:
            return CHECKS[name](value)
        except RequestError as e:
            raise argparse.ArgumentTypeError(str(e).replace(name, "value", 1)) from None
    convert.__name__ = name
    return convert


def _positive(name: str):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not 1 <= value <= 4096:
            raise argparse.ArgumentTypeError(f"must be between 1 and 4096, got {value}")
        return value
    convert.__name__ = name
    return convert


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("weights")
    src.add_argument("--ckpt-dir", type=Path, default=None,
                     help="checkpoint bundle folder with bundle.json (default: the tiny bundle, built if missing)")
    src.add_argument("--llama-dir", type=Path, help="LLaMA folder: tokenizer.model + <llama-type>/ in Meta (params.json) or Hugging Face (config.json + safetensors) format, or itself an HF folder")
    src.add_argument("--llama-type", help="subfolder of --llama-dir holding the weights, e.g. 7B")
    src.add_argument("--mert-path", type=Path, dest="mert")
    src.add_argument("--vit-path", type=Path, dest="vit")
    src.add_argument("--vivit-path", type=Path, dest="vivit")
    src.add_argument("--music-decoder", choices=["musicgen", "audioldm2"])
    src.add_argument("--music-decoder-path", type=Path)
    src.add_argument("--melody-decoder-path", type=Path, dest="musicgen_melody",
                     help="a MusicGen-Melody folder that makes edits (--edit-mode auto/melody) beside MusicGen")
    src.add_argument("--checkpoint", type=Path, help="published M2UGen/MuMu-LLaMA checkpoint.pth")
    src.add_argument("--mumu", type=Path, help="our trained weights folder (model.safetensors + config.json)")
    src.add_argument("--variant", choices=["mumu", "m2ugen"], help="flavour of --checkpoint (default: read off the file; refused if the file is the other one)")
    src.add_argument("--trust-remote-code", action="store_true",
                     help="allow running the code shipped in a model folder (needed by real MERT)")
    req = p.add_argument_group("one request")
    req.add_argument("--prompt")
    req.add_argument("--audio", type=Path)
    req.add_argument("--image", type=Path)
    req.add_argument("--video", type=Path)
    req.add_argument("--output", type=Path, default=None,
                     help="WAV path for generated music (default output.wav; only .wav is written)")
    batch = p.add_argument_group("batch")
    batch.add_argument("--input", type=Path, help="requests JSONL")
    batch.add_argument("--output-dir", type=Path, help="where results.jsonl and WAVs go")
    batch.add_argument("--batch-size", type=_positive("--batch-size"), default=1,
                       help="requests answered together (grouped by modality mix and prompt length); "
                            "each answer is the one it gets alone")
    gen_speed = p.add_argument_group("speed")
    gen_speed.add_argument("--compile", action="store_true",
                           help="compiled one-token decode step over a preallocated KV cache (torch.compile); "
                                "same tokens, first request pays the compile time")
    gen_speed.add_argument("--weight-layout", choices=["columns", "rows", "onednn"], default="columns",
                           help="fp32 CPU weight layout of the LLM: columns (fastest at batch 1), onednn (columns "
                                "plus oneDNN copies for batches of 2-16 rows: faster batches, more memory) or rows "
                                "(faster at batch 4-8 on some CPUs); measure with benchmarks/batch_inference.py --layout")
    gen = p.add_argument_group("generation (also the defaults of batch requests)")
    gen.add_argument("--music", action="store_true", help="always produce music (append [AUD0..7])")
    gen.add_argument("--duration", type=_option("duration"), default=5.0, help="seconds of music")
    gen.add_argument("--max-new-tokens", type=_option("max_new_tokens"), default=128)
    gen.add_argument("--temperature", type=_option("temperature"), default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=_option("top_p"), default=0.9)
    gen.add_argument("--guidance-scale", type=_option("guidance_scale"), default=None)
    gen.add_argument("--seed", type=_option("seed"), default=0)
    gen.add_argument("--edit-mode", choices=["auto", "prompt", "melody", "init", "none"], default="auto",
                     help="music with source audio (one request, --chat): also condition the decoder on the "
                          "source (prompt: MusicGen continues it; melody: MusicGen-Melody chroma; init: AudioLDM2 "
                          "starts from its latents); auto = melody when a MusicGen-Melody is beside MusicGen "
                          "(bundle.json musicgen_melody, --melody-decoder-path), else prompt for MusicGen, melody "
                          "for a MusicGen-Melody folder, init for AudioLDM2. Batch requests render without it")
    gen.add_argument("--edit-strength", type=float, default=0.6,
                     help="--edit-mode init: how far from the source, 0 (the source) to 1 (from scratch)")
    gen.add_argument("--stream", action="store_true", help="print the answer token by token (one request, --chat)")
    p.add_argument("--chat", action="store_true",
                   help="a conversation in the terminal: /audio PATH, /image PATH, /video PATH, /music, /reset; "
                        "music goes into --output-dir (else a temporary folder removed at exit)")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    args = p.parse_args(argv)
    if args.chat and (args.prompt is not None or args.input is not None):
        p.error("--chat reads its messages from the terminal; leave out --prompt and --input")
    if not args.chat and (args.prompt is None) == (args.input is None):
        p.error("give either --prompt (one request) or --input (batch)")
    if args.input is not None and args.output_dir is None:
        p.error("--input needs --output-dir")
    if not 0 <= args.edit_strength <= 1:
        p.error(f"--edit-strength {args.edit_strength:g}: give a number from 0 (the source) to 1 (from scratch)")
    if args.input is not None and args.output is not None:
        p.error("--output is for one request; a batch writes into --output-dir")
    if args.output is not None and args.output.suffix.lower() != ".wav":
        p.error(f"--output {args.output}: only .wav files are written (not {args.output.suffix or 'no extension'}; "
                "convert the WAV afterwards, e.g. with ffmpeg, for mp3)")
    return args


def load_pipeline(args):
    import torch

    from llama.pipeline import BundlePaths, MuMuPipeline
    from llama.tiny import ensure_tiny_bundle

    ckpt = args.ckpt_dir
    if ckpt is None:
        ckpt = DEFAULT_CKPT
        ensure_tiny_bundle(ckpt)
    if ckpt.exists() and not ckpt.is_dir():      # from_bundle would raise NotADirectoryError
        from llama.checkpoint import CheckpointError
        raise CheckpointError(f"{ckpt}: not a folder (--ckpt-dir takes a bundle folder with bundle.json)")
    paths = BundlePaths.from_bundle(ckpt, llama_type=args.llama_type, variant=args.variant,
                                    music_decoder=args.music_decoder)
    for k in ("llama_dir", "mert", "vit", "vivit", "checkpoint", "musicgen_melody"):   # cwd-relative
        if getattr(args, k, None) is not None:
            setattr(paths, k, getattr(args, k))
    if args.mumu is not None:
        setattr(paths, "mumu_audioldm2" if paths.music_decoder == "audioldm2" else "mumu", args.mumu)
    if args.music_decoder_path is not None:
        setattr(paths, paths.music_decoder, args.music_decoder_path)
    _check_tokenizer(paths.llama_dir / "tokenizer.model")
    return MuMuPipeline.load(paths, device=args.device, dtype=getattr(torch, args.dtype),
                             trust_remote_code=args.trust_remote_code,
                             layout=getattr(args, "weight_layout", "columns"))


def _check_device(name: str) -> None:
    """A device torch knows and this machine has, before anything is loaded onto it."""
    import torch

    from llama.errors import UserError
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r}: not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here")


def _check_tokenizer(path: Path) -> None:
    """llama.tokenizer.Tokenizer raises FileNotFoundError/ValueError for a missing or bad file,
    which here is a wrong --llama-dir / bundle: turned into the one user-error type."""
    from llama.checkpoint import CheckpointError
    from llama.tokenizer import Tokenizer

    try:
        Tokenizer(path)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(str(e)) from None


def display_text(text: str) -> str:
    """Model text as shown to a person: control characters (escape sequences, NULs, stray CRs)
    become spaces, line breaks stay, surrounding blank space goes. results.jsonl keeps it raw."""
    lines = ("".join(ch if ch.isprintable() or ch == "\t" else " " for ch in line).rstrip()
             for line in str(text).splitlines())
    return "\n".join(lines).strip()


def cli_request(args) -> "Request":
    """The one request of the command line, checked like a batch line."""
    from llama.request_schema import FIELDS, Request, media_path, text

    values = {k: getattr(args, k) for k in FIELDS if k not in ("id", "prompt", "audio", "image", "video")}
    for k in MEDIA_KEYS:
        path = getattr(args, k)
        values[k] = media_path(f"--{k}", None if path is None else str(path), None)
    return Request(id="cli", prompt=text("--prompt", args.prompt), **values)


def run_one(args) -> int:
    from llama.request_schema import check_against
    from llama.safe_paths import check_output_file, write_wav

    req = cli_request(args)
    output = args.output or Path("output.wav")
    if args.music or args.output is not None:      # where music will go: writable before generating
        check_output_file(output)
    pipe = load_pipeline(args)
    check_against(pipe, req)
    step = None
    if args.compile:
        from llama.compiled_decode import CompiledDecode
        step = CompiledDecode.for_model(pipe.model)
    stream = None
    if args.stream:
        from llama.chat_repl import TextStream, printable
        stream = TextStream(pipe.tokenizer, lambda s: print(printable(s), end="", flush=True))
    ans = pipe.answer(req.prompt, **req.media(), **req.gen_kwargs(), decode_step=step, on_token=stream,
                      edit_mode=args.edit_mode, edit_strength=args.edit_strength)
    print("" if stream else (display_text(ans.text) or "(no text)"), flush=True)
    if ans.audio is not None:
        check_output_file(output)
        write_wav(output, ans.audio, ans.sample_rate)
        print(f"[music: {len(ans.audio) / ans.sample_rate:.2f} s at {ans.sample_rate} Hz -> {output}]")
    return 0


def run_chat(args) -> int:
    """The terminal conversation (llama/chat_repl.py); music into --output-dir or a temp folder."""
    import tempfile

    from llama.chat import ChatSettings
    from llama.chat_repl import repl
    from llama.safe_paths import ensure_writable_dir

    settings = ChatSettings(duration=args.duration, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                            guidance_scale=args.guidance_scale, edit_mode=args.edit_mode)
    out_dir = ensure_writable_dir(args.output_dir) if args.output_dir is not None else None
    pipe = load_pipeline(args)
    if out_dir is not None:
        return repl(pipe, settings, out_dir, stream=args.stream, keep_music=True)
    with tempfile.TemporaryDirectory(prefix="mumu-chat-") as tmp:
        return repl(pipe, settings, Path(tmp), stream=args.stream)


def run_batch(args) -> int:
    """The batch job (llama/batch_job.py), with this file's loader and display."""
    from llama.batch_job import run_batch as job

    return job(args, lambda a: load_pipeline(a), display_text, DEFAULT_CKPT)


def main(argv=None) -> int:
    args = parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()   # config advisories drown the answers otherwise
    from llama.errors import UserError, one_line
    try:
        _check_device(args.device)
        if args.chat:
            return run_chat(args)
        return run_batch(args) if args.input is not None else run_one(args)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
