"""Per-file audio vectors from a local model (embeddings or label distributions), cached, batched,
and the audio metrics built on them: FAD, KL over classifier labels, CLAP text-audio score.

Each clip is read with llama.media (any rate/channels -> mono at the model's rate) and cut into
n = ceil(T / window) equal windows (the whole clip counts, every window the same length so they
batch without padding); the file's vector is the mean over its windows: the embedding for
`clap`/`audio` models, the softmax label distribution for `ast`. An unreadable clip is a counted
skip naming the file, never a crash and never silently dropped.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from llama.errors import UserError
from llama.media import load_audio

from .models import Loaded, load


@dataclass
class AudioConfig:
    device: str = "cpu"
    batch_size: int = 8
    window_s: float | None = None      # None: the model's own input length (audio encoders: 30 s)
    cache_dir: Path | None = None      # optional on-disk cache of per-file vectors (.npy)
    progress: bool = True


@dataclass
class Vectors:
    by_file: dict[Path, np.ndarray] = field(default_factory=dict)     # file -> (K,)
    skipped: dict[str, str] = field(default_factory=dict)             # file -> reason


def _bar(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", leave=False)


def _tensor(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output with pooler_output (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class AudioModel:
    """One loaded model of kind clap | ast | audio, with an in-memory (and optional disk) cache."""

    def __init__(self, folder: str | Path, kind: str, cfg: AudioConfig | None = None, with_tokenizer: bool = False):
        self.cfg = cfg or AudioConfig()
        self.kind = kind
        self.m: Loaded = load(folder, kind, self.cfg.device, with_tokenizer=with_tokenizer)
        self.window = self._window_samples()
        ident = [str(self.m.folder.resolve()), kind, str(self.window)]
        for f in sorted(self.m.folder.glob("*")):
            if f.is_file():
                st = f.stat()
                ident.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
        self.model_key = hashlib.sha256("|".join(ident).encode()).hexdigest()[:16]
        self._memo: dict[str, np.ndarray] = {}

    def _window_samples(self) -> int:
        sr, fe = self.m.sampling_rate, self.m.processor
        if self.cfg.window_s is not None:
            if self.cfg.window_s <= 0:
                raise UserError(f"--window-s {self.cfg.window_s}: must be positive")
            return int(self.cfg.window_s * sr)
        if self.kind == "clap":
            return int(fe.nb_max_samples)                               # max_length_s * rate
        if self.kind == "ast":
            return int(fe.max_length * sr / 100)                         # 10 ms frames
        return 30 * sr

    def _key(self, path: Path) -> str:
        st = path.stat()
        raw = f"{self.model_key}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    # ------------------------------------------------------------------ forward passes
    @torch.no_grad()
    def _forward(self, windows: list[np.ndarray]) -> np.ndarray:
        """(B, W) equal-length windows -> (B, K) vectors."""
        m, dev = self.m, self.cfg.device
        feats = m.processor(windows, sampling_rate=m.sampling_rate, return_tensors="pt")
        feats = {k: v.to(dev) for k, v in feats.items()}
        if self.kind == "clap":
            out = _tensor(m.model.get_audio_features(**feats))                      # (B, P)
        elif self.kind == "ast":
            out = torch.softmax(m.model(**feats).logits.float(), dim=-1)            # (B, L)
        else:
            feats.pop("attention_mask", None)                    # equal lengths: nothing to mask
            out = m.model(**feats).last_hidden_state.mean(1)                        # (B, H)
        return out.float().cpu().numpy().astype(np.float64)

    def _windows(self, wav: np.ndarray) -> list[np.ndarray]:
        return even_windows(wav, self.window)

    def vectors(self, paths: list[Path], desc: str = "audio") -> Vectors:
        """Per-file vectors; cached by (model, file, size, mtime)."""
        out = Vectors()
        todo: list[tuple[Path, str]] = []
        for p in paths:
            p = Path(p)
            try:
                key = self._key(p)
            except OSError as e:
                out.skipped[str(p)] = e.strerror or type(e).__name__
                continue
            vec = self._memo.get(key)
            disk = self.cfg.cache_dir / f"{key}.npy" if self.cfg.cache_dir else None
            if vec is None and disk is not None and disk.is_file():
                vec = self._memo[key] = np.load(disk, allow_pickle=False)
            if vec is not None:
                out.by_file[p] = vec
            else:
                todo.append((p, key))
        pending: list[tuple[Path, str, int, np.ndarray]] = []     # (file, key, window index, samples)
        counts: dict[Path, int] = {}
        for p, key in _bar(todo, f"reading {desc}", self.cfg.progress):
            try:
                wav = load_audio(p, self.m.sampling_rate)                           # (T,)
            except UserError as e:
                out.skipped[str(p)] = str(e)
                continue
            wins = self._windows(wav)
            counts[p] = len(wins)
            pending += [(p, key, i, w) for i, w in enumerate(wins)]
        sums: dict[Path, np.ndarray] = {}
        pending.sort(key=lambda x: len(x[3]))                      # equal lengths batch together
        batches, cur = [], []
        for item in pending:
            if cur and (len(cur) == self.cfg.batch_size or len(cur[0][3]) != len(item[3])):
                batches.append(cur)
                cur = []
            cur.append(item)
        if cur:
            batches.append(cur)
        for batch in _bar(batches, f"embedding {desc}", self.cfg.progress):
            vecs = self._forward([w for *_, w in batch])
            for (p, _, _, _), v in zip(batch, vecs):
                sums[p] = sums.get(p, 0) + v
        keys = dict(todo)
        for p, total in sums.items():
            vec = total / counts[p]
            self._memo[keys[p]] = vec
            if self.cfg.cache_dir:
                self.cfg.cache_dir.mkdir(parents=True, exist_ok=True)
                np.save(self.cfg.cache_dir / f"{keys[p]}.npy", vec, allow_pickle=False)
            out.by_file[p] = vec
        return out

    @torch.no_grad()
    def text_vectors(self, texts: list[str]) -> np.ndarray:
        """(N, P) CLAP text embeddings, batched."""
        if self.kind != "clap" or self.m.tokenizer is None:
            raise ValueError("text embeddings need a CLAP model loaded with its tokenizer")
        rows = []
        for i in range(0, len(texts), self.cfg.batch_size):
            tok = self.m.tokenizer(texts[i:i + self.cfg.batch_size], padding=True, truncation=True,
                                   return_tensors="pt")
            tok = {k: v.to(self.cfg.device) for k, v in tok.items()}
            rows.append(_tensor(self.m.model.get_text_features(**tok)).float().cpu().numpy())
        return np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 0))


def even_windows(wav: np.ndarray, window: int) -> list[np.ndarray]:
    """A clip cut into the fewest equal pieces no longer than `window` samples (each embedded
    or classified alone, then averaged)."""
    n = max(1, math.ceil(len(wav) / window))
    size = len(wav) // n
    return [wav[i * size:(i + 1) * size] for i in range(n)] if size else [wav]


def kl_divergence(p_ref: np.ndarray, p_gen: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """KL(ref || gen) per row, rows (N, L) being label distributions."""
    p = np.clip(p_ref, eps, None)
    q = np.clip(p_gen, eps, None)
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    return (p * (np.log(p) - np.log(q))).sum(1)


def clap_score(audio: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Cosine between paired audio (N, P) and text (N, P) embeddings."""
    a = audio / np.linalg.norm(audio, axis=1, keepdims=True)
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    return (a * t).sum(1)
