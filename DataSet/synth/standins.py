"""Stand-ins that carry signal: a short, honest pretraining of the tiny bundle's frozen parts.

`python -m llama.tiny` writes random weights; random frozen encoders make features that hardly
move with the input, so nothing downstream can learn from them. This pretrains, on the synthetic
world (`world.py`) and in a few minutes of CPU:

- the MERT stand-in (HubertModel) with throw-away heads on its pooled hidden states
  (timbre -> instrument, rhythm -> tempo/drums, pitch -> key/mode), as a real MERT separates them;
- ViT on picture attributes and ViViT on video attributes (instrument/colour, tempo, mode);
- the tiny LLaMA as a language model on world text (captions, Alpaca Q/A, descriptions);
- MusicGen's T5 text encoder, so that captions with different attributes condition differently.

Each folder is rewritten in place in its own format (transformers `save_pretrained` + the same
preprocessor files; Meta consolidated.00.pth + params.json) and loaded back by the project's own
loaders; each is written into a temp folder and renamed, never left half-written. Linear probes
on held-out pieces (`standins_probe.py`) measure before and after.

    python -m DataSet.synth.standins BUNDLE_DIR --seed 0     # writes BUNDLE_DIR/standins_report.json
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import standins_probe as P
from . import world as W

REPORT_FILE = "standins_report.json"
STEPS = {"mert": 500, "vit": 150, "vivit": 150, "llama": 150, "t5": 200}   # mert: 100 front end + 400 transformer (900 overfits: held-out tempo 77 %, not better)
TARGETS = {("audio", "instrument"): 0.95, ("audio", "tempo"): 0.90, ("image", "instrument"): 0.95,
           ("image", "tempo"): 0.95, ("video", "instrument"): 0.95, ("video", "tempo"): 0.95}
MERT_CROP_SECONDS = 2.5


# ---------------------------------------------------------------- folders

def replace_folder(dst: Path, write) -> Path:
    """`write(tmp)` fills a fresh temp folder next to `dst`, which then takes `dst`'s place."""
    dst = Path(dst)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    tmp.chmod(0o755)
    try:
        write(tmp)
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        if dst.exists():
            dst.rename(old / dst.name)
        tmp.rename(dst)
        shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _copy_files(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)


def _save_transformers(model, src: Path, full_cls=None, **full_kwargs):
    """A writer for `replace_folder`: the folder's other files (preprocessor) copied, then the
    model saved over them. With `full_cls`, the folder's checkpoint as written (e.g. ViT with its
    pooler, which our wrapper does not build) is loaded and the trained weights put into it, so
    the file holds the same tensors as before."""
    def write(tmp: Path):
        _copy_files(src, tmp)
        out = model
        if full_cls is not None:
            from llama.encoders import quiet_progress

            with quiet_progress():
                out = full_cls.from_pretrained(src, local_files_only=True, **full_kwargs)
            missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
            if unexpected or any(not k.startswith("pooler.") for k in missing):
                raise RuntimeError(f"cannot put trained weights back: {missing[:3]} {unexpected[:3]}")
        from llama.encoders import quiet_progress

        with quiet_progress():
            out.save_pretrained(tmp)
    return write


# ---------------------------------------------------------------- training helpers

class Heads(nn.Module):
    """One linear classifier per attribute on a pooled feature vector (discarded after training)."""

    def __init__(self, dim: int, attributes):
        super().__init__()
        self.attributes = tuple(attributes)
        self.heads = nn.ModuleDict({a: nn.Linear(dim, len(P.CLASSES[a])) for a in self.attributes})

    def loss(self, x: torch.Tensor, y: dict) -> torch.Tensor:
        return sum(nn.functional.cross_entropy(self.heads[a](x), y[a]) for a in self.attributes)


def _label_dict(pieces, attributes) -> dict[str, torch.Tensor]:
    return {a: P.labels(pieces, a) for a in attributes}


