"""Chat with MuMu-LLaMA in the browser: ask about music, images and video, or have it write music.

    python gradio_app.py                       # tiny offline bundle, http://127.0.0.1:7860
    python gradio_app.py --ckpt-dir ckpts/mumu --trust-remote-code --device cuda --dtype bfloat16

Binds 127.0.0.1 unless --host says otherwise; never makes a public share link.
With no --ckpt-dir the tiny offline bundle in ckpts/tiny is used (built on first use).
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path

# Set before gradio is imported: no usage reports, nothing fetched from a hub.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np

import inference

INTRO = """# MuMu-LLaMA
Ask about a piece of music, a picture or a video, or ask for music. Attach at most one file of each
kind; tick **Make music** to always get audio. Each turn is answered **on its own**: the model is
single-turn and does not see the earlier messages."""


def parse_args(argv=None) -> argparse.Namespace:
    p = inference.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt-dir", type=Path, default=None,
                   help="checkpoint bundle folder with bundle.json (default: the tiny bundle, built if missing)")
    p.add_argument("--music-decoder", choices=["musicgen", "audioldm2"])
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the app to the network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow running the code shipped in a model folder (needed by real MERT)")
    # The rest of what inference.load_pipeline reads: everything comes from bundle.json.
    p.set_defaults(llama_dir=None, llama_type=None, mert=None, vit=None, vivit=None, checkpoint=None,
                   mumu=None, variant=None, music_decoder_path=None)
    return p.parse_args(argv)


def load_pipeline(args: argparse.Namespace):
    """The same bundle resolution as inference.py (tiny bundle by default)."""
    return inference.load_pipeline(args)


def _to_int16(audio: np.ndarray) -> np.ndarray:
    """float waveform in [-1, 1] -> int16 without rescaling (gradio would normalise the peak)."""
    return (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)


def _user_text(message: str, audio, image, video) -> str:
    attached = [f"{kind}: {Path(path).name}" for kind, path in (("audio", audio), ("image", image), ("video", video))
                if path]
    return message + (f"\n\n*[{', '.join(attached)}]*" if attached else "")


def _num(value, name: str, integer: bool = False):
    """A widget's value as a number for the request schema (which checks the range)."""
    from llama.request_schema import RequestError
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{name} must be a number, got {value!r}") from None
    return int(number) if integer and number.is_integer() else number


def _hide_upload_dirs(message: str, uploads: list) -> str:
    """Uploads arrive as <server temp dir>/<original name>: show the person only the name."""
    for path in sorted((str(p) for p in uploads if p), key=len, reverse=True):
        name = Path(path).name
        for form in {path, str(Path(path).resolve()), os.path.abspath(path)}:
            message = message.replace(form, name)
    return message


def _warn(msg: str) -> None:
    try:
        import gradio as gr
        gr.Warning(msg)
    except ImportError:            # respond() is usable without gradio
        print(f"warning: {msg}", file=sys.stderr)


