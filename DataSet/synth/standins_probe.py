"""Measuring what the tiny bundle's frozen parts carry about the synthetic world.

Linear probes on the features our adapters see (through the project's own encoder wrappers),
trained on one set of pieces and scored on held-out pieces with other melody seeds; the
language model's loss on held-out world text; and how far MusicGen's T5 conditionings of
captions that differ in instrument are from those that agree. `standins.py` uses these to
report before/after numbers of its pretraining.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from . import world as W

# what each modality's probes read, and the label values (index = class)
ATTRIBUTES = {
    "audio": ("instrument", "tempo", "key", "mode", "drums"),
    "image": ("instrument", "tempo", "mode"),
    "video": ("instrument", "tempo", "mode"),
}
CLASSES = {"instrument": W.INSTRUMENTS, "tempo": tuple(W.TEMPI), "key": W.KEYS, "mode": W.MODES,
           "drums": (False, True)}
COMBOS = list(itertools.product(W.INSTRUMENTS, W.TEMPI, W.KEYS, W.MODES, (False, True)))  # 192


def label(p: W.Piece, attribute: str) -> int:
    return CLASSES[attribute].index(getattr(p, attribute))


def labels(pieces, attribute: str) -> torch.Tensor:
    return torch.tensor([label(p, attribute) for p in pieces])


def balanced_pieces(rng: np.random.Generator, copies: int = 1, seconds: float = 4.0,
                    avoid: set[int] = frozenset()) -> list[W.Piece]:
    """`copies` pieces of every attribute combination (192 each), shuffled, each with its own
    melody seed (none in `avoid`, no two alike)."""
    out, seen = [], set(avoid)
    for _ in range(copies):
        for inst, tempo, key, mode, drums in COMBOS:
            seed = int(rng.integers(0, 2**31 - 1))
            while seed in seen:
                seed = int(rng.integers(0, 2**31 - 1))
            seen.add(seed)
            out.append(W.Piece(inst, tempo, key, mode, drums, seed, seconds))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


@dataclass
class Media:
    """A list of pieces rendered in every modality (what the encoders and probes read)."""

    pieces: list
    audio: list = field(default_factory=list)       # (T,) float32 at 24 kHz
    pictures: list = field(default_factory=list)    # PIL 64x64
    videos: list = field(default_factory=list)      # (32, 64, 64, 3) uint8

    @classmethod
    def render(cls, pieces, audio: bool = True, visual: bool = True) -> "Media":
        m = cls(list(pieces))
        if audio:
            m.audio = [W.render_audio(p) for p in m.pieces]
        if visual:
            m.pictures = [W.render_picture(p) for p in m.pieces]
            m.videos = [np.stack(W.render_video(p)) for p in m.pieces]
        return m


# ---------------------------------------------------------------- features, as the adapters see them

def audio_features(encoder, waves) -> dict[str, torch.Tensor]:
    """MusicEncoder.encode per clip -> (L+1, frames, W); "mean": the mean over frames of every
    layer, concatenated (what the m2ugen adapter pools); "mean_std": plus the std over frames
    (tempo lives in how frames vary)."""
    means, stds = [], []
    for w in waves:
        h = encoder.encode(w)                                          # (L+1, F, W)
        means.append(h.mean(1).reshape(-1))
        stds.append(h.std(1).reshape(-1))
    mean = torch.stack(means)
    return {"mean": mean, "mean_std": torch.cat([mean, torch.stack(stds)], 1)}


def token_features(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 1 + patches, W) last hidden states -> CLS and the mean of the patch tokens, side by
    side (two of the token poolings the adapter's Conv1d over tokens can learn)."""
    return {"cls_mean": torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1)}


def image_features(encoder, pictures, batch: int = 64) -> dict[str, torch.Tensor]:
    return token_features(torch.cat([encoder.encode(pictures[i:i + batch])
                                     for i in range(0, len(pictures), batch)]))


def video_features(encoder, videos, batch: int = 32) -> dict[str, torch.Tensor]:
    return token_features(torch.cat([encoder.encode(videos[i:i + batch])
                                     for i in range(0, len(videos), batch)]))


# ---------------------------------------------------------------- the probe

def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor, l2: float = 1e-3, iters: int = 200) -> float:
    """Multinomial logistic regression (full-batch L-BFGS, fixed L2 on standardised features)
    fitted on the train set; accuracy on the test set."""
    x_train, x_test = x_train.double(), x_test.double()
    mu, sd = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    k = int(max(y_train.max(), y_test.max())) + 1
    w = torch.zeros(a.shape[1], k, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1, max_iter=iters, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + bias, y_train) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(1) == y_test).double().mean())


def probe_modality(feats_train: dict, feats_test: dict, train_pieces, test_pieces,
                   attributes) -> dict[str, dict[str, float]]:
    """{feature kind: {attribute: held-out accuracy}}."""
    return {kind: {a: round(linear_probe(feats_train[kind], labels(train_pieces, a),
                                         feats_test[kind], labels(test_pieces, a)), 4)
                   for a in attributes}
            for kind in feats_train}


def geometry(x: torch.Tensor, pieces, attributes) -> dict:
    """How much the features move with the input, un-standardised (what an adapter that
    L2-normalises its pooled vector sees): the mean cosine between different pieces, and per
    attribute the share of the features' raw energy sum ||x||^2 that its class means explain."""
    x = x.double()
    xn = torch.nn.functional.normalize(x, dim=1)
    n = len(x)
    mean_cos = float(((xn @ xn.T).sum() - n) / (n * (n - 1)))
    mu, energy = x.mean(0), float((x * x).sum())
    share = {}
    for a in attributes:
        y = labels(pieces, a)
        between = sum(float((y == c).sum()) * float(((x[y == c].mean(0) - mu) ** 2).sum())
                      for c in y.unique())
        share[a] = round(between / energy, 5)
    return {"mean_cos": round(mean_cos, 4), "class_energy": share}


