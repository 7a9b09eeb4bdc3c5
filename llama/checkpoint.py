"""Reading and writing weights: Meta LLaMA shards, published MuMu-LLaMA/M2UGen checkpoints, ours.

Every load goes through safetensors or `torch.load(weights_only=True)`: no pickled code runs.
Our own checkpoints hold only trained tensors (model.safetensors) plus config.json.
"""
from __future__ import annotations

import functools
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import LLaMAConfig, MuMuConfig
from .errors import UserError
from .llama import rope_tables
from .mapped_weights import MappedWeights, WeightSource, concat_into


class CheckpointError(UserError, ValueError):
    """One-line, user-facing problem with a weights file or folder."""


def torch_load(path: Path) -> dict:
    """`torch.load(weights_only=True)` with one-line errors naming the file.

    A pickle that carries code is refused without torch's advice to retry with
    weights_only=False (that advice is how such a file gets to run). Legacy (non-zip) saves
    cannot be memory-mapped, so only zip files are; anything else is refused before unpickling.
    """
    import pickle
    import zipfile

    try:
        is_zip = zipfile.is_zipfile(path)
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read as a weights file ({e.strerror or e})") from None
    if not is_zip and head != b"\x80\x02":           # neither a zip save nor a legacy pickle save
        raise CheckpointError(f"{path}: cannot be read as a weights file (not a torch save)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise CheckpointError(f"{path}: not a plain weights file (it contains pickled code, refused)") from None
        raise CheckpointError(f"{path}: cannot be read as a weights file (corrupt pickle)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot be read as a weights file ({first})") from e


# ------------------------------------------------------------------ Meta LLaMA shards
# Model-parallel split axis per weight in Meta's consolidated.*.pth (None = replicated).
_SHARD_DIM = [
    (re.compile(r"tok_embeddings\.weight$"), 1),
    (re.compile(r"output\.weight$"), 0),
    (re.compile(r"attention\.w[qkv]\.weight$"), 0),
    (re.compile(r"attention\.wo\.weight$"), 1),
    (re.compile(r"feed_forward\.w[13]\.weight$"), 0),
    (re.compile(r"feed_forward\.w2\.weight$"), 1),
]


def shard_dim(key: str) -> int | None:
    for pattern, dim in _SHARD_DIM:
        if pattern.search(key):
            return dim
    return None


def load_meta_llama(folder: str | Path) -> tuple[LLaMAConfig, MappedWeights]:
    """params.json + consolidated.{00,01,...}.pth -> (config, weights in Meta's names).

    Shards are memory-mapped; model-parallel pieces are concatenated per tensor on access.
    """
    folder = Path(folder)
    if not (folder / "params.json").is_file():
        raise CheckpointError(f"{folder}: no params.json (expected a Meta LLaMA folder)")
    shards = sorted(folder.glob("consolidated.*.pth"))
    if not shards:
        raise CheckpointError(f"{folder}: no consolidated.*.pth weights")
    try:
        params = json.loads((folder / "params.json").read_text())
        cfg = LLaMAConfig.from_params_json(folder / "params.json")
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{folder / 'params.json'}: invalid ({e})") from e
    if params.get("n_kv_heads") not in (None, cfg.n_heads):
        raise CheckpointError(f"{folder / 'params.json'}: grouped-query attention (n_kv_heads "
                              f"{params['n_kv_heads']} of {cfg.n_heads} heads) is not supported")
    parts = [torch_load(p) for p in shards]
    entries = {}
    for key in parts[0]:
        lacking = [s for s, p in zip(shards, parts) if key not in p]
        if lacking:
            raise CheckpointError(f"{lacking[0]}: lacks {key} (which {shards[0].name} has)")
        dim, pieces = shard_dim(key), [p[key] for p in parts]
        shape = list(pieces[0].shape)
        if dim is not None and len(parts) > 1:
            shape[dim] = sum(t.shape[dim] for t in pieces)
        fill = None if dim is None or len(parts) == 1 else functools.partial(concat_into, dim=dim)
        entries[key] = WeightSource(shards[0] if len(parts) == 1 else folder / "consolidated.*.pth",
                                    pieces, tuple(shape), fill)
    return cfg, MappedWeights(folder, entries, mapped=all(zipfile.is_zipfile(p) for p in shards))


# Ours, not in any base checkpoint: LoRA factors, biases, adapter gates.
_TUNING_TENSOR = re.compile(r"lora_|\.bias$|\.gate$")


def load_llama_base(llm: torch.nn.Module, weights: Mapping[str, torch.Tensor],
                    dtype: torch.dtype | None = None) -> None:
    """Put Meta-named base weights into our Transformer; [AUD] rows start at the mean of the base rows.

    A real model is filled in place. A model built on the meta device gets each weight as a new
    tensor in `dtype` (default fp32), one at a time, giving back each file's pages as it goes:
    the peak is about the final model plus one tensor. Its LoRA, biases and gates are then
    created as `LoRALinear`/`Attention` initialise them (fp32), and the rope tables computed.
    """
    cfg, params = llm.cfg, dict(llm.named_parameters())
    weights = MappedWeights.of(weights)
    keys = [k for k in weights if k != "rope.freqs"]
    unexpected = [k for k in keys if k not in params]
    if unexpected:
        raise CheckpointError(f"{weights.folder}: unexpected tensors for LLaMA, e.g. {unexpected[:5]}")
    missing = [k for k in params if k not in weights and not _TUNING_TENSOR.search(k)]
    if missing:
        raise CheckpointError(f"{weights.folder}: lacks {len(missing)} LLaMA tensors, e.g. {missing[:3]}")
    grown = ("tok_embeddings.weight", "output.weight")       # [AUD] rows follow the base rows
    for key in sorted(keys, key=lambda k: k not in grown):    # first: their fp32 means need room
        p, shape, rows = params[key], weights.shape(key), key in grown
        expected = (cfg.vocab_size, cfg.dim) if rows else tuple(p.shape)
        if shape != expected:
            raise CheckpointError(f"{weights.file(key)}: LLaMA {key} is {shape}, tokenizer/config say {expected}")
        target = torch.empty(p.shape, dtype=dtype or torch.float32) if p.is_meta else p
        with torch.no_grad():
            weights.copy_into(key, target[: shape[0]])
            if rows:        # as `init_new_token_rows`, from the file's values in fp32, whatever dtype
                target[shape[0]:] = weights[key].float().mean(0)
        weights.release(key)
        if p.is_meta:
            module, _, name = key.rpartition(".")
            setattr(llm.get_submodule(module), name, torch.nn.Parameter(target, p.requires_grad))
    _init_tuning_tensors(llm)


def _init_tuning_tensors(llm: torch.nn.Module) -> None:
    """Create what is still on the meta device after the base weights: LoRA A drawn as
    `LoRALinear` draws it, LoRA B, biases and gates zero (so the model computes the base
    LLaMA), and the rope tables (non-persistent buffers, in no checkpoint) as the model makes them."""
    for name, module in llm.named_modules():
        for pname, p in list(module.named_parameters(recurse=False)):
            if p.is_meta:
                new = torch.zeros(p.shape)
                if name.endswith("lora_a"):
                    torch.nn.init.xavier_uniform_(new)
                setattr(module, pname, torch.nn.Parameter(new, p.requires_grad))
    if llm.rope_cos.is_meta:
        c = llm.cfg
        llm.rope_cos, llm.rope_sin = rope_tables(c.head_dim, c.max_seq_len * 2, c.rope_theta)


# ------------------------------------------------------------------ published checkpoints
_MODALITY = {"mu_mert": "audio", "iu_vit": "image", "iu_vivit": "video"}


def _adapter_key(m: re.Match) -> str:
    mod = _MODALITY[m["prefix"]]
    part, rest = m["part"], m["rest"]
    if part == "agg":
        return f"adapters.{mod}.pool.{rest}"
    if part == "proj":
        return f"adapters.{mod}.proj.{rest}"
    if part in ("rnn", "attention"):
        legacy = "legacy_" if mod == "video" else ""   # see ModalityAdapter's docstring
        sub = "rnn" if part == "rnn" else "attention.score"
        return f"adapters.{mod}.{legacy}{sub}.{rest}"
    kind, idx = part.split("_")
    block = int(idx) - 1
    if kind == "norm":
        return f"adapters.{mod}.blocks.{block}.norm.{rest}"
    return f"adapters.{mod}.blocks.{block}.w{kind[1]}.{rest}"


# The one table from published names to ours: (pattern, replacement string or function).
PUBLISHED_KEY_MAP: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^llama\.layers\.(\d+)\.(attention|feed_forward)\.lora_(w\w)_l1\.weight$"),
     r"llm.layers.\1.\2.\3.lora_a.weight"),
    (re.compile(r"^llama\.layers\.(\d+)\.(attention|feed_forward)\.lora_(w\w)_l2\.weight$"),
     r"llm.layers.\1.\2.\3.lora_b.weight"),
    (re.compile(r"^llama\.(.+)$"), r"llm.\1"),
    (re.compile(r"^(?P<prefix>mu_mert|iu_vivit|iu_vit)_(?P<part>agg|proj|rnn|attention|norm_\d|f[123]_\d)"
                r"\.(?P<rest>.+)$"), _adapter_key),
    (re.compile(r"^prefix_query\.weight$"), "prefix_query.weight"),
    (re.compile(r"^output_projector\.query_embs$"), "output_projector.queries"),
    (re.compile(r"^output_projector\.model\.(.+)$"), r"output_projector.out.\1"),
    (re.compile(r"^output_projector\.((?:fc|tfm)\..+)$"), r"output_projector.\1"),
]

