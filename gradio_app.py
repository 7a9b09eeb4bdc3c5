"""Chat with MuMu-LLaMA in the browser: ask about music, images and video, or have it write music.

    python gradio_app.py                       # tiny offline bundle, http://127.0.0.1:7860
    python gradio_app.py --ckpt-dir ckpts/mumu --trust-remote-code --device cuda --dtype bfloat16

Binds 127.0.0.1 unless --host says otherwise; never makes a public share link.
With no --ckpt-dir the tiny offline bundle in ckpts/tiny is used (built on first use).
Every browser session has its own conversation (llama/chat.py) and its own folder for the music
it makes, removed when the session ends; requests wait in one queue (--concurrency at a time).
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

# Set before gradio is imported: no usage reports, nothing fetched from a hub.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np

import inference
from llama.long_music import EDIT_MODES

INTRO = """# MuMu-LLaMA
Ask about a piece of music, a picture or a video, or ask for music. The model sees the conversation
so far (the oldest turns drop out when it gets too long) and the latest file of each kind you gave
it; music it wrote becomes the music of the next turn, so "now make it slower" edits it. **Clear**
starts over."""


@dataclass
class AppConfig:
    """Limits of one running app (command-line options)."""
    max_upload_mb: float = 50.0          # larger uploads are refused with a message in the chat
    concurrency: int = 1                 # requests answered at once (one model: 1)
    queue_size: int = 32                 # requests waiting; more are turned away by gradio
    session_ttl_s: float = 3600.0        # an idle session's conversation and music are deleted after this
    edit_mode: str = "auto"              # llama.long_music.EDIT_MODES
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mumu-app-")))


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
    p.add_argument("--max-upload-mb", type=float, default=AppConfig.max_upload_mb,
                   help="largest upload answered, in MB (larger: a message in the chat)")
    p.add_argument("--concurrency", type=int, default=AppConfig.concurrency,
                   help="requests answered at once (others wait in the queue)")
    p.add_argument("--queue-size", type=int, default=AppConfig.queue_size, help="requests that may wait")
    p.add_argument("--edit-mode", choices=list(EDIT_MODES), default="auto",
                   help="music made with source audio also hears the source (see inference.py --help)")
    # The rest of what inference.load_pipeline reads: everything comes from bundle.json.
    p.set_defaults(llama_dir=None, llama_type=None, mert=None, vit=None, vivit=None, checkpoint=None,
                   mumu=None, variant=None, music_decoder_path=None)
    args = p.parse_args(argv)
    if not args.max_upload_mb > 0 or args.concurrency < 1 or args.queue_size < 1:
        p.error("--max-upload-mb, --concurrency and --queue-size must be positive")
    return args


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


def check_upload(kind: str, path, cfg: AppConfig) -> str | None:
    """An uploaded file the model can take: a known type of its kind, within the size limit."""
    from llama.errors import UserError
    from llama.media import guess_kind
    if not path:
        return None
    path = str(path)
    name = Path(path).name
    if guess_kind(path) != kind:
        raise UserError(f"{name}: not a {kind} file type the app reads ({Path(path).suffix or 'no extension'})")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise UserError(f"{name}: cannot be read ({e.strerror or e})") from None
    if size > cfg.max_upload_mb * 1e6:
        raise UserError(f"{name} is {size / 1e6:.1f} MB; uploads are limited to {cfg.max_upload_mb:g} MB "
                        f"(--max-upload-mb)")
    return path


def _settings(music, duration, temperature, top_p, seed, max_new_tokens, guidance_scale, cfg):
    from llama.chat import ChatSettings
    from llama.errors import UserError
    if not isinstance(music, bool):
        raise UserError(f"make music must be true or false, got {music!r}")
    return ChatSettings(duration=_num(duration, "duration"),
                        max_new_tokens=_num(max_new_tokens, "max new tokens", True),
                        temperature=_num(temperature, "temperature"), top_p=_num(top_p, "top-p"),
                        seed=_num(0 if seed is None else seed, "seed", True),
                        guidance_scale=None if guidance_scale is None else _num(guidance_scale, "guidance scale"),
                        edit_mode=cfg.edit_mode).checked()


def respond_stream(pipe, message, history, conv=None, audio=None, image=None, video=None, music=False,
                   duration=5.0, temperature=0.0, top_p=0.9, seed=0, max_new_tokens=128,
                   guidance_scale=None, cfg: AppConfig | None = None):
    """One chat turn with the conversation `conv` (created if None), as a generator of
    (history, audio_out, conv): the answer grows token by token, then a render progress line,
    then the final message with audio_out = (sample_rate, int16 array) or None.

    A user mistake (a bad or oversize upload, a bad number, a decoder or checkpoint problem) ends
    the turn with a one-line warning and an `Error:` message naming uploads by their own file
    name; the conversation is unchanged. Any other exception is a bug and propagates.
    """
    from llama.chat import Conversation
    from llama.chat_repl import TextStream
    from llama.errors import UserError, one_line
    from llama.request_schema import text

    cfg = cfg or AppConfig()
    history = list(history or [])
    message = (message or "").strip()
    if not message:
        _warn("Type a message first.")
        yield history, None, conv
        return
    history.append({"role": "user", "content": inference.display_text(_user_text(message, audio, image, video))})
    history.append({"role": "assistant", "content": "…"})

    def fail(e: UserError):
        err = one_line(_hide_upload_dirs(str(e), [audio, image, video])) or type(e).__name__
        _warn(err)
        history[-1] = {"role": "assistant", "content": f"Error: {err}"}
        return history, None, conv

    try:
        text("message", message)
        settings = _settings(music, duration, temperature, top_p, seed, max_new_tokens, guidance_scale, cfg)
        media = {k: check_upload(k, v, cfg) for k, v in (("audio", audio), ("image", image), ("video", video))}
        conv = conv if conv is not None else Conversation.temporary(cfg.workdir)
    except UserError as e:
        yield fail(e)
        return
    events: queue.Queue = queue.Queue()
    streamer = TextStream(pipe.tokenizer, lambda s: events.put(("text", None)))
    last_aud = pipe.model.aud_ids[-1]

    def on_token(row, token):
        streamer(row, token)
        if token == last_aud:                              # [AUD7]: the answer is done, music next
            events.put(("progress", 0.0))

    def work():
        try:
            events.put(("done", conv.ask(pipe, message, music=music, settings=settings, on_token=on_token,
                                         progress=lambda d, t: events.put(("progress", d / t)), **media)))
        except UserError as e:
            events.put(("error", e))
        except BaseException as e:                         # a bug: re-raised in the handler below
            events.put(("bug", e))

    threading.Thread(target=work, daemon=True, name="mumu-turn").start()
    while True:
        kind, payload = events.get()
        shown = inference.display_text(streamer.shown)
        if kind == "text":
            history[-1] = {"role": "assistant", "content": shown or "…"}
        elif kind == "progress":
            history[-1] = {"role": "assistant", "content": f"{shown}\n\n*rendering music… {payload:.0%}*"}
        elif kind == "error":
            yield fail(payload)
            return
        elif kind == "bug":
            raise payload
        else:
            ans, audio_out = payload, None
            reply = inference.display_text(ans.text) or "(no text)"
            if ans.audio is not None:
                audio_out = (int(ans.sample_rate), _to_int16(ans.audio))
                reply += f"\n\n*[music: {len(ans.audio) / ans.sample_rate:.2f} s at {ans.sample_rate} Hz]*"
            if conv.dropped:
                reply += f"\n\n*[{conv.dropped} oldest turns left out to fit the context]*"
            history[-1] = {"role": "assistant", "content": reply}
            yield history, audio_out, conv
            return
        yield history, None, conv


def respond(pipe, message, history, audio=None, image=None, video=None, music=False, duration=5.0,
            temperature=0.0, top_p=0.9, seed=0, max_new_tokens=128, guidance_scale=None, conv=None,
            cfg: AppConfig | None = None):
    """respond_stream run to the end: (history, audio_out). Without `conv` the turn is answered
    in a fresh conversation that is removed afterwards."""
    own = conv is None
    out = (history, None, conv)
    try:
        for out in respond_stream(pipe, message, history, conv, audio, image, video, music, duration,
                                  temperature, top_p, seed, max_new_tokens, guidance_scale, cfg):
            pass
    finally:
        if own and out[2] is not None:
            out[2].close()
    return out[0], out[1]


def _close_session(conv) -> None:
    """gr.State's delete_callback: a session ended or expired, its music goes."""
    if conv is not None:
        conv.close()