def probe_bundle(folders: dict, train: Media, test: Media) -> dict:
    """Probe each frozen encoder loaded from its folder by the project's wrappers.
    folders: {"audio": MERT dir, "image": ViT dir, "video": ViViT dir} (any subset).
    -> {modality: {"probe": {feature kind: {attribute: held-out accuracy}},
                   "geometry": {feature kind: `geometry` of the held-out features}}}"""
    from llama.encoders import ImageEncoder, MusicEncoder, VideoEncoder

    loaders = {"audio": (MusicEncoder, audio_features, "audio"),
               "image": (ImageEncoder, image_features, "pictures"),
               "video": (VideoEncoder, video_features, "videos")}
    out = {}
    for modality, (cls, features, media_field) in loaders.items():
        if modality not in folders:
            continue
        enc = cls.from_pretrained(folders[modality])
        f_train = features(enc, getattr(train, media_field))
        f_test = features(enc, getattr(test, media_field))
        attrs = ATTRIBUTES[modality]
        out[modality] = {"probe": probe_modality(f_train, f_test, train.pieces, test.pieces, attrs),
                         "geometry": {k: geometry(v, test.pieces, attrs) for k, v in f_test.items()}}
    return out


# ---------------------------------------------------------------- text: the LM and T5

def world_texts(pieces, rng: np.random.Generator) -> list[str]:
    """What the tiny LLaMA should find ordinary: captions (every phrasing), Q/A and instructions
    in the Alpaca template, picture and video descriptions."""
    from llama.tokenizer import format_prompt

    instructions = ("Describe the music in detail.", "Describe this music.",
                    "Write a caption for this music.", "Describe the image.",
                    "What is happening in the video?", "Compose music for this video.",
                    "Generate a music that matches this image.")
    out = []
    for p in pieces:
        variant = int(rng.integers(0, 5))
        out.append(W.describe(p, variant))
        attribute = str(rng.choice(list(W.QUESTIONS)))
        q, a = W.answer(p, attribute)
        out.append(f"{format_prompt(q)} {a}")
        k = int(rng.integers(0, len(instructions)))
        reply = (W.describe(p, int(rng.integers(0, 5))) if k < 3 else W.describe_picture(p) if k == 3
                 else W.describe_video(p) if k == 4 else W.describe(p, variant))
        out.append(f"{format_prompt(instructions[k])} {reply}")
        out.append(W.describe_picture(p) if rng.random() < 0.5 else W.describe_video(p))
    return out


def lm_batch(tokenizer, texts, max_len: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, targets) (B, S): bos + text + eos, right-padded; targets -100 on padding."""
    ids = [tokenizer.encode(t, bos=True, eos=True)[:max_len + 1] for t in texts]
    S = max(len(i) for i in ids)
    toks = torch.full((len(ids), S), tokenizer.eos_id, dtype=torch.long)
    tgt = torch.full((len(ids), S), -100, dtype=torch.long)
    for r, i in enumerate(ids):
        toks[r, :len(i)] = torch.tensor(i)
        tgt[r, :len(i) - 1] = torch.tensor(i[1:])
    return toks[:, :-1], tgt[:, :-1]


def lm_loss(model, tokens: torch.Tensor, targets: torch.Tensor, n_base: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the base vocabulary (the [AUD] rows are not LM rows)."""
    logits, _ = model(tokens)
    return torch.nn.functional.cross_entropy(logits[..., :n_base].reshape(-1, n_base),
                                             targets.reshape(-1), ignore_index=-100)


@torch.no_grad()
def lm_eval(model, tokenizer, texts, batch: int = 64) -> float:
    total, count = 0.0, 0
    for i in range(0, len(texts), batch):
        toks, tgt = lm_batch(tokenizer, texts[i:i + batch])
        n = int((tgt != -100).sum())
        total += float(lm_loss(model, toks, tgt, tokenizer.n_base)) * n
        count += n
    return total / count


def t5_cosines(decoder, pieces) -> dict:
    """Cosine similarity of MusicGen conditionings (`condition_text`) of captions that agree in
    instrument vs. differ, over all pairs of captions in the same phrasing (`describe` variant).
    "pooled": the mean over real tokens; "flat": the whole zero-padded (cond_tokens x dim) block."""
    res = {}
    stats = {"pooled": {"agree": [], "differ": []}, "flat": {"agree": [], "differ": []}}
    for variant in range(5):
        caps = [W.describe(p, variant) for p in pieces]
        cond, mask = decoder.condition_text(caps, return_mask=True)
        pooled = (cond.sum(1) / mask.sum(1, keepdim=True)).float()
        inst = labels(pieces, "instrument")
        same = inst[:, None] == inst[None, :]
        off = ~torch.eye(len(pieces), dtype=torch.bool)
        per = {}
        for kind, v in (("pooled", pooled), ("flat", cond.flatten(1).float())):
            v = torch.nn.functional.normalize(v, dim=1)
            cos = v @ v.T
            agree, differ = cos[same & off], cos[~same]
            stats[kind]["agree"].append(agree)
            stats[kind]["differ"].append(differ)
            per[kind] = {"agree": round(float(agree.mean()), 4), "differ": round(float(differ.mean()), 4)}
        res[f"variant{variant}"] = per
    for kind, d in stats.items():
        a, b = float(torch.cat(d["agree"]).mean()), float(torch.cat(d["differ"]).mean())
        res[kind] = {"agree": round(a, 4), "differ": round(b, 4), "gap": round(a - b, 4)}
    return res