# Frozen sub-models the published file may also carry; we load those from their own folders.
_FROZEN_PREFIXES = ("mert_model.", "vit_model.", "vivit_model.", "generation_model.")


def published_to_ours(key: str) -> str | None:
    for pattern, repl in PUBLISHED_KEY_MAP:
        m = pattern.match(key)
        if m:
            return repl(m) if callable(repl) else m.expand(repl)
    return None


@dataclass
class LoadReport:
    loaded: int = 0
    skipped_frozen: int = 0
    unknown: list[str] = field(default_factory=list)       # published keys we have no name for
    mismatched: list[str] = field(default_factory=list)    # "key: file shape vs model shape"
    missing: list[str] = field(default_factory=list)       # our trainable names the file lacks

    def summary(self) -> str:
        return (f"loaded {self.loaded} tensors, skipped {self.skipped_frozen} frozen-encoder tensors, "
                f"{len(self.unknown)} unknown, {len(self.mismatched)} shape mismatches, "
                f"{len(self.missing)} missing")


def published_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A released checkpoint.pth as a flat state dict in published names (memory-mapped).

    Accepts `{'model': sd}` or a bare state dict, with or without the `module.` prefix that
    DDP-wrapped saves carry; anything else is refused naming the first keys.
    """
    path = Path(path)
    raw = torch_load(path)
    sd = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        top = list(raw)[:3] if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{path}: expected a state dict of tensors (or {{'model': state dict}}), "
                              f"found {top}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


# Ours that a published checkpoint may leave to the base LLaMA folder: the frozen base linears
# (identical copies of the base), and the legacy video RNN that never ran.
_MAY_BE_ABSENT = re.compile(r"^llm\.layers\.\d+\.(attention\.w[qkvo]|feed_forward\.w[123])\.weight$|legacy_")


def load_published_checkpoint(model: torch.nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a released M2UGen / MuMu-LLaMA checkpoint.pth into our module names.

    strict: refuse unknown keys, shape mismatches and any tensor the model needs that the file
    does not set (e.g. an M2UGen file into a MuMu-LLaMA model: its RNN would stay random).
    """
    path = Path(path)
    sd = published_state_dict(path)
    params = dict(model.state_dict())
    report, mapped = LoadReport(), {}
    for key, tensor in sd.items():
        if key.startswith(_FROZEN_PREFIXES):
            report.skipped_frozen += 1
            continue
        ours = published_to_ours(key)
        if ours is None or ours not in params:
            report.unknown.append(key)
        elif tuple(params[ours].shape) != tuple(tensor.shape):
            report.mismatched.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(params[ours].shape)}")
        else:
            mapped[ours] = tensor
    report.loaded = len(mapped)
    covered = set(mapped)
    report.missing = [k for k, p in model.named_parameters()
                      if k not in covered and not _MAY_BE_ABSENT.search(k)]
    if strict and (report.unknown or report.mismatched or report.missing):
        detail = (report.mismatched or report.unknown or report.missing)[:3]
        from .checkpoint_config import published_variant
        found = published_variant({k: () for k in sd})
        raise CheckpointError(f"{path}: does not match this model ({report.summary()}; e.g. {detail}); "
                              f"the file is a {'MuMu-LLaMA' if found == 'mumu' else 'M2UGen'} checkpoint "
                              f"(variant {found}). Check variant (mumu/m2ugen) and --music-decoder.")
    model.load_state_dict(mapped, strict=False)
    return report


