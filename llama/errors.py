"""The one error class for user mistakes.

Anything a user can cause (a bad file, a bad option, a checkpoint of the wrong kind) raises a
subclass of `UserError` with a one-line message that names the file or option and the problem.
CLIs and the demo catch `UserError` only and print that line; every other exception is a bug and
keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A user-facing problem; `str(e)` is one line naming what is wrong and where."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def one_line(text: str, limit: int = 500) -> str:
    """Text safe to show a person: no control characters, one line, bounded length."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in str(text))
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