def _schedule(opt, steps: int, warmup: int = 10):
    """Linear warm-up then cosine decay to 10 %."""
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + np.cos(np.pi * min(1.0, t)))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def _fit(params, loss_fn, steps: int, lr: float, log, name: str, every: int = 50) -> list[float]:
    """Adam on `loss_fn(step)`; returns the losses."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = _schedule(opt, steps)
    losses = []
    for step in range(steps):
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log and (step % every == 0 or step == steps - 1):
            log(f"  {name} step {step + 1}/{steps} loss {np.mean(losses[-every:]):.3f}")
    return losses


def _batches(n: int, batch: int, gen: torch.Generator):
    """Endless shuffled index batches over n items."""
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1 if n >= batch else 1, batch):
            yield order[i:i + batch]


# ---------------------------------------------------------------- encoders

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


# ---------------------------------------------------------------- LLaMA

def llama_paths(bundle: Path) -> tuple[Path, Path]:
    """(LLaMA folder with tokenizer.model, the model folder with params.json)."""
    from llama.tiny import LAYOUT

    root = bundle / LAYOUT["llama_dir"]
    return root, root / LAYOUT["llama_type"]


def load_llama(bundle: Path):
    """(Transformer without LoRA, tokenizer, Meta weights) through the project's loaders."""
    from llama.checkpoint import load_llama_base, load_meta_llama
    from llama.llama import Transformer
    from llama.tokenizer import Tokenizer

    root, model_dir = llama_paths(bundle)
    tok = Tokenizer(root / "tokenizer.model")
    cfg, weights = load_meta_llama(model_dir)
    from llama.config import preset

    tiny = preset("tiny").llama      # our extras (adapter layers); no LoRA: the base is trained
    cfg = dataclasses.replace(cfg, vocab_size=tok.n_base, lora_rank=0, max_seq_len=256,
                              adapter_layers_per_modality=tiny.adapter_layers_per_modality)
    model = Transformer(cfg)
    load_llama_base(model, weights)
    return model, tok, {k: weights[k] for k in weights}


def meta_state_dict(model, original: dict) -> dict[str, torch.Tensor]:
    """The trained weights under Meta's key names, base vocabulary rows only, in the original
    file's key order (rope.freqs as it was)."""
    params = dict(model.named_parameters())
    out = {}
    for key, old in original.items():
        t = old if key not in params else params[key].detach()[: old.shape[0]]
        out[key] = t.to(old.dtype).clone().contiguous()
        assert out[key].shape == old.shape, key
    return out


def pretrain_llama(bundle: Path, train_texts, eval_texts, steps: int, seed: int, batch: int = 16,
                   lr: float = 3e-3, log=print) -> dict:
    """All of the tiny LLaMA's base weights as a language model on world text; rewrites the
    Meta folder (tokenizer.model and params.json as they were)."""
    model, tok, original = load_llama(bundle)
    for name, p in model.named_parameters():     # biases and gates are ours, not Meta's: stay zero
        p.requires_grad_(name in original)
    before = P.lm_eval(model, tok, eval_texts)
    gen = torch.Generator().manual_seed(seed)
    it = _batches(len(train_texts), batch, gen)

    def loss_fn(step):
        toks, tgt = P.lm_batch(tok, [train_texts[i] for i in next(it).tolist()])
        return P.lm_loss(model, toks, tgt, tok.n_base)

    params = [p for p in model.parameters() if p.requires_grad]
    losses = _fit(params, loss_fn, steps, lr, log, "LLaMA")
    after = P.lm_eval(model, tok, eval_texts)
    root, model_dir = llama_paths(bundle)
    sd = meta_state_dict(model, original)

    def write(tmp: Path):
        shutil.copy2(root / "tokenizer.model", tmp / "tokenizer.model")
        (tmp / model_dir.name).mkdir()
        shutil.copy2(model_dir / "params.json", tmp / model_dir.name / "params.json")
        torch.save(sd, tmp / model_dir.name / "consolidated.00.pth")

    del original
    replace_folder(root, write)
    return {"eval_loss_before": round(before, 4), "eval_loss_after": round(after, 4),
            "train_loss_first": round(losses[0], 4), "train_loss_last": round(float(np.mean(losses[-20:])), 4),
            "train_texts": len(train_texts), "eval_texts": len(eval_texts)}


# ---------------------------------------------------------------- MusicGen's T5

T5_ATTRIBUTES = ("instrument", "tempo", "key", "mode", "drums")


