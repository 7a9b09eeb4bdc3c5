"""Load the components of a diffusers pipeline folder with every weight checked.

diffusers' pipeline loader only logs a warning when a component's weights lack a tensor, and
leaves that tensor at random init. Here each model component (UNet, VAE, text encoders, GPT-2,
vocoder, ...) is loaded on its own and its load report checked (`check_load_report`); the
weightless ones (tokenizers, feature extractor, scheduler) load as usual. The caller builds the
pipeline from the parts (handing ready models to the pipeline's own loader makes it print each
pipeline-specific module whole, as a type it cannot verify).
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import torch

from ..encoders import check_load_report, load_checked
from ..errors import one_line
from . import DecoderError

# diffusers words a shape mismatch as "... because <key> expected shape <shape>, but got <shape>."
_SIZE = r"(torch\.Size\(\[[^\]]*\]\))"
_MISMATCH = re.compile(rf"because (\S+) expected shape {_SIZE}, but got {_SIZE}")


def read_index(folder: Path, what: str) -> dict[str, tuple[str, str]]:
    """model_index.json -> {component: (library, class)}; each component must have its subfolder."""
    if not folder.is_dir():
        raise DecoderError(f"{what} folder {folder} does not exist")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise DecoderError(f"{what} folder {folder} has no model_index.json (not a diffusers folder)")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DecoderError(one_line(f"{index_path}: invalid JSON ({e})")) from e
    if not isinstance(index, dict):
        raise DecoderError(f"{index_path}: not a JSON object")
    components = {k: tuple(v) for k, v in index.items()
                  if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] is not None}
    for name, (_, cls) in components.items():
        if not (folder / name).is_dir():
            raise DecoderError(f"{what} folder {folder} is missing its {name}/ component ({cls})")
    return components


def _component_class(library: str, name: str):
    """The class a model_index.json entry names, or None if there is no such class."""
    if not re.fullmatch(r"\w+", str(library)) or not isinstance(name, str):
        return None
    module = library if library in ("transformers", "diffusers") else f"diffusers.pipelines.{library}"
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return cls if isinstance(cls, type) and hasattr(cls, "from_pretrained") else None


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text))


def _load_diffusers(cls, sub: Path, what: str, dtype: torch.dtype):
    """A diffusers model; it raises on a mis-shaped weight and only warns on a missing one."""
    from safetensors import SafetensorError

    try:
        model, info = cls.from_pretrained(sub, local_files_only=True, output_loading_info=True,
                                          dtype=dtype)
    except ValueError as e:
        m = _MISMATCH.search(str(e))
        if m is None:
            raise DecoderError(one_line(f"cannot load {what} from {sub}: {e}")) from e
        raise DecoderError(f"{what} folder {sub}: weights do not match its config.json: wrong shape "
                           f"{m[1]} {_shape(m[3])} on disk vs {_shape(m[2])} in config") from e
    except (OSError, SafetensorError) as e:
        raise DecoderError(one_line(f"cannot load {what} from {sub}: {e}")) from e
    check_load_report(info, sub, what, DecoderError)
    return model


def load_components(folder: Path, components: dict[str, tuple[str, str]], what: str,
                    dtype: torch.dtype, replace: dict[str, str] | None = None) -> dict:
    """{component: loaded object} for every component; models have every weight checked.
    `replace` swaps a class name for another with the same weights (GPT2Model -> GPT2LMHeadModel)."""
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    parts = {}
    for name, (library, cls_name) in components.items():
        cls_name = (replace or {}).get(cls_name, cls_name)
        cls, sub, label = _component_class(library, cls_name), folder / name, f"{what} {name}"
        if cls is None:
            raise DecoderError(f"{folder / 'model_index.json'}: {name} names an unknown class "
                               f"{library}.{cls_name}")
        if issubclass(cls, ModelMixin):
            parts[name] = _load_diffusers(cls, sub, label, dtype)
        elif issubclass(cls, PreTrainedModel):
            parts[name] = load_checked(cls, sub, label, DecoderError, dtype=dtype)
        else:  # tokenizer, feature extractor, scheduler: no weights
            try:
                parts[name] = cls.from_pretrained(sub, local_files_only=True)
            except (OSError, ValueError, KeyError) as e:
                raise DecoderError(one_line(f"cannot load {label} from {sub}: {e}")) from e
    return parts