def build_demo(pipe, cfg: AppConfig | None = None):
    import gradio as gr

    cfg = cfg or AppConfig()
    with gr.Blocks(title="MuMu-LLaMA", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        conv_state = gr.State(None, time_to_live=cfg.session_ttl_s, delete_callback=_close_session)
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chat")
                msg = gr.Textbox(label="Message", placeholder="Describe this music. / Write a calm piano piece.",
                                 lines=2, elem_id="message")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear = gr.Button("Clear")
                music_out = gr.Audio(label="Generated music", type="numpy", interactive=False, elem_id="music_out")
            with gr.Column(scale=2):
                audio_in = gr.File(label="Music (optional)", type="filepath", elem_id="audio_in")
                image_in = gr.File(label="Image (optional)", type="filepath", elem_id="image_in")
                video_in = gr.File(label="Video (optional)", type="filepath", elem_id="video_in")
                make_music = gr.Checkbox(label="Make music", value=False, elem_id="make_music")
                duration = gr.Slider(0.1, 120, value=5, step=0.1, label="Duration (s)", elem_id="duration")
                temperature = gr.Slider(0, 1.5, value=0, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="Top-p")
                seed = gr.Number(value=0, precision=0, label="Seed")
                max_new = gr.Slider(1, 512, value=128, step=1, label="Max new tokens", elem_id="max_new")
                gr.Markdown(f"Uploads up to {cfg.max_upload_mb:g} MB.")

        def _respond(message, history, conv, audio, image, video, music, dur, temp, tp, sd, mnt):
            for history, audio_out, conv in respond_stream(pipe, message, history, conv, audio, image, video,
                                                           music, dur, temp, tp, sd, mnt, cfg=cfg):
                yield history, audio_out, "", conv, None, None, None

        def _clear(conv):
            if conv is not None:
                conv.reset()
            return [], None, "", conv

        inputs = [msg, chatbot, conv_state, audio_in, image_in, video_in, make_music, duration, temperature,
                  top_p, seed, max_new]
        outputs = [chatbot, music_out, msg, conv_state, audio_in, image_in, video_in]
        gr.on([send.click, msg.submit], _respond, inputs, outputs, api_name="chat",
              concurrency_limit=cfg.concurrency, concurrency_id="model")
        clear.click(_clear, [conv_state], [chatbot, music_out, msg, conv_state], api_name="clear")
    return demo


def serve(demo, cfg: AppConfig, host: str, port: int, block: bool = True):
    """Queue and launch (127.0.0.1 unless asked otherwise, never shared). Uploads over twice the
    chat limit are refused by gradio itself, before they are stored."""
    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.concurrency)
    return demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                       max_file_size=int(2 * cfg.max_upload_mb * 1e6), quiet=not block)


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
    cfg = AppConfig(max_upload_mb=args.max_upload_mb, concurrency=args.concurrency, queue_size=args.queue_size,
                    edit_mode=args.edit_mode)
    try:
        demo = build_demo(pipe, cfg)
        serve(demo, cfg, args.host, args.port)
    except OSError as e:                  # the address is taken or cannot be bound: the user's choice
        print(f"error: cannot serve on {args.host}:{args.port} ({one_line(e.strerror or str(e))})", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(cfg.workdir, ignore_errors=True)     # every session's music
    return 0


if __name__ == "__main__":
    sys.exit(main())
