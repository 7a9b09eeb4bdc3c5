"""Frozen feature extractors: MERT (music), ViT (images), ViViT (video), loaded from local folders.

Each wraps a transformers model and its preprocessor. They are never trained: they stay in eval
mode whatever the parent module does, have no trainable parameters, and run without autograd.
Widths and token counts come from the folder's config.json, so the LLM-side adapter config can be
checked against the weights actually on disk (`check_adapter`).
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llama.config import AdapterConfig
from llama.errors import UserError, one_line

_SHOWN_KEYS = 3  # offending weight names quoted in a load error


class EncoderError(UserError, ValueError):
    """An encoder folder that cannot be used as it is; the message names the folder and why."""


def _read_config(folder: str | Path, what: str) -> tuple[Path, dict]:
    """Fail early, in one line, on a folder that is not a transformers model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EncoderError(f"{what} folder not found: {folder}")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise EncoderError(f"{what} folder {folder} has no config.json (not a transformers model folder)")
    try:
        return folder, json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EncoderError(one_line(f"{cfg}: unreadable config.json ({e})")) from e


def _first(keys) -> str:
    keys = sorted(keys)
    more = f", ... {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def check_load_report(info: dict, folder, what: str, error: type[UserError] = EncoderError,
                      allow_unexpected: tuple[str, ...] = ()) -> None:
    """Raise `error` if the weights on disk do not fill the model exactly.

    `info` is the `output_loading_info` report of transformers or diffusers. Missing weights
    would be left at random init and mismatched ones re-initialised; both are errors, as are
    unexpected weights, except under the `allow_unexpected` prefixes (a head the folder's
    checkpoint carries and we do not run: the weights are ignored, nothing is random).
    """
    problems = []
    missing = list(info.get("missing_keys") or ())
    if missing:
        problems.append(f"missing {_first(missing)}")
    unexpected = [k for k in info.get("unexpected_keys") or () if not k.startswith(allow_unexpected)]
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    mismatched = list(info.get("mismatched_keys") or ())
    if mismatched:
        shown = [f"{k} {tuple(disk)} on disk vs {tuple(want)} in config" for k, disk, want in
                 sorted(mismatched, key=lambda m: m[0])[:_SHOWN_KEYS]]
        problems.append("wrong shape " + ", ".join(shown))
    if info.get("error_msgs"):
        problems.append(str(info["error_msgs"][0]))
    if problems:
        raise error(one_line(f"{what} folder {folder}: weights do not match its config.json: "
                             + "; ".join(problems)))


def load_checked(cls, folder, what: str, error: type[UserError] = EncoderError,
                 allow_unexpected: tuple[str, ...] = (), **kwargs):
    """`cls.from_pretrained(folder)` (a transformers model class) that refuses half-loaded weights.

    Mismatched shapes are reported rather than raised (ignore_mismatched_sizes) so that
    `check_load_report` words every problem the same way. transformers' own load report is
    muted while loading, so allowed leftovers do not print on every start; anything else
    raises here.
    """
    from safetensors import SafetensorError
    from transformers.utils import logging

    if not (Path(folder) / "config.json").is_file():  # else transformers falls back to defaults
        raise error(f"cannot load {what} from {folder}: no config.json")
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with quiet_progress():
            model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True,
                                              ignore_mismatched_sizes=True, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:  # unreadable weights or config
        raise error(one_line(f"cannot load {what} from {folder}: {e}")) from e
    finally:
        logging.set_verbosity(level)
    check_load_report(info, folder, what, error, allow_unexpected)
    return model


@contextlib.contextmanager
def quiet_progress():
    """No 'Loading weights' / 'Writing model shards' bars for tiny local folders; restores the setting."""
    from transformers.utils import logging

    was_on = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            logging.enable_progress_bar()


def _processor(cls, folder: Path, what: str):
    """The folder's preprocessor; a missing or broken preprocessor_config.json is the user's."""
    try:
        return cls.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise EncoderError(one_line(f"cannot load the {what} preprocessor from {folder}: {e}")) from e


# ViT/ViViT are built without their pooler (encode reads last_hidden_state), so a checkpoint's
# pooler is unused; a classification checkpoint (ViViT Kinetics-400) also carries its head.
_UNUSED_HEADS = ("pooler.", "classifier.")