def respond(pipe, message, history, audio=None, image=None, video=None, music=False, duration=5.0,
            temperature=0.0, top_p=0.9, seed=0, max_new_tokens=128, guidance_scale=None):
    """One chat turn = one `pipe.answer` call. Returns (history, audio_out).

    history is a list of {"role", "content"} messages (the Chatbot's "messages" format); audio_out
    is (sample_rate, int16 array) or None. A user mistake (unreadable media, a bad number, a
    decoder or checkpoint problem) is shown as a one-line warning and an error message in the
    chat, naming uploads by their own file name; any other exception is a bug and propagates.
    """
    from llama.errors import UserError, one_line
    from llama.request_schema import CHECKS, Request, check_against, media_path, text

    history = list(history or [])
    message = (message or "").strip()
    if not message:
        _warn("Type a message first.")
        return history, None
    history.append({"role": "user", "content": inference.display_text(_user_text(message, audio, image, video))})
    try:
        if not isinstance(music, bool):
            raise UserError(f"make music must be true or false, got {music!r}")
        req = Request(id="chat", prompt=text("message", message), music=music,
                      **{k: media_path(k, v or None, None) for k, v in (("audio", audio), ("image", image),
                                                                     ("video", video))},
                      duration=CHECKS["duration"](_num(duration, "duration")),
                      max_new_tokens=CHECKS["max_new_tokens"](_num(max_new_tokens, "max new tokens", True)),
                      temperature=CHECKS["temperature"](_num(temperature, "temperature")),
                      top_p=CHECKS["top_p"](_num(top_p, "top-p")),
                      seed=CHECKS["seed"](_num(0 if seed is None else seed, "seed", True)),
                      guidance_scale=CHECKS["guidance_scale"](
                          None if guidance_scale is None else _num(guidance_scale, "guidance scale")))
        check_against(pipe, req)
        ans = pipe.answer(req.prompt, **req.media(), **req.gen_kwargs())
    except UserError as e:
        err = one_line(_hide_upload_dirs(str(e), [audio, image, video])) or type(e).__name__
        _warn(err)
        history.append({"role": "assistant", "content": f"Error: {err}"})
        return history, None
    text_out = inference.display_text(ans.text) or "(no text)"
    audio_out = None
    if ans.audio is not None:
        audio_out = (int(ans.sample_rate), _to_int16(ans.audio))
        text_out += f"\n\n*[music: {len(ans.audio) / ans.sample_rate:.2f} s at {ans.sample_rate} Hz]*"
    history.append({"role": "assistant", "content": text_out})
    return history, audio_out


def build_demo(pipe):
    import gradio as gr

    # gradio 5 defaults to the old tuple format; gradio 6 only has messages (and no `type`).
    chat_kwargs = {"type": "messages"} if "type" in inspect.signature(gr.Chatbot.__init__).parameters else {}
    with gr.Blocks(title="MuMu-LLaMA", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=420, **chat_kwargs)
                msg = gr.Textbox(label="Message", placeholder="Describe this music. / Write a calm piano piece.",
                                 lines=2)
                with gr.Row():
                    send = gr.Button("Send", variant="primary")
                    clear = gr.Button("Clear")
                music_out = gr.Audio(label="Generated music", type="numpy", interactive=False)
            with gr.Column(scale=2):
                audio_in = gr.Audio(label="Music (optional)", type="filepath", sources=["upload"])
                image_in = gr.Image(label="Image (optional)", type="filepath", sources=["upload"])
                video_in = gr.Video(label="Video (optional)", sources=["upload"])
                make_music = gr.Checkbox(label="Make music", value=False)
                duration = gr.Slider(0.5, 30, value=5, step=0.5, label="Duration (s)")
                temperature = gr.Slider(0, 1.5, value=0, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="Top-p")
                seed = gr.Number(value=0, precision=0, label="Seed")
                max_new = gr.Slider(1, 512, value=128, step=1, label="Max new tokens")

        def _respond(message, history, audio, image, video, music, dur, temp, tp, sd, mnt):
            history, audio_out = respond(pipe, message, history, audio, image, video, music, dur,
                                         temp, tp, sd, mnt)
            return history, audio_out, ""

        inputs = [msg, chatbot, audio_in, image_in, video_in, make_music, duration, temperature, top_p, seed,
                  max_new]
        outputs = [chatbot, music_out, msg]
        gr.on([send.click, msg.submit], _respond, inputs, outputs, api_name="chat",
              concurrency_limit=1)                       # one model: one request at a time
        clear.click(lambda: ([], None, ""), None, [chatbot, music_out, msg], api_name="clear")
    return demo


def main(argv=None) -> int:
    args = parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    from llama.errors import UserError, one_line
    try:
        pipe = load_pipeline(args)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host}: the app is reachable from the network", file=sys.stderr)
    demo = build_demo(pipe)
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port, share=False)
    except OSError as e:                  # the address is taken or cannot be bound: the user's choice
        print(f"error: cannot serve on {args.host}:{args.port} ({one_line(e.strerror or str(e))})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