def visible(decoder, pieces, variants) -> dict[str, torch.Tensor]:
    """{attribute: (N,) bool}: whether the caption, as truncated to the conditioning length,
    changes when the attribute does (an attribute cut off or tokenised to <unk> cannot be learned)."""
    def ids(caps):
        return decoder._tokenize(caps)["input_ids"]

    base = [W.describe(p, v) for p, v in zip(pieces, variants)]
    ref = ids(base)
    out = {}
    for a in T5_ATTRIBUTES:
        seen = torch.zeros(len(pieces), dtype=torch.bool)
        for value in P.CLASSES[a]:
            alt = ids([W.describe(p.with_(**{a: value}), v) for p, v in zip(pieces, variants)])
            n = max(alt.shape[1], ref.shape[1])
            pad = lambda t: nn.functional.pad(t, (0, n - t.shape[1]))  # noqa: E731
            seen |= (pad(alt) != pad(ref)).any(1)
        out[a] = seen
    return out


def pretrain_t5(folder: Path, train_pieces, eval_pieces, steps: int, seed: int, batch: int = 64,
                lr: float = 3e-3, log=print) -> dict:
    """MusicGen's T5 encoder classifies every visible attribute from every token's output
    (per-token heads, thrown away), so its conditionings carry the attributes; rewrites the
    MusicGen folder with save_pretrained."""
    from llama.decoders.musicgen import MusicGenDecoder

    dec = MusicGenDecoder.from_pretrained(folder)
    te = dec.model.text_encoder
    before = P.t5_cosines(dec, eval_pieces)
    rng = np.random.default_rng(seed)
    pieces = list(train_pieces) * 5
    variants = [v for v in range(5) for _ in train_pieces]
    caps = [W.describe(p, v) for p, v in zip(pieces, variants)]
    enc = dec._tokenize(caps)
    vis = visible(dec, pieces, variants)
    ys = _label_dict(pieces, T5_ATTRIBUTES)
    heads = Heads(dec.cond_dim, T5_ATTRIBUTES)
    gen = torch.Generator().manual_seed(seed)
    it = _batches(len(caps), batch, gen)
    te.requires_grad_(True)

    def loss_fn(step):
        idx = next(it)
        mask = enc["attention_mask"][idx]
        h = te(input_ids=enc["input_ids"][idx], attention_mask=mask).last_hidden_state  # (B, L, C)
        tok_w = mask.float() / mask.sum(1, keepdim=True)                                 # (B, L)
        total = h.new_zeros(())
        for a in T5_ATTRIBUTES:
            logits = heads.heads[a](h)                                                   # (B, L, K)
            y = ys[a][idx][:, None].expand(-1, h.shape[1])
            ce = nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, L)
            w = tok_w * vis[a][idx, None].float()
            total = total + (ce * w).sum() / len(idx)
        return total

    del rng
    losses = _fit([*te.parameters(), *heads.parameters()], loss_fn, steps, lr, log, "T5")
    te.requires_grad_(False)
    after_model = dec.model.eval()

    def write(tmp: Path):
        _copy_files(folder, tmp)
        after_model.save_pretrained(tmp)
        dec.processor.save_pretrained(tmp)

    replace_folder(folder, write)
    after = P.t5_cosines(MusicGenDecoder.from_pretrained(folder), eval_pieces)
    return {"before": before, "after": after, "train_loss_first": round(losses[0], 4),
            "train_loss_last": round(float(np.mean(losses[-20:])), 4),
            "visible": {a: round(float(v.float().mean()), 4) for a, v in vis.items()}}


# ---------------------------------------------------------------- the whole thing

