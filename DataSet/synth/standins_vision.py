"""ViT on picture attributes and ViViT on video attributes (instrument/colour, tempo, mode), with
throw-away heads on pooled tokens."""
from __future__ import annotations

from pathlib import Path

import torch

from . import standins_probe as P
from .standins_fit import Heads, _batches, _fit, _label_dict
from .standins_folders import _save_transformers, replace_folder


def token_pool(tokens: torch.Tensor) -> torch.Tensor:
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1)


def _pretrain_tokens(model, pixels: torch.Tensor, pieces, modality: str, steps: int, seed: int,
                     batch: int, lr: float, log) -> list[float]:
    attrs = P.ATTRIBUTES[modality]
    model.requires_grad_(True)
    heads = Heads(2 * model.config.hidden_size, attrs)
    ys = _label_dict(pieces, attrs)
    gen = torch.Generator().manual_seed(seed)
    it = _batches(len(pieces), batch, gen)

    def loss_fn(step):
        idx = next(it)
        tokens = model(pixel_values=pixels[idx]).last_hidden_state
        return heads.loss(token_pool(tokens), {a: v[idx] for a, v in ys.items()})

    losses = _fit([*model.parameters(), *heads.parameters()], loss_fn, steps, lr, log, modality)
    model.requires_grad_(False)
    return losses


def pretrain_vit(folder: Path, media: P.Media, steps: int, seed: int, batch: int = 32,
                 lr: float = 2e-3, log=print) -> list[float]:
    """ViT on picture attributes (colour = instrument, circles = tempo, brightness = mode);
    pixels from the folder's own processor (64x64 -> 16x16)."""
    from llama.encoders import ImageEncoder
    from transformers import ViTModel

    enc = ImageEncoder.from_pretrained(folder)
    pixels = enc.processor([im.convert("RGB") for im in media.pictures], return_tensors="pt").pixel_values
    losses = _pretrain_tokens(enc.model, pixels, media.pieces, "image", steps, seed, batch, lr, log)
    replace_folder(folder, _save_transformers(enc.model, folder, ViTModel))
    return losses


def pretrain_vivit(folder: Path, media: P.Media, steps: int, seed: int, batch: int = 32,
                   lr: float = 2e-3, log=print) -> list[float]:
    """ViViT on video attributes (colour = instrument, bounce rate = tempo, brightness = mode)."""
    from llama.encoders import VideoEncoder
    from transformers import VivitModel

    enc = VideoEncoder.from_pretrained(folder)
    frames = [list(v) for v in media.videos]
    pixels = enc.processor(frames, return_tensors="pt", input_data_format="channels_last").pixel_values
    losses = _pretrain_tokens(enc.model, pixels, media.pieces, "video", steps, seed, batch, lr, log)
    replace_folder(folder, _save_transformers(enc.model, folder, VivitModel))
    return losses