# ------------------------------------------------------------------ our trained-weights format
def atomic_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """safetensors written to a temp file in the same folder, then renamed: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def trained_tensors(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors. An `AUD_ROWS` name is a parameter while a stage trains the [AUD] rows
    (llama/trainable.py); otherwise it names the rows past the base vocabulary of its matrix."""
    from .trainable import AUD_ROWS

    params = dict(model.named_parameters())
    n_base = model.cfg.llama.vocab_size
    return {k: params[AUD_ROWS[k]][n_base:] if k in AUD_ROWS and k not in params else params[k] for k in names}


def save_trained(model: torch.nn.Module, folder: str | Path, names: list[str],
                 tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write only the trained tensors + config.json (never the frozen base model). `tensors`:
    a full state dict to take them from (a sharded model's, gathered) instead of the model."""
    folder = Path(folder)
    chosen = {k: tensors[k] for k in names} if tensors is not None else trained_tensors(model, names)
    atomic_save_file(chosen, folder / "model.safetensors")
    atomic_write_text(folder / "config.json", json.dumps(model.cfg.to_dict(), indent=2))
    return folder


def read_trained_config(folder: str | Path) -> MuMuConfig:
    path = Path(folder) / "config.json"
    try:
        return MuMuConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing") from e
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a MuMu-LLaMA config ({e})") from e


def load_trained(model: torch.nn.Module, folder: str | Path) -> list[str]:
    """Overlay trained tensors onto a model that already holds its base weights. Returns the keys."""
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        tensors = load_file(str(path))
    except Exception as e:   # safetensors raises its own SafetensorError type; keep the message
        raise CheckpointError(f"{path}: cannot be read ({e})") from e
    from .trainable import AUD_ROWS

    params = dict(model.named_parameters())
    params.update({k: v for k, v in trained_tensors(model, list(AUD_ROWS)).items() if k not in params})
    bad = [k for k, v in tensors.items() if k not in params or params[k].shape != v.shape]
    if bad:
        k = bad[0]
        shape = tuple(params[k].shape) if k in params else "absent"
        raise CheckpointError(f"{path}: {len(bad)} tensors do not fit this model, e.g. {k} "
                              f"(file {tuple(tensors[k].shape)}, model {shape})")
    loaded = list(tensors)
    with torch.no_grad():
        for k in AUD_ROWS.keys() & tensors.keys():
            params[k].copy_(tensors.pop(k))          # the parameter, or a view of the matrix rows
    model.load_state_dict(tensors, strict=False)
    return loaded


def write_tiny_mumu_checkpoint(folder: str | Path, cfg: MuMuConfig, seed: int = 0) -> Path:
    """The tiny bundle's 'trained' part: random adapters, projector, LoRA and open gates.

    Gates are opened (non-zero), the prefix queries kept small and the adapter projections made
    large, so that media visibly change the tiny model's answers.
    """
    from .mumu_llama import MuMuLLaMA   # local import: mumu_llama imports this module's siblings
    from .trainable import trainable_names

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MuMuLLaMA(cfg)
        names = trainable_names(model, stage=3) + [
            k for k in trainable_names(model, stage=1) if k.startswith("adapters.")]
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k in names:
                p = params[k]
                if k.endswith(".gate"):
                    p.uniform_(-1.0, 1.0)
                elif k == "prefix_query.weight":
                    p.normal_(std=0.02)
                elif k.startswith("adapters.") and k.endswith(".proj.weight"):
                    p.normal_(std=1.0)
                elif "lora_b" in k:
                    p.normal_(std=0.02)
    return save_trained(model, folder, sorted(set(names)))
