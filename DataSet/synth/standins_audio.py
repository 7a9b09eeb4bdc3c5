"""The MERT stand-in's pretraining on the world's audio: the conv front end on a per-frame acoustic
teacher, then the transformer on the world's attributes (timbre -> instrument, rhythm ->
tempo/drums, pitch -> key/mode), as a real MERT separates them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import standins_probe as P
from .standins_fit import Heads, _batches, _fit, _label_dict
from .standins_folders import _save_transformers, replace_folder

MERT_CROP_SECONDS = 2.5


def mert_pool(hidden_states) -> torch.Tensor:
    """Per hidden state (embeddings + every layer): mean and std over frames, concatenated."""
    h = torch.stack(hidden_states, 1)                              # (B, L+1, F, W)
    return torch.cat([h.mean(2).flatten(1), h.std(2).flatten(1)], 1)


def mert_frontend(enc, waves, batch: int = 16) -> torch.Tensor:
    """The conv feature encoder's output for whole clips (normalised by the folder's feature
    extractor, one clip at a time as `MusicEncoder.encode` does): (N, conv channels, frames)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(waves), batch):
            x = torch.cat([enc.processor(w, sampling_rate=enc.sampling_rate, return_tensors="pt").input_values
                           for w in waves[i:i + batch]])
            out.append(enc.model.feature_extractor(x))
    return torch.cat(out)


def acoustic_targets(x: torch.Tensor, n_frames: int, hop: int, bands: int = 24) -> torch.Tensor:
    """Per-frame acoustic teacher, as MERT's CQT-reconstruction target is one: log energy of each
    frame and of `bands` log-spaced frequency bands. x: (B, T) normalised waves -> (B, F, 1 + bands)."""
    spec = torch.stft(x, n_fft=512, hop_length=hop, window=torch.hann_window(512), center=False,
                      return_complex=True).abs() ** 2                      # (B, 257, F')
    edges = np.unique(np.geomspace(2, spec.shape[1], bands + 1).astype(int))
    band = torch.stack([spec[:, a:b].mean(1) for a, b in zip(edges[:-1], edges[1:])], -1)
    energy = spec.mean(1, keepdim=True).transpose(1, 2)
    t = torch.log(torch.cat([energy, band], -1) + 1e-6)                    # (B, F', 1 + bands)
    f = min(n_frames, t.shape[1])
    return t[:, :f]


def pretrain_mert(folder: Path, media: P.Media, steps: int, seed: int, frontend_steps: int | None = None,
                  batch: int = 16, lr: float = 8e-3, log=print) -> list[float]:
    """Pretraining of the MERT stand-in on the world's audio, in two stages; rewrites the folder.

    1. The conv waveform front end learns to keep each frame's energy and band energies (a
       per-frame acoustic teacher on short crops): random convolutions whose every layer is
       layer-normalised per time step otherwise throw the loudness envelope, hence the rhythm,
       away. Back-propagating through them at 24 kHz is what a step costs, so this stage is short.
    2. The front end is frozen and its output computed once per clip; the projection and
       transformer layers learn the world's attributes (instrument, tempo, key, mode, drums) with
       throw-away heads on pooled hidden states (mean and std over frames of every layer, and
       the mean alone), on random crops.
    """
    from llama.encoders import MusicEncoder

    enc = MusicEncoder.from_pretrained(folder)
    model = enc.model
    gen = torch.Generator().manual_seed(seed)
    frontend_steps = steps // 5 if frontend_steps is None else frontend_steps
    losses = []
    # ---- stage 1: the front end, dense acoustic targets on short crops
    n_short = int(0.75 * enc.sampling_rate)
    width = model.config.conv_dim[-1]
    n_targets = acoustic_targets(torch.zeros(1, n_short), 10**6, enc.hop).shape[-1]
    teacher = nn.Linear(width, n_targets)
    ys = _label_dict(media.pieces, P.ATTRIBUTES["audio"])
    local = Heads(2 * width, ("instrument", "key", "mode", "drums"))   # what a short crop shows
    waves = [torch.from_numpy(w) for w in media.audio]
    # biases and norms only: a bias that outgrows the signal is what lets the per-time-step layer
    # norm keep loudness; the random filters (the spectral shape, i.e. timbre) stay as they are
    fe_params = [p for n, p in model.feature_extractor.named_parameters() if not n.endswith("conv.weight")]
    for p in fe_params:
        p.requires_grad_(True)

    def frontend_loss(step):
        idx = torch.randint(0, len(waves), (16,), generator=gen)
        clips = []
        for i in idx.tolist():
            s = int(torch.randint(0, len(waves[i]) - n_short + 1, (1,), generator=gen))
            clips.append(waves[i][s:s + n_short].numpy())
        x = enc.processor(clips, sampling_rate=enc.sampling_rate, return_tensors="pt").input_values
        f = model.feature_extractor(x).transpose(1, 2)                       # (B, F, C)
        t = acoustic_targets(x, f.shape[1], enc.hop)
        t = (t - t.mean((0, 1))) / t.std((0, 1)).clamp_min(1e-3)
        pooled = torch.cat([f.mean(1), f.std(1)], 1)
        y = {a: v[idx] for a, v in ys.items() if a in local.attributes}
        return nn.functional.mse_loss(teacher(f[:, :t.shape[1]]), t) + 0.5 * local.loss(pooled, y)

    if frontend_steps > 0:
        losses += _fit([*fe_params, *teacher.parameters(), *local.parameters()], frontend_loss,
                       frontend_steps, 1e-2, log,
                       "MERT front end", every=25)
    for p in fe_params:
        p.requires_grad_(False)
    # ---- stage 2: the transformer, the world's attributes on frozen front-end features
    attrs = P.ATTRIBUTES["audio"]
    L, Wd = enc.n_layers, enc.width
    heads = Heads(2 * L * Wd, attrs)
    mean_heads = Heads(L * Wd, attrs)    # the frame mean alone must carry them too (m2ugen pooling)
    it = _batches(len(media.pieces), batch, gen)
    feats = mert_frontend(enc, media.audio)                          # (N, C, F)
    n_frames = feats.shape[-1]
    crop = min(n_frames, max(1, int(MERT_CROP_SECONDS * enc.sampling_rate) // enc.hop))
    frontend, model.feature_extractor = model.feature_extractor, nn.Identity()
    trained = [p for n, p in model.named_parameters()]
    for p in trained:
        p.requires_grad_(True)           # trained in eval mode: no dropout, no SpecAugment masking

    def loss_fn(step):
        idx = next(it)
        starts = torch.randint(0, n_frames - crop + 1, (len(idx),), generator=gen)
        x = torch.stack([feats[i, :, s:s + crop] for i, s in zip(idx.tolist(), starts.tolist())])
        pooled = mert_pool(model(x, output_hidden_states=True).hidden_states)
        y = {a: v[idx] for a, v in ys.items()}
        return heads.loss(pooled, y) + mean_heads.loss(pooled[:, :L * Wd], y)

    try:
        losses += _fit([*trained, *heads.parameters(), *mean_heads.parameters()], loss_fn,
                       steps - frontend_steps, lr, log, "MERT")
    finally:
        model.feature_extractor = frontend
    model.requires_grad_(False)
    replace_folder(folder, _save_transformers(model, folder))
    return losses