class FrozenEncoder(nn.Module):
    """Common part: freezing, device/dtype handling, the sizes the adapters are checked against.

    `encode` runs under no_grad rather than inference_mode: inference tensors could not be saved
    for backward by the trainable adapters that consume them.
    """

    n_pool: int   # what the adapter's Conv1d pools over: hidden states (music) or tokens
    width: int    # feature width

    def __init__(self, model: nn.Module, processor, device="cpu", dtype=torch.float32):
        super().__init__()
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.processor = processor
        self.eval()

    def train(self, mode: bool = True):
        """Stay in eval mode (no dropout) even when the surrounding model is put in training."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def check_adapter(self, cfg: AdapterConfig, name: str = "adapter") -> None:
        """EncoderError if the adapter was configured for a different encoder than the one on disk."""
        if (cfg.n_pool, cfg.in_dim) != (self.n_pool, self.width):
            raise EncoderError(
                f"{name} expects {cfg.n_pool} x {cfg.in_dim} features but {type(self).__name__} "
                f"gives {self.n_pool} x {self.width}")


class MusicEncoder(FrozenEncoder):
    """MERT: all hidden states (embeddings + every layer) of a mono waveform, 75 frames/s at 24 kHz."""

    def __init__(self, model, processor, device="cpu", dtype=torch.float32, window_seconds: float = 60.0):
        super().__init__(model, processor, device, dtype)
        c = model.config
        self.n_layers = self.n_pool = c.num_hidden_layers + 1
        self.width = c.hidden_size
        self.window_seconds = window_seconds
        # Shortest input that yields one frame: the receptive field of the conv feature encoder.
        kernels, strides = getattr(c, "conv_kernel", (10,)), getattr(c, "conv_stride", (5,))
        self.min_samples = 1 + sum((k - 1) * math.prod(strides[:i]) for i, k in enumerate(kernels))
        self.hop = math.prod(strides)

    @classmethod
    def from_pretrained(cls, folder, trust_remote_code: bool = False, device="cpu",
                        dtype=torch.float32, window_seconds: float = 60.0) -> "MusicEncoder":
        from transformers import AutoModel, Wav2Vec2FeatureExtractor

        folder, cfg = _read_config(folder, "MERT")
        if "auto_map" in cfg and not trust_remote_code:
            raise EncoderError(f"MERT folder {folder} ships its own model code (auto_map in config.json); "
                             "pass --trust-remote-code to run it")
        model = load_checked(AutoModel, folder, "MERT", trust_remote_code=trust_remote_code)
        processor = _processor(Wav2Vec2FeatureExtractor, folder, "MERT")
        return cls(model, processor, device, dtype, window_seconds)

    @property
    def sampling_rate(self) -> int:
        return self.processor.sampling_rate

    @torch.no_grad()
    def encode(self, wave: np.ndarray) -> torch.Tensor:
        """(T,) float waveform at `sampling_rate` -> (L+1, frames, width), the whole clip.

        Clips up to `window_seconds` (60 s) are encoded in one pass, exactly as the published
        model does (it encodes the first <= 60 s at once); longer clips, which it cut off, are
        encoded in 60 s windows and the frames concatenated, so nothing past a minute is dropped.
        """
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if wave.size == 0:
            raise ValueError("cannot encode an empty waveform")
        # A multiple of the hop, so window boundaries fall on frame boundaries.
        window = max(self.hop, int(self.window_seconds * self.sampling_rate) // self.hop * self.hop)
        chunks = [wave[i:i + window] for i in range(0, len(wave), window)]
        out = []
        for chunk in chunks:
            x = self.processor(chunk, sampling_rate=self.sampling_rate, return_tensors="pt").input_values
            if x.shape[-1] < self.min_samples:  # too short for one frame: pad with silence
                x = nn.functional.pad(x, (0, self.min_samples - x.shape[-1]))
            x = x.to(device=self.device, dtype=self.dtype)  # (1, samples)
            hidden = self.model(x, output_hidden_states=True).hidden_states
            out.append(torch.stack(hidden)[:, 0])  # (L+1, frames, width)
        return torch.cat(out, dim=1)  # (L+1, total frames, width)

    @torch.no_grad()
    def encode_batch(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        """Clips of one length, each at most one window, in one pass -> what `encode` gives each,
        up to fp32 rounding (no padding, so no mask: MERT's group norm and attention are per clip).
        Anything else is encoded clip by clip."""
        waves = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waves]
        window = max(self.hop, int(self.window_seconds * self.sampling_rate) // self.hop * self.hop)
        n = waves[0].size
        if len(waves) == 1 or any(w.size != n for w in waves) or not self.min_samples <= n <= window:
            return [self.encode(w) for w in waves]
        x = self.processor(waves, sampling_rate=self.sampling_rate, return_tensors="pt").input_values
        x = x.to(device=self.device, dtype=self.dtype)  # (B, samples)
        hidden = torch.stack(self.model(x, output_hidden_states=True).hidden_states, 1)  # (B, L+1, frames, width)
        return list(hidden)


class ImageEncoder(FrozenEncoder):
    """ViT: the last hidden state (CLS + patch tokens) of RGB images."""

    def __init__(self, model, processor, device="cpu", dtype=torch.float32):
        super().__init__(model, processor, device, dtype)
        c = model.config
        self.n_tokens = self.n_pool = (c.image_size // c.patch_size) ** 2 + 1
        self.width = c.hidden_size

    @classmethod
    def from_pretrained(cls, folder, device="cpu", dtype=torch.float32) -> "ImageEncoder":
        # transformers 5 maps ViTImageProcessor to a torchvision backend; the PIL one gives the
        # same numbers without torchvision.
        from transformers import ViTImageProcessorPil, ViTModel

        folder, _ = _read_config(folder, "ViT")
        model = load_checked(ViTModel, folder, "ViT", allow_unexpected=_UNUSED_HEADS, add_pooling_layer=False)
        processor = _processor(ViTImageProcessorPil, folder, "ViT")
        return cls(model, processor, device, dtype)

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """list of PIL images -> (B, tokens, width)."""
        images = [im.convert("RGB") for im in images]
        x = self.processor(images, return_tensors="pt").pixel_values  # (B, 3, H, W)
        x = x.to(device=self.device, dtype=self.dtype)
        return self.model(pixel_values=x).last_hidden_state  # (B, tokens, width)


class VideoEncoder(FrozenEncoder):
    """ViViT: the last hidden state (CLS + tubelet tokens) of `num_frames`-frame RGB clips."""

    def __init__(self, model, processor, device="cpu", dtype=torch.float32):
        super().__init__(model, processor, device, dtype)
        c = model.config
        t, h, w = c.tubelet_size
        self.n_tokens = self.n_pool = (c.num_frames // t) * (c.image_size // h) * (c.image_size // w) + 1
        self.width = c.hidden_size

    @classmethod
    def from_pretrained(cls, folder, device="cpu", dtype=torch.float32) -> "VideoEncoder":
        from transformers import VivitImageProcessor, VivitModel  # the numpy/PIL processor

        folder, _ = _read_config(folder, "ViViT")
        model = load_checked(VivitModel, folder, "ViViT", allow_unexpected=_UNUSED_HEADS,
                             add_pooling_layer=False)
        processor = _processor(VivitImageProcessor, folder, "ViViT")
        return cls(model, processor, device, dtype)

    @property
    def num_frames(self) -> int:
        """How many frames the media loader must sample per clip."""
        return self.model.config.num_frames

    @torch.no_grad()
    def encode(self, videos) -> torch.Tensor:
        """list of (F, H, W, 3) uint8 arrays, F = num_frames -> (B, tokens, width)."""
        for v in videos:
            if v.ndim != 4 or v.shape[0] != self.num_frames or v.shape[-1] != 3:
                raise ValueError(f"video must be ({self.num_frames}, H, W, 3), got {tuple(v.shape)}")
        # A list of frame lists: a bare 4-D array would be read as a batch of images.
        frames = [list(np.asarray(v)) for v in videos]
        x = self.processor(frames, return_tensors="pt", input_data_format="channels_last").pixel_values
        x = x.to(device=self.device, dtype=self.dtype)  # (B, F, 3, H, W)
        return self.model(pixel_values=x).last_hidden_state  # (B, tokens, width)
