"""A small music world whose truth we know: attributes -> audio, image, video and text.

Every item is a `Piece`: an instrument, a tempo class, a key and mode, drums or not, and a
melody seed. From it we synthesise the audio (numpy), a picture and a short video tied to the
music (colour = instrument, shapes/motion = tempo, brightness = mode), and captions, answers and
instructions from templates. Same piece -> same bytes. Evaluation reads the attribute words back
out of generated text (`attributes_in`).

The picture/video <-> music ties are conventions of this world (as "a sunset fits a calm piece" is
one of the real data sets): they are learnable because they are consistent, not because they are
physical.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

INSTRUMENTS = ("piano", "guitar", "violin", "flute")
TEMPI = {"slow": 70, "medium": 105, "fast": 140}             # class -> beats per minute
KEYS = ("C", "D", "F", "G")                                 # not "A": an article
MODES = ("major", "minor")
KEY_MIDI = {"C": 60, "D": 62, "E": 64, "F": 65, "G": 67, "A": 69, "B": 71}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
MOODS = {("major", "slow"): "calm", ("major", "medium"): "cheerful", ("major", "fast"): "joyful",
         ("minor", "slow"): "sad", ("minor", "medium"): "wistful", ("minor", "fast"): "tense"}
COLOURS = {"piano": (220, 40, 40), "guitar": (40, 170, 60), "violin": (40, 80, 220), "flute": (230, 200, 30)}
SHAPES = {"slow": 1, "medium": 2, "fast": 3}                  # circles in the picture
AUDIO_RATE = 24000                                            # MERT's rate: no resampling needed
VIDEO_FPS, VIDEO_FRAMES, PICTURE_SIZE = 8, 32, 64


@dataclass(frozen=True)
class Piece:
    instrument: str
    tempo: str
    key: str
    mode: str
    drums: bool
    melody_seed: int
    seconds: float = 4.0

    @property
    def bpm(self) -> int:
        return TEMPI[self.tempo]

    @property
    def mood(self) -> str:
        return MOODS[(self.mode, self.tempo)]

    def with_(self, **changes) -> "Piece":
        return dataclasses.replace(self, **changes)


def sample_piece(rng: np.random.Generator, seconds: float = 4.0) -> Piece:
    return Piece(instrument=str(rng.choice(INSTRUMENTS)), tempo=str(rng.choice(list(TEMPI))),
                 key=str(rng.choice(KEYS)), mode=str(rng.choice(MODES)), drums=bool(rng.random() < 0.5),
                 melody_seed=int(rng.integers(0, 2**31 - 1)), seconds=seconds)


# ---------------------------------------------------------------- audio

def melody_notes(p: Piece) -> list[int]:
    """MIDI notes, one per beat: a random walk on the scale that starts and ends on the tonic."""
    rng = np.random.default_rng(p.melody_seed)
    n = max(2, int(round(p.seconds * p.bpm / 60)))
    octave = {"piano": 0, "guitar": -12, "violin": 12, "flute": 12}[p.instrument]
    degree, notes = 0, []
    for i in range(n):
        if 0 < i < n - 1:
            degree = int(np.clip(degree + rng.choice([-2, -1, 1, 2]), -3, 9))
        else:
            degree = 0
        octv, step = divmod(degree, 7)
        notes.append(KEY_MIDI[p.key] + octave + 12 * octv + SCALES[p.mode][step])
    return notes


def _tone(instrument: str, f0: float, n: int, sr: int) -> np.ndarray:
    """One note of `n` samples with the instrument's harmonics and envelope: (n,) float64."""
    t = np.arange(n) / sr
    if instrument == "piano":        # rich harmonics, percussive decay
        partials, env = [(k, 1.0 / k) for k in range(1, 8)], np.exp(-4.0 * t)
    elif instrument == "guitar":     # plucked: upper partials die fast
        return sum(np.exp(-(2.0 + 3.0 * k) * t) / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 10))
    elif instrument == "violin":     # bowed saw-like tone with vibrato and a slow attack
        f = f0 * (1 + 0.006 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(f) / sr
        env = np.minimum(1.0, t / 0.08)
        return env * sum(np.sin(k * phase) / k for k in range(1, 12))
    else:                            # flute: almost a sine, breathy
        partials, env = [(1, 1.0), (2, 0.12), (3, 0.05)], np.minimum(1.0, t / 0.05)
        noise = np.random.default_rng(int(f0)).standard_normal(n) * 0.03
        return env * (sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in partials) + noise)
    return env * sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in partials)