@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def pretrain_standins(bundle_dir, seed: int = 0, steps: dict | None = None, log=print,
                      copies: int = 2, probe: bool = True, seconds: float = 4.0,
                      n_train: int | None = None, n_test: int | None = None) -> dict:
    """Pretrain the tiny bundle's MERT/ViT/ViViT/LLaMA/MusicGen-T5 in place; return the report.

    copies: pieces per attribute combination (192 combinations) to pretrain on; the probes fit on
    the first copy and score on another 192 held-out pieces (other melody seeds, never trained on).
    n_train/n_test cut those lists short (tests); seconds: the clip length.
    """
    from llama.tiny import LAYOUT

    t_start = time.perf_counter()
    log = log or (lambda s: None)
    steps = {**STEPS, **(steps or {})}
    bundle = Path(bundle_dir)
    if not (bundle / "bundle.json").is_file():
        raise FileNotFoundError(f"{bundle} is not a tiny bundle (no bundle.json)")
    folders = {"audio": bundle / LAYOUT["mert"], "image": bundle / LAYOUT["vit"],
               "video": bundle / LAYOUT["vivit"]}
    report = {"seed": seed, "steps": steps, "copies": copies, "seconds_per_clip": seconds,
              "seconds": {}}
    timer = time.perf_counter()

    def lap(name):
        nonlocal timer
        now = time.perf_counter()
        report["seconds"][name] = round(now - timer, 1)
        timer = now

    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        train_pieces = P.balanced_pieces(rng, copies, seconds)
        test_pieces = P.balanced_pieces(rng, 1, seconds, avoid={p.melody_seed for p in train_pieces})
        train_pieces, test_pieces = train_pieces[:n_train], test_pieces[:n_test]   # (small worlds)
        log(f"rendering {len(train_pieces)} training and {len(test_pieces)} held-out pieces")
        train = P.Media.render(train_pieces)
        test = P.Media.render(test_pieces)
        probe_train = P.Media(train.pieces[:192], train.audio[:192], train.pictures[:192], train.videos[:192])
        lap("render")
        if probe:
            log("probing the stand-ins as they are")
            report["before"] = P.probe_bundle(folders, probe_train, test)
            lap("probe_before")
        log(f"MERT: {steps['mert']} steps")
        report["mert_loss"] = _ends(pretrain_mert(folders["audio"], train, steps["mert"], seed, log=log))
        lap("mert")
        log(f"ViT: {steps['vit']} steps")
        report["vit_loss"] = _ends(pretrain_vit(folders["image"], train, steps["vit"], seed, log=log))
        lap("vit")
        log(f"ViViT: {steps['vivit']} steps")
        report["vivit_loss"] = _ends(pretrain_vivit(folders["video"], train, steps["vivit"], seed, log=log))
        lap("vivit")
        log(f"LLaMA: {steps['llama']} steps")
        text_rng = np.random.default_rng(seed + 1)
        report["llama"] = pretrain_llama(bundle, P.world_texts(train_pieces, text_rng),
                                         P.world_texts(test_pieces[:64], text_rng), steps["llama"], seed,
                                         log=log)
        lap("llama")
        log(f"MusicGen T5: {steps['t5']} steps")
        report["t5"] = pretrain_t5(bundle / LAYOUT["musicgen"], train_pieces, test_pieces, steps["t5"],
                                   seed, log=log)
        lap("t5")
        if probe:
            log("probing the pretrained stand-ins")
            report["after"] = P.probe_bundle(folders, probe_train, test)
            lap("probe_after")
            report["targets"] = targets_met(report["after"])
    report["seconds"]["total"] = round(time.perf_counter() - t_start, 1)
    return report


def _ends(losses: list[float]) -> dict:
    return {"first": round(losses[0], 4), "last": round(float(np.mean(losses[-10:])), 4)}


def targets_met(probe: dict) -> dict:
    """Each target against the best of the modality's probe features."""
    out = {}
    for (modality, attribute), want in TARGETS.items():
        got = max(kinds[attribute] for kinds in probe[modality]["probe"].values())
        out[f"{modality}.{attribute}"] = {"target": want, "got": got, "met": got >= want}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m DataSet.synth.standins", description=__doc__.splitlines()[0])
    ap.add_argument("bundle_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-probe", action="store_true", help="skip the before/after probes")
    for name, n in STEPS.items():
        ap.add_argument(f"--{name}-steps", type=int, default=n)
    args = ap.parse_args(argv)
    steps = {name: getattr(args, f"{name}_steps") for name in STEPS}
    report = pretrain_standins(args.bundle_dir, seed=args.seed, steps=steps, probe=not args.no_probe,
                               log=lambda s: print(s, flush=True))
    (args.bundle_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("targets", "seconds") if k in report}, indent=1))
    print(f"wrote {args.bundle_dir / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
