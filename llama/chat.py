"""A conversation with MuMu-LLaMA: history fed to the model, media that stay, music that is edited.

One `Conversation` per person (the CLI REPL's, or one per browser session in the demo). Each turn
becomes the token layout training used for multi-turn samples (llama/data/collate.py):

    BOS format_prompt(q1) | a1 EOS | "\\n\\n### Instruction:\\n{q2}\\n\\n### Response:" | a2 EOS | ... q_now

When that does not fit the context with room for the answer (and a full [AUD] run), the oldest
turns are dropped first; the template's opening sentence (the system prompt) always stays, since
the first kept turn is rendered with `format_prompt`. The model has one prefix slot per modality,
so the media it sees are the latest of each kind, from this turn or an earlier one; music the model
wrote becomes the audio of the next turn, so "now make it slower" edits what it just made.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .data.collate import CONTINUATION, _prompt_tokens
from .errors import UserError
from .request_schema import CHECKS, MEDIA_KEYS, check_against, media_path, text
from .tokenizer import format_prompt

COMMANDS = {"/audio": "attach a music file", "/image": "attach a picture", "/video": "attach a video",
            "/music": "the next answer writes music", "/reset": "forget the conversation and its media",
            "/help": "this list", "/quit": "leave"}


@dataclass
class ChatSettings:
    """Generation settings of every turn (the CLI options / the demo's widgets)."""
    duration: float = 5.0
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 0.9
    seed: int = 0
    guidance_scale: float | None = None
    edit_mode: str = "auto"          # llama.long_music.EDIT_MODES

    def checked(self) -> "ChatSettings":
        """The same ranges as a batch request (llama.request_schema)."""
        for k in ("duration", "max_new_tokens", "temperature", "top_p", "seed", "guidance_scale"):
            setattr(self, k, CHECKS[k](getattr(self, k)))
        return self


@dataclass
class Turn:
    user: str
    reply_ids: list[int]                     # generated ids, [AUD0..7] included, no EOS
    reply: str = ""                          # the decoded text
    media: dict = field(default_factory=dict)   # what this turn's question saw
    music: Path | None = None                # the WAV this turn wrote


@dataclass
class Conversation:
    """History, current media and the folder where this conversation's music goes."""
    folder: Path
    turns: list[Turn] = field(default_factory=list)
    media: dict = field(default_factory=dict)     # kind -> path: the latest of each kind
    dropped: int = 0                              # turns left out of the last prompt
    keep_music: bool = False                      # True: a folder the user named; never deleted from

    @classmethod
    def temporary(cls, parent: str | Path | None = None) -> "Conversation":
        """A conversation whose music goes to a fresh private folder (removed by `close`)."""
        return cls(Path(tempfile.mkdtemp(prefix="mumu-chat-", dir=parent)))

    def attach(self, kind: str, path) -> None:
        if kind not in MEDIA_KEYS:
            raise UserError(f"unknown media kind {kind!r} (audio, image, video)")
        self.media[kind] = media_path(kind, None if path is None else str(path), None)

    def reset(self) -> None:
        """Forget turns and media; generated music is deleted unless the user's folder keeps it."""
        for turn in self.turns:
            if turn.music is not None and not self.keep_music:
                turn.music.unlink(missing_ok=True)
        self.turns.clear()
        self.media.clear()
        self.dropped = 0

    def close(self) -> None:
        """Remove a temporary conversation's folder (a folder the user named stays)."""
        if not self.keep_music:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ----------------------------------------------------------------------------- prompt
    def prompt_ids(self, tokenizer, message: str, budget: int) -> list[int]:
        """Token ids of the history plus `message`, at most `budget` long: oldest turns dropped
        first (self.dropped counts them); UserError when the message alone does not fit."""
        n_turns = len(self.turns)
        for keep in range(n_turns, -1, -1):
            ids = self._layout(tokenizer, self.turns[n_turns - keep:], message)
            if len(ids) <= budget:
                self.dropped = n_turns - keep
                return ids
        raise UserError(f"the message is {len(ids)} tokens; with the answer it does not fit the "
                        f"context ({budget} tokens left for the prompt): shorten it or lower max new tokens")

    @staticmethod
    def _layout(tokenizer, turns: list[Turn], message: str) -> list[int]:
        questions = [t.user for t in turns] + [message]
        ids = tokenizer.encode(format_prompt(questions[0]), bos=True)
        for k, question in enumerate(questions[1:]):
            ids += turns[k].reply_ids + [tokenizer.eos_id]
            ids += _prompt_tokens(CONTINUATION.format(instruction=question), tokenizer)
        return ids

    # ----------------------------------------------------------------------------- one turn
    def ask(self, pipe, message: str, music: bool = False, settings: ChatSettings | None = None,
            on_token=None, progress=None, **new_media):
        """Answer `message` with the history; new_media (audio=/image=/video= paths) replace the
        current ones. Returns the pipeline's Answer; music is also written to this folder and
        becomes the conversation's audio. A UserError leaves the conversation as it was."""
        from .request_schema import Request
        from .safe_paths import write_wav

        settings = (settings or ChatSettings()).checked()
        message = text("message", message)
        media = dict(self.media)
        for kind, path in new_media.items():
            if path is not None:
                if kind not in MEDIA_KEYS:
                    raise UserError(f"unknown media kind {kind!r} (audio, image, video)")
                media[kind] = media_path(kind, str(path), None)
        req = Request(id="chat", prompt=message, music=music, duration=settings.duration,
                      max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                      top_p=settings.top_p, seed=settings.seed, guidance_scale=settings.guidance_scale,
                      **media)
        L = pipe.model.cfg.llama
        if music:
            check_against(pipe, req)
        ids = self.prompt_ids(pipe.tokenizer, message, L.max_seq_len - settings.max_new_tokens - L.n_aud_tokens)
        ans = pipe.answer(message, **req.media(), **req.gen_kwargs(), prompt_ids=ids, on_token=on_token,
                          edit_mode=settings.edit_mode, progress=progress)
        turn = Turn(message, list(ans.tokens), ans.text, media=dict(media))
        self.media = media
        if ans.audio is not None:
            turn.music = self.folder / f"turn{len(self.turns) + 1:03d}.wav"
            write_wav(turn.music, ans.audio, ans.sample_rate)
            self.media["audio"] = str(turn.music)         # the next turn edits what was just made
        self.turns.append(turn)
        return ans

