"""Frozen-encoder features on disk, computed once per media file for every epoch and stage.

  python -m llama.feature_cache --data data.yaml --out features/ [--ckpt-dir ckpts/mumu] [--stages 1 2 3]
  python train.py ... --cache-features features/    # build/update for this run's media, then read it
  python train.py ... --features features/          # read only: a miss is an error, never a live encode

Layout of a cache folder:
  cache.json                       format version and, per modality, the encoder identity
  files.json                       {absolute media path: [size, mtime_ns, sha256]} (skips re-hashing)
  bad.json                         {sha256: message} media the encoder could not read (counted in runs)
  audio|image|video/shard_NNNNNN.safetensors   tensor name = sha256 of the media file's bytes

A feature is found by the content hash of its media file, so a file edited after caching is not
found (and named), and two copies of one file share an entry. The encoder identity hashes the
encoder folder's file names, sizes and mtimes (weights and configs), the run's dtype and the
encoding settings: a cache built with another encoder is refused naming both folders. Shards
are written to a temporary name and renamed, so a killed build resumes with whole shards; a
shard cut short afterwards (copy, disk) is detected from its header and named.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import UserError

FORMAT, VERSION = "mumu-feature-cache", 1
KINDS = ("audio", "image", "video")
SHARD_BYTES = 512 << 20          # a shard is closed past this many feature bytes


class FeatureCacheError(UserError, ValueError):
    """A cache folder that cannot be used for this run; the message names the file."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def encoder_identity(kind: str, folder: Path, dtype: torch.dtype) -> str:
    """A hash of what decides the features: the folder's files (name, size, mtime), the dtype,
    and the encoding settings (MERT's 60 s windows, ViViT's frame count lives in its config)."""
    from .encoders import MusicEncoder
    import inspect

    h = hashlib.sha256(f"{kind}|{dtype}|v{VERSION}".encode())
    if kind == "audio":
        h.update(str(inspect.signature(MusicEncoder.__init__).parameters["window_seconds"].default).encode())
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            st = p.stat()
            h.update(f"{p.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def shard_problem(path: Path) -> str | None:
    """None if the safetensors file is whole; else what is wrong (read from its header only)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size:
                return f"truncated ({size} bytes, header alone claims {n})"
            header = json.loads(f.read(n))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"unreadable header ({type(e).__name__})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size < 8 + n + end:
        return f"truncated ({size} bytes, its header needs {8 + n + end})"
    return None


def _atomic_json(path: Path, data) -> None:
    from .checkpoint import atomic_write_text
    atomic_write_text(path, json.dumps(data))


@dataclass
class FeatureCache:
    """An opened cache folder: features by (kind, media path), memory-mapped."""
    root: Path
    identities: dict[str, str]                      # kind -> encoder identity of this run
    folders: dict[str, str]                         # kind -> encoder folder (for messages)
    index: dict[str, dict[str, Path]] = field(default_factory=dict)   # kind -> sha -> shard
    files: dict[str, list] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    hits: int = 0
    _handles: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, root: Path, identities: dict[str, str], folders: dict[str, str],
             create: bool = False) -> "FeatureCache":
        root = Path(root)
        meta_path = root / "cache.json"
        if not meta_path.is_file():
            if not create:
                raise FeatureCacheError(f"{meta_path}: missing; build the cache first "
                                        f"(train.py --cache-features {root}, or python -m llama.feature_cache)")
            root.mkdir(parents=True, exist_ok=True)
            _atomic_json(meta_path, {"format": FORMAT, "version": VERSION, "encoders": {}})
        try:
            meta = json.loads(meta_path.read_text())
            files = json.loads((root / "files.json").read_text()) if (root / "files.json").is_file() else {}
            bad = json.loads((root / "bad.json").read_text()) if (root / "bad.json").is_file() else {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FeatureCacheError(f"{meta_path.parent}: unreadable cache index ({type(e).__name__}: {e})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise FeatureCacheError(f"{meta_path}: not a version-{VERSION} feature cache")
        cache = cls(root, identities, folders, files=files, bad=bad)
        for kind, ident in identities.items():
            known = meta["encoders"].get(kind)
            if known is None:
                if create:
                    meta["encoders"][kind] = {"id": ident, "folder": folders[kind]}
                    _atomic_json(meta_path, meta)
            elif known["id"] != ident:
                raise FeatureCacheError(
                    f"{meta_path}: built with another {kind} encoder ({known['folder']}, id {known['id']}) than "
                    f"this run's ({folders[kind]}, id {ident}); use another cache folder or rebuild this one")
            cache.index[kind] = cache._scan(kind)
        return cache

    def _scan(self, kind: str) -> dict[str, Path]:
        """sha -> shard for every whole shard of `kind`; leftovers of a killed write are removed."""
        from safetensors import safe_open

        folder = self.root / kind
        index: dict[str, Path] = {}
        if not folder.is_dir():
            return index
        for tmp in folder.glob("*.tmp"):
            tmp.unlink()
        for shard in sorted(folder.glob("shard_*.safetensors")):
            problem = shard_problem(shard)
            if problem:
                raise FeatureCacheError(f"{shard}: {problem}; delete it and rerun --cache-features to "
                                        "re-encode its media")
            with safe_open(str(shard), framework="pt") as f:
                ident = (f.metadata() or {}).get("encoder")
                if ident != self.identities[kind]:
                    raise FeatureCacheError(f"{shard}: written by another {kind} encoder (id {ident}, this run "
                                            f"{self.identities[kind]}); it does not belong in {self.root}")
                for key in f.keys():
                    index[key] = shard
        return index

    # ------------------------------------------------------------ media -> content hash
    def sha(self, path: Path) -> str:
        """The content hash, re-computed only when size or mtime changed since it was recorded."""
        key = str(Path(path).resolve())
        st = os.stat(key)
        known = self.files.get(key)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return known[2]
        digest = file_sha256(Path(key))
        self.files[key] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def status(self, kind: str, path: Path) -> tuple[str, str]:
        """("hit" | "bad" | "miss", sha)."""
        key = str(Path(path).resolve())
        before = self.files.get(key)
        digest = self.sha(path)
        if digest in self.index.get(kind, {}):
            return "hit", digest
        if digest in self.bad:
            return "bad", digest
        if before is not None and before[2] != digest and before[2] in self.index.get(kind, {}):
            return "changed", digest
        return "miss", digest

    def check(self, media: list[tuple[str, Path]]) -> None:
        """Refuse, naming the first file, any media this cache has no entry for."""
        for kind, path in media:
            state, _ = self.status(kind, path)
            if state == "changed":
                raise FeatureCacheError(f"{path}: changed since it was cached in {self.root} (its content "
                                        f"hash differs); rerun --cache-features {self.root}")
            if state == "miss":
                raise FeatureCacheError(f"{path}: no {kind} features in {self.root}; rerun "
                                        f"--cache-features {self.root} for this data")

    def get(self, kind: str, path: Path) -> torch.Tensor:
        """The features of `path`; a MediaError (as the live path gives) if the encoder could not read it."""
        from safetensors import safe_open
        from .media import MediaError

        digest = self.sha(path)
        if digest in self.bad:
            raise MediaError(path, self.bad[digest])
        shard = self.index.get(kind, {}).get(digest)
        if shard is None:
            raise FeatureCacheError(f"{path}: no {kind} features in {self.root}")
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(shard), framework="pt")
        self.hits += 1
        return self._handles[shard].get_tensor(digest)

    def save_index(self) -> None:
        _atomic_json(self.root / "files.json", self.files)
        _atomic_json(self.root / "bad.json", self.bad)


def sample_media(samples) -> list[tuple[str, Path]]:
    """Unique (kind, path) pairs the samples read, in order."""
    seen = {}
    for s in samples:
        for kind in KINDS:
            p = getattr(s, kind)
            if p is not None:
                seen.setdefault((kind, str(p)), (kind, Path(p)))
    return list(seen.values())


def pipeline_identities(pipe, kinds) -> tuple[dict[str, str], dict[str, str]]:
    folders = {k: {"audio": pipe.paths.mert, "image": pipe.paths.vit, "video": pipe.paths.vivit}[k] for k in kinds}
    missing = [k for k, f in folders.items() if f is None]
    if missing:
        raise FeatureCacheError(f"no {missing[0]} encoder folder configured (bundle.json)")
    return ({k: encoder_identity(k, Path(f), pipe.dtype) for k, f in folders.items()},
            {k: str(f) for k, f in folders.items()})


def encode_one(pipe, kind: str, path: Path) -> torch.Tensor:
    """What the live training path computes for one media file (without batch axis)."""
    from .media import load_audio, load_image, load_video

    enc = pipe.encoder(kind)
    with torch.no_grad():
        if kind == "audio":
            return enc.encode(load_audio(path, enc.sampling_rate))
        if kind == "image":
            return enc.encode([load_image(path)])[0]
        return enc.encode([load_video(path, enc.num_frames)])[0]


def build(pipe, samples, root: Path, shard_bytes: int = SHARD_BYTES, log=print) -> FeatureCache:
    """Encode every media file of `samples` not yet in the cache at `root`; resumable."""
    from safetensors.torch import save_file
    from tqdm import tqdm
    from .media import MediaError

    media = sample_media(samples)
    kinds = sorted({k for k, _ in media})
    ids, folders = pipeline_identities(pipe, kinds)
    cache = FeatureCache.open(root, ids, folders, create=True)
    todo, seen = [], set()
    for kind, path in media:
        state, digest = cache.status(kind, path)
        if state in ("miss", "changed") and (kind, digest) not in seen:
            seen.add((kind, digest))
            todo.append((kind, path, digest))
    cache.save_index()
    log(f"feature cache {root}: {len(media) - len(todo)} of {len(media)} media files already cached, "
        f"encoding {len(todo)}")
    pending: dict[str, dict[str, torch.Tensor]] = {k: {} for k in kinds}
    sizes = dict.fromkeys(kinds, 0)

    def flush(kind: str) -> None:
        if not pending[kind]:
            return
        folder = root / kind
        folder.mkdir(exist_ok=True)
        n = len(list(folder.glob("shard_*.safetensors")))
        final = folder / f"shard_{n:06d}.safetensors"
        tmp = folder / (final.name + ".tmp")
        save_file(pending[kind], str(tmp), metadata={"encoder": ids[kind], "kind": kind})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        for digest in pending[kind]:
            cache.index[kind][digest] = final
        cache.save_index()
        pending[kind], sizes[kind] = {}, 0

    for kind, path, digest in tqdm(todo, desc="encoding media", unit="file", file=sys.stderr,
                                   disable=not todo):
        try:
            feats = encode_one(pipe, kind, path).detach().cpu().contiguous()
        except MediaError as e:
            cache.bad[digest] = e.reason
            log(f"{path}: {e}")
            continue
        pending[kind][digest] = feats
        sizes[kind] += feats.numel() * feats.element_size()
        if sizes[kind] >= shard_bytes:
            flush(kind)
    for kind in kinds:
        flush(kind)
    cache.save_index()
    if cache.bad:
        log(f"feature cache {root}: {len(cache.bad)} media files unreadable (recorded; runs count them)")
    return cache


def main(argv=None) -> int:
    import argparse

    from .errors import one_line

    p = argparse.ArgumentParser(description="Build (or resume) a frozen-encoder feature cache.")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ckpt-dir", type=Path)
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust-remote-code", action="store_true")
    args = p.parse_args(argv)
    try:
        from .data.config import load_data_config
        from .data.formats import load_datasets
        from .pipeline import BundlePaths, MuMuPipeline
        from .tiny import ensure_tiny_bundle

        stages = load_data_config(args.data)
        samples = []
        for st in args.stages:
            if st in stages:
                samples += load_datasets(stages[st], st)[0]
        ckpt = args.ckpt_dir or ensure_tiny_bundle(Path(__file__).resolve().parents[1] / "ckpts" / "tiny")
        pipe = MuMuPipeline.load(BundlePaths.from_bundle(ckpt), device=args.device,
                                 trust_remote_code=args.trust_remote_code, merge_lora=False)
        build(pipe, samples, args.out, log=lambda *a: print(*a, file=sys.stderr))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
