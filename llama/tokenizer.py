"""LLaMA's sentencepiece tokenizer plus the eight [AUD] tokens, each a single id.

The [AUD] ids follow the base vocabulary (32000..32007 for LLaMA-2), as in the published model.
"""
from __future__ import annotations

import re
from pathlib import Path

import sentencepiece as spm

from .errors import UserError, one_line

PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)


def format_prompt(instruction: str) -> str:
    return PROMPT_TEMPLATE.format(instruction=instruction)


class TokenizerError(UserError, ValueError):
    """A tokenizer.model that cannot be used; the message names the file."""


class TokenizerNotFoundError(TokenizerError, FileNotFoundError):
    """No tokenizer.model where the checkpoint says it is."""


class Tokenizer:
    def __init__(self, model_path: str | Path, n_aud_tokens: int = 8):
        path = Path(model_path)
        if not path.is_file():
            raise TokenizerNotFoundError(f"{path}: tokenizer.model not found")
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise TokenizerError(one_line(f"{path}: not a sentencepiece model ({e})")) from e
        self.n_base = self.sp.GetPieceSize()
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        self.aud_tokens = [f"[AUD{i}]" for i in range(n_aud_tokens)]
        self.aud_ids = list(range(self.n_base, self.n_base + n_aud_tokens))
        self._aud_by_text = dict(zip(self.aud_tokens, self.aud_ids))
        self._aud_split = re.compile("(" + "|".join(re.escape(t) for t in self.aud_tokens) + ")")

    @property
    def vocab_size(self) -> int:
        return self.n_base + len(self.aud_ids)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Text may contain literal "[AUD3]" etc.; each becomes its single id."""
        ids: list[int] = [self.bos_id] if bos else []
        for part in self._aud_split.split(text):
            if part in self._aud_by_text:
                ids.append(self._aud_by_text[part])
            elif part:
                ids.extend(self.sp.EncodeAsIds(part))
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: list[int], skip_aud: bool = True) -> str:
        """Decode, dropping bos/eos (and [AUD] tokens unless skip_aud=False)."""
        out, run = [], []
        for i in ids:
            if i in (self.bos_id, self.eos_id):
                continue
            if i >= self.n_base:
                out.append(self.sp.DecodeIds(run))
                run = []
                if not skip_aud and i - self.n_base < len(self.aud_tokens):
                    out.append(self.aud_tokens[i - self.n_base])
            else:
                run.append(i)
        out.append(self.sp.DecodeIds(run))
        return "".join(out)
