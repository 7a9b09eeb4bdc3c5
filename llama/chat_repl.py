"""`inference.py --chat`: a conversation in the terminal, one line per turn.

Lines starting with a command attach media or change the next turn (llama.chat.COMMANDS); any
other line is a message. Mistakes (a missing file, an unreadable one, a message too long) print
one `error:` line and the conversation goes on.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .chat import COMMANDS, ChatSettings, Conversation
from .errors import UserError, one_line


class TextStream:
    """Token ids in, newly decoded text out: decodes the whole answer so far and hands on only
    what is new, so multi-piece characters and spaces come out right."""

    def __init__(self, tokenizer, write):
        self.tokenizer, self.write = tokenizer, write
        self.ids: list[int] = []
        self.shown = ""

    def __call__(self, row: int, token: int) -> None:
        self.ids.append(token)
        now = self.tokenizer.decode(self.ids).lstrip()
        if now.startswith(self.shown) and len(now) > len(self.shown):
            self.write(now[len(self.shown):])
            self.shown = now


def printable(text: str) -> str:
    """Model text for a terminal: control characters (escape sequences) become spaces."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text)


def repl(pipe, settings: ChatSettings, folder: Path, stream: bool = False,
         lines=None, out=None, keep_music: bool = False) -> int:
    """Read lines from `lines` (stdin), answer each message with the conversation so far."""
    from .request_schema import media_path

    lines = sys.stdin if lines is None else lines
    out = sys.stdout if out is None else out
    say = lambda msg="": print(msg, file=out, flush=True)                      # noqa: E731
    conv = Conversation(folder, keep_music=keep_music)
    music_next = False
    say("chat: type a message; " + ", ".join(f"{c} ({h})" for c, h in COMMANDS.items()))
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                cmd, _, rest = line.partition(" ")
                if cmd in ("/quit", "/exit"):
                    break
                if cmd == "/help":
                    say("\n".join(f"  {c:8} {h}" for c, h in COMMANDS.items()))
                elif cmd == "/reset":
                    conv.reset()
                    music_next = False
                    say("[conversation and media forgotten]")
                elif cmd == "/music":
                    music_next = True
                    say("[the next answer writes music]")
                elif cmd in ("/audio", "/image", "/video"):
                    parts = shlex.split(rest)
                    if len(parts) != 1:
                        raise UserError(f"{cmd} takes one file path")
                    path = Path(parts[0]).expanduser()
                    if not path.is_file():
                        raise UserError(f"{cmd} {parts[0]}: no such file")
                    conv.attach(cmd[1:], media_path(cmd, str(path), None))
                    say(f"[{cmd[1:]}: {path.name}]")
                else:
                    raise UserError(f"unknown command {cmd} (/help lists them)")
                continue
            streamer = TextStream(pipe.tokenizer, lambda s: print(printable(s), end="", file=out, flush=True)) \
                if stream else None
            ans = conv.ask(pipe, line, music=music_next, settings=settings, on_token=streamer)
            if stream:
                say()
            else:
                from inference import display_text
                say(display_text(ans.text) or "(no text)")
            music_next = False
            if conv.turns[-1].music is not None:
                say(f"[music: {len(ans.audio) / ans.sample_rate:.2f} s at {ans.sample_rate} Hz -> "
                    f"{conv.turns[-1].music}; the next turn edits it]")
            if conv.dropped:
                say(f"[{conv.dropped} oldest turns left out to fit the context]")
        except UserError as e:
            say(f"error: {one_line(str(e))}")
    return 0