def _drums(p: Piece, n_total: int, sr: int) -> np.ndarray:
    """Kick on every beat, hi-hat on the off-beats."""
    out = np.zeros(n_total)
    beat = int(sr * 60 / p.bpm)
    kick_n, hat_n = int(0.12 * sr), int(0.04 * sr)
    tk = np.arange(kick_n) / sr
    kick = np.sin(2 * np.pi * (50 * tk + 300 * (1 - np.exp(-tk * 30)) / 30)) * np.exp(-tk * 25)
    hat = np.random.default_rng(p.melody_seed ^ 0x5EED).standard_normal(hat_n) * np.exp(-np.arange(hat_n) / (0.008 * sr))
    for start in range(0, n_total, beat):
        k = min(kick_n, n_total - start)
        out[start:start + k] += kick[:k]
        off = start + beat // 2
        if off < n_total:
            h = min(hat_n, n_total - off)
            out[off:off + h] += 0.3 * hat[:h]
    return out


def render_audio(p: Piece, sr: int = AUDIO_RATE) -> np.ndarray:
    """The piece as mono float32 (T,), peak 0.9."""
    total = int(p.seconds * sr)
    beat = int(sr * 60 / p.bpm)
    out = np.zeros(total)
    for i, midi in enumerate(melody_notes(p)):
        start = i * beat
        if start >= total:
            break
        n = min(beat, total - start)
        note = _tone(p.instrument, 440.0 * 2 ** ((midi - 69) / 12), n, sr)
        fade = min(n, int(0.01 * sr))
        note[-fade:] *= np.linspace(1, 0, fade)
        out[start:start + n] += note
    out /= np.abs(out).max() + 1e-9
    if p.drums:
        out = 0.7 * out + 0.5 * _drums(p, total, sr)
    return (0.9 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


# ---------------------------------------------------------------- picture and video

def _background(p: Piece) -> tuple[int, int, int]:
    r, g, b = COLOURS[p.instrument]
    scale = 1.0 if p.mode == "major" else 0.45                   # minor pieces get dark pictures
    return int(r * scale), int(g * scale), int(b * scale)


def render_picture(p: Piece, size: int = PICTURE_SIZE) -> Image.Image:
    """Background colour = instrument (dark for minor), white circles = tempo class (1, 2, 3)."""
    img = Image.new("RGB", (size, size), _background(p))
    draw = ImageDraw.Draw(img)
    k = SHAPES[p.tempo]
    rng = np.random.default_rng(p.melody_seed)
    r = size // 8
    for i in range(k):
        cx = int((i + 1) * size / (k + 1) + rng.integers(-2, 3))
        cy = int(size / 2 + rng.integers(-size // 6, size // 6 + 1))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 255, 255))
    return img


def render_video(p: Piece, size: int = PICTURE_SIZE, frames: int = VIDEO_FRAMES, fps: int = VIDEO_FPS) -> list[np.ndarray]:
    """A white disc on the piece's background that bounces once per beat: (H, W, 3) uint8 frames."""
    bg = np.array(_background(p), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    r = size / 8
    out = []
    for f in range(frames):
        phase = (f / fps) * p.bpm / 60                             # beats elapsed
        cy = size * (0.75 - 0.5 * abs(np.sin(np.pi * phase)))       # up and down once per beat
        cx = size * (0.5 + 0.3 * np.sin(2 * np.pi * phase / 8))
        frame = np.broadcast_to(bg, (size, size, 3)).copy()
        frame[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
        out.append(frame)
    return out


# ---------------------------------------------------------------- text

def describe(p: Piece, variant: int = 0) -> str:
    """A caption naming every attribute with its canonical word; `variant` picks the phrasing."""
    drums = "with drums" if p.drums else "without drums"
    forms = (
        f"A {p.tempo} {p.instrument} melody in {p.key} {p.mode}, {drums}.",
        f"{p.instrument.capitalize()} music at a {p.tempo} tempo in {p.key} {p.mode}, {drums}, {p.mood} in mood.",
        f"This {p.mood} piece features the {p.instrument}, {p.tempo}, in the key of {p.key} {p.mode}, {drums}.",
        f"A {p.mood} {p.key} {p.mode} tune played on {p.instrument} at a {p.tempo} pace, {drums}.",
        f"Solo {p.instrument} in {p.key} {p.mode}; the tempo is {p.tempo} and it is {drums}.",
    )
    return forms[variant % len(forms)]


COLOUR_NAMES = {"piano": "red", "guitar": "green", "violin": "blue", "flute": "yellow"}
PICTURE_VARIANTS = VIDEO_VARIANTS = 4
CAPTION_VARIANTS = 5                                          # phrasings of describe()


def picture_attributes(p: Piece) -> dict:
    """What a picture (and its caption) shows: colour, shade and the number of circles."""
    return {"colour": COLOUR_NAMES[p.instrument], "shade": "bright" if p.mode == "major" else "dark",
            "circles": SHAPES[p.tempo]}


def describe_picture(p: Piece, variant: int = 0) -> str:
    """The picture's caption; variant 0 is the original phrasing, 1-3 others (`variant % 4`)."""
    a = picture_attributes(p)
    colour, shade, n = a["colour"], a["shade"], a["circles"]
    circles = f"{n} white circle{'s' if n > 1 else ''}"
    forms = (
        f"A {shade} {colour} picture with {circles}.",
        f"{circles.capitalize()} on a {shade} {colour} background.",
        f"A picture of {circles} over {shade} {colour}.",
        f"A {colour} square, {shade}, showing {circles}.",
    )
    return forms[variant % len(forms)]


def describe_video(p: Piece, variant: int = 0) -> str:
    """The video's caption; variant 0 is the original phrasing, 1-3 others (`variant % 4`)."""
    a = picture_attributes(p)            # the video shows the picture's colour and shade
    colour, shade = a["colour"], a["shade"]
    forms = (
        f"A white ball bouncing at a {p.tempo} pace on a {shade} {colour} background.",
        f"On a {shade} {colour} background a white ball bounces at a {p.tempo} pace.",
        f"A video of a white ball that bounces, {p.tempo}, in front of {shade} {colour}.",
        f"A {shade} {colour} scene where a white ball keeps bouncing at a {p.tempo} pace.",
    )
    return forms[variant % len(forms)]


QUESTIONS = {   # attribute -> (question, answer template)
    "instrument": ("What instrument is playing?", "The instrument is the {instrument}."),
    "tempo": ("How fast is the music?", "The tempo is {tempo}."),
    "key": ("What key is the music in?", "It is in {key} {mode}."),
    "drums": ("Are there drums in this music?", "{drums_answer}"),
    "mood": ("What is the mood of this music?", "The mood is {mood}."),
}


def answer(p: Piece, attribute: str) -> tuple[str, str]:
    question, template = QUESTIONS[attribute]
    drums_answer = "Yes, there are drums." if p.drums else "No, there are no drums."
    return question, template.format(**dataclasses.asdict(p), mood=p.mood, drums_answer=drums_answer)


def attributes_in(text: str) -> dict[str, str | None]:
    """The attribute words a generated text names (None when it names none or several)."""
    words = re.findall(r"[a-z]+", text.lower())

    def one(options) -> str | None:
        found = {o for o in options if o.lower() in words}
        return found.pop() if len(found) == 1 else None

    return {"instrument": one(INSTRUMENTS), "tempo": one(TEMPI), "key": one(KEYS),
            "mode": one(MODES), "mood": one(set(MOODS.values()))}


def drums_in(text: str) -> bool | None:
    """Whether a text says the music has drums (True), has none (False), or neither/both (None)."""
    t = " ".join(text.lower().replace(",", " ").replace(".", " ").replace(";", " ").split())
    no = any(w in t for w in ("without drums", "no drums", "without the drums", "remove the drums"))
    yes = any(w in t for w in ("with drums", "there are drums", "add drums", "and drums"))
    return None if yes == no else yes


NOTE_LETTERS = "CDEFGAB"
_NATURAL = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def scale_notes(key: str, mode: str) -> list[str]:
    """The seven notes of the scale, spelt with one letter each: scale_notes("F", "major")[3] == "Bb"."""
    start = NOTE_LETTERS.index(key)
    names = []
    for degree, step in enumerate(SCALES[mode]):
        letter = NOTE_LETTERS[(start + degree) % 7]
        shift = (_NATURAL[key] + step - _NATURAL[letter]) % 12
        names.append(letter + {0: "", 1: "#", 2: "##", 11: "b", 10: "bb"}[shift])
    return names
