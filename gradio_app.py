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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def _num(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


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
    is (sample_rate, int16 array) or None. Bad input (unreadable media, a decoder or checkpoint
    problem, a bad number) is shown as a one-line warning and an error message in the chat; it never
    raises, so the app keeps working.
    """
    from llama.checkpoint import CheckpointError
    from llama.decoders import DecoderError
    from llama.media import MediaError

    history = list(history or [])
    message = (message or "").strip()
    if not message:
        _warn("Type a message first.")
        return history, None
    history.append({"role": "user", "content": _user_text(message, audio, image, video)})
    try:
        ans = pipe.answer(message, audio=audio or None, image=image or None, video=video or None,
                          music=bool(music), duration=_num(duration, "duration"),
                          max_new_tokens=int(_num(max_new_tokens, "max new tokens")),
                          temperature=_num(temperature, "temperature"), top_p=_num(top_p, "top-p"),
                          seed=int(_num(seed or 0, "seed")), guidance_scale=guidance_scale)
    except (MediaError, DecoderError, CheckpointError, FileNotFoundError, ValueError) as e:
        err = (str(e).splitlines() or [type(e).__name__])[0]
        _warn(err)
        history.append({"role": "assistant", "content": f"Error: {err}"})
        return history, None
    text = ans.text or "(no text)"
    audio_out = None
    if ans.audio is not None:
        audio_out = (int(ans.sample_rate), _to_int16(ans.audio))
        text += f"\n\n*[music: {len(ans.audio) / ans.sample_rate:.2f} s at {ans.sample_rate} Hz]*"
    history.append({"role": "assistant", "content": text})
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
    from llama.checkpoint import CheckpointError
    try:
        pipe = load_pipeline(args)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host}: the app is reachable from the network", file=sys.stderr)
    demo = build_demo(pipe)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
