"""Evaluation models from local transformers folders, checked for kind before loading.

A folder of the wrong kind (a BERT given as --clap, a folder without config.json, one whose
config needs its own Python code) is one `ModelFolderError` line naming the folder and what was
expected. Weights load with `from_pretrained` (safetensors preferred), never with remote code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llama.errors import UserError

# kind -> (what it is, model_type values accepted)
KINDS = {
    "clap": ("a CLAP model (e.g. laion/clap-htsat-unfused)", ("clap",)),
    "ast": ("an audio classifier (ASTForAudioClassification, e.g. MIT/ast-finetuned-audioset)",
            ("audio-spectrogram-transformer",)),
    "audio": ("an audio encoder loadable with AutoModel (MERT-like HuBERT, wav2vec2; for CLAP use kind clap)",
              ("hubert", "wav2vec2", "wav2vec2-conformer", "wavlm", "data2vec-audio")),
}


class ModelFolderError(UserError):
    """A model folder that is missing, unreadable or of the wrong kind."""


def check_folder(folder: str | Path, what: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: not a folder; expected {what} (a transformers folder)")
    return folder


def read_config(folder: Path, what: str) -> dict:
    path = folder / "config.json"
    try:
        conf = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFolderError(f"{folder}: no config.json; expected {what} (a transformers folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{path}: unreadable ({type(e).__name__}); expected {what}") from None
    if not isinstance(conf, dict):
        raise ModelFolderError(f"{path}: not a JSON object; expected {what}")
    return conf


def check_kind(folder: str | Path, kind: str) -> dict:
    """The folder's config if it is of `kind`; else a one-line ModelFolderError."""
    what, types = KINDS[kind]
    folder = check_folder(folder, what)
    conf = read_config(folder, what)
    mtype = conf.get("model_type")
    if conf.get("auto_map") and mtype not in types:
        raise ModelFolderError(f"{folder}: needs its own model code (auto_map), which is not run; "
                               f"expected {what}")
    if mtype not in types:
        raise ModelFolderError(f"{folder}: model_type {mtype!r} is not {what} "
                               f"(expected model_type {' or '.join(map(repr, types))})")
    return conf


@dataclass
class Loaded:
    model: object           # a transformers PreTrainedModel in eval mode
    processor: object       # its feature extractor
    tokenizer: object | None
    sampling_rate: int
    folder: Path


def load(folder: str | Path, kind: str, device: str = "cpu", with_tokenizer: bool = False) -> Loaded:
    """Model + feature extractor (+ tokenizer) of `kind` from `folder`, on `device`."""
    import transformers as T

    check_kind(folder, kind)
    folder = Path(folder)
    cls = {"clap": T.ClapModel, "ast": T.ASTForAudioClassification, "audio": T.AutoModel}[kind]
    try:
        model = cls.from_pretrained(folder, trust_remote_code=False).to(device).eval()
        processor = T.AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=False)
        tokenizer = T.AutoTokenizer.from_pretrained(folder, trust_remote_code=False) if with_tokenizer else None
    except (OSError, ValueError, KeyError) as e:
        raise ModelFolderError(f"{folder}: cannot be loaded as {KINDS[kind][0]} "
                               f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    rate = getattr(processor, "sampling_rate", None)
    if not isinstance(rate, int) or rate <= 0:
        raise ModelFolderError(f"{folder}: its feature extractor has no sampling_rate; expected {KINDS[kind][0]}")
    return Loaded(model, processor, tokenizer, rate, folder)
