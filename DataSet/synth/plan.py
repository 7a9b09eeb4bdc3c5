"""What one split of the synthetic world holds: its pieces and every text made from them (no I/O).

`plan_split(seed, split, n)` draws `n` pieces and, for each, the texts of every data set: its
music, picture and video captions, five Q/A pairs, one Alpaca instruction about the world, one
image -> music and one video -> music instruction, and one edit (source piece -> changed piece
with the same melody seed). Same (seed, split, n) -> the same plan.

The splits share nothing, by construction (and `build` asserts it):
  * melody seeds: even in train, odd in heldout, unique within a split;
  * caption texts: a caption is fixed by (what it describes, phrasing variant). For every
    combination of attributes one phrasing is reserved for heldout (`reserved_variant`, a hash),
    train uses only the others. Every combination and every phrasing still occurs in both
    splits, only not together.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from . import world
from .world import CAPTION_VARIANTS, INSTRUMENTS, KEYS, PICTURE_VARIANTS, VIDEO_VARIANTS, Piece

SPLITS = ("train", "heldout")
QA_ATTRIBUTES = ("instrument", "tempo", "key", "drums", "mood")
EDIT_KINDS = ("tempo", "instrument", "mode", "key", "drums")
IMAGE_PROMPTS = ("Compose music for this image.", "Generate a music for this image.",
                 "Write music that fits this picture.", "What music would suit this picture? Compose it.")
VIDEO_PROMPTS = ("Compose music for this video.", "Generate a music for this video.",
                 "Write music that fits this video.", "What music would suit this video? Compose it.")
# The answer names the mood the picture or video implies (mood = mode and tempo, both shown), as
# a person asked for music for a picture would; the caption that follows may not name it.
IMAGE_INTROS = ("Here is {mood} music for this picture:", "This picture calls for {mood} music:",
                "Music that fits the picture, {mood} in mood:")
VIDEO_INTROS = ("Here is {mood} music for this video:", "This video calls for {mood} music:",
                "Music that fits the video, {mood} in mood:")
_TEMPO_ORDER = ("slow", "medium", "fast")


@dataclass(frozen=True)
class Text:
    """One instruction -> answer pair about a piece; `attributes` is the truth the answer states."""
    instruction: str
    answer: str
    attributes: dict
    kind: str = ""


@dataclass(frozen=True)
class Edit:
    kind: str            # one of EDIT_KINDS
    target: Piece        # the source with one attribute changed, same melody seed
    target_caption: str
    instruction: str
    answer: str


@dataclass(frozen=True)
class Item:
    """One piece and everything made from it."""
    id: str                          # "p000000": names its files
    piece: Piece
    caption: str                     # music caption (MUCaps, MUImage/MUVideo targets, MUEdit source)
    picture_caption: str
    video_caption: str
    qa: tuple[Text, ...]
    alpaca: Text
    image_task: Text
    video_task: Text
    edit: Edit


def music_attributes(p: Piece) -> dict:
    return {"instrument": p.instrument, "tempo": p.tempo, "bpm": p.bpm, "key": p.key, "mode": p.mode,
            "drums": p.drums, "mood": p.mood}


def reserved_variant(kind: str, combo: tuple, n_variants: int) -> int:
    """The phrasing of `combo`'s `kind` caption that only heldout uses (stable across runs)."""
    digest = hashlib.sha1(f"{kind}|{'|'.join(map(str, combo))}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_variants


def caption_variant(kind: str, combo: tuple, n_variants: int, split: str,
                    rng: np.random.Generator) -> int:
    reserved = reserved_variant(kind, combo, n_variants)
    if split == "heldout":
        return reserved
    v = int(rng.integers(n_variants - 1))
    return v if v < reserved else v + 1


def music_caption(p: Piece, split: str, rng: np.random.Generator) -> str:
    combo = (p.instrument, p.tempo, p.key, p.mode, p.drums)     # all that describe() depends on
    return world.describe(p, caption_variant("music", combo, CAPTION_VARIANTS, split, rng))


def picture_caption(p: Piece, split: str, rng: np.random.Generator) -> str:
    a = world.picture_attributes(p)
    combo = (a["colour"], a["shade"], a["circles"])
    return world.describe_picture(p, caption_variant("picture", combo, PICTURE_VARIANTS, split, rng))


def video_caption(p: Piece, split: str, rng: np.random.Generator) -> str:
    combo = (world.COLOUR_NAMES[p.instrument], p.mode, p.tempo)
    return world.describe_video(p, caption_variant("video", combo, VIDEO_VARIANTS, split, rng))


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _listing(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


def alpaca_text(p: Piece, rng: np.random.Generator) -> Text:
    """A text-only instruction about the world's conventions, drawn around the piece's attributes."""
    kind = _pick(rng, ("scale", "mood_of", "describe_mood", "bpm", "picture", "circles"))
    if kind == "scale":
        return Text(f"Which notes are in the {p.key} {p.mode} scale?",
                    f"The {p.key} {p.mode} scale has the notes {_listing(world.scale_notes(p.key, p.mode))}.",
                    {"key": p.key, "mode": p.mode}, kind)
    if kind == "mood_of":
        return Text(f"What mood does a {p.tempo} piece in a {p.mode} key have?",
                    f"A {p.tempo} piece in a {p.mode} key sounds {p.mood}.",
                    {"tempo": p.tempo, "mode": p.mode, "mood": p.mood}, kind)
    if kind == "describe_mood":
        return Text(f"Describe a {p.mood} piece.", f"A {p.mood} piece is {p.tempo} and in a {p.mode} key.",
                    {"tempo": p.tempo, "mode": p.mode, "mood": p.mood}, kind)
    if kind == "bpm":
        return Text(f"How many beats per minute is a {p.tempo} tempo?",
                    f"A {p.tempo} tempo is {p.bpm} beats per minute.",
                    {"tempo": p.tempo, "bpm": p.bpm}, kind)
    colour = world.COLOUR_NAMES[p.instrument]
    if kind == "picture":
        return Text(f"What colour is the picture for {p.instrument} music?",
                    f"Music played on the {p.instrument} goes with a {colour} picture.",
                    {"instrument": p.instrument, "colour": colour}, kind)
    n = world.SHAPES[p.tempo]
    return Text(f"What tempo goes with a picture of {n} white circle{'s' if n > 1 else ''}?",
                f"{n} white circle{'s mean' if n > 1 else ' means'} a {p.tempo} tempo.",
                {"tempo": p.tempo, "circles": n}, kind)


def edit_of(p: Piece, split: str, rng: np.random.Generator) -> Edit:
    """One change of one attribute, the instruction asking for it and the answer naming the result."""
    kind = _pick(rng, EDIT_KINDS)
    if kind == "tempo":
        new = _pick(rng, [t for t in _TEMPO_ORDER if t != p.tempo])
        step = _TEMPO_ORDER.index(new) - _TEMPO_ORDER.index(p.tempo)
        instruction = {1: "Make it faster.", 2: "Make it much faster.", -1: "Make it slower.",
                       -2: "Make it much slower."}[step]
        target, ack = p.with_(tempo=new), f"Here it is at a {new} tempo."
    elif kind == "instrument":
        new = _pick(rng, [i for i in INSTRUMENTS if i != p.instrument])
        target, instruction, ack = (p.with_(instrument=new), f"Play it on the {new} instead.",
                                    f"Here it is on the {new}.")
    elif kind == "mode":
        new = "minor" if p.mode == "major" else "major"
        target, instruction, ack = p.with_(mode=new), f"Change it to {new}.", f"Here it is in {new}."
    elif kind == "key":
        new = _pick(rng, [k for k in KEYS if k != p.key])
        target, instruction, ack = p.with_(key=new), f"Transpose it to {new}.", f"Here it is in {new}."
    else:
        target = p.with_(drums=not p.drums)
        instruction, ack = (("Add drums.", "Here it is with drums.") if target.drums
                            else ("Remove the drums.", "Here it is without drums."))
    caption = music_caption(target, split, rng)
    return Edit(kind, target, caption, instruction, f"{ack} {caption}")


def _sample_piece(rng: np.random.Generator, split: str, seen: set[int], seconds: float) -> Piece:
    """world.sample_piece with the split's melody-seed parity, resampled until the seed is new."""
    while True:
        p = world.sample_piece(rng, seconds)
        seed = (p.melody_seed & ~1) | SPLITS.index(split)
        if seed not in seen:
            seen.add(seed)
            return p.with_(melody_seed=seed)


def plan_split(seed: int, split: str, n: int, seconds: float = 4.0) -> list[Item]:
    """The `n` items of `split`, drawn from one generator seeded by (seed, split)."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    seen: set[int] = set()
    items = []
    for i in range(n):
        p = _sample_piece(rng, split, seen, seconds)
        truth = music_attributes(p)
        caption = music_caption(p, split, rng)
        qa = tuple(Text(*world.answer(p, a), truth, a) for a in QA_ATTRIBUTES)
        image_task = Text(_pick(rng, IMAGE_PROMPTS), f"{_pick(rng, IMAGE_INTROS).format(mood=p.mood)} {caption}",
                          truth, "image")
        video_task = Text(_pick(rng, VIDEO_PROMPTS), f"{_pick(rng, VIDEO_INTROS).format(mood=p.mood)} {caption}",
                          truth, "video")
        items.append(Item(f"p{i:06d}", p, caption, picture_caption(p, split, rng),
                          video_caption(p, split, rng), qa, alpaca_text(p, rng), image_task,
                          video_task, edit_of(p, split, rng)))
    return items
