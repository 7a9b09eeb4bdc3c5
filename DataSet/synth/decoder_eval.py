"""Does a MusicGen folder make the world's music? Measures that know nothing of how it was trained.

On held-out world pieces:
(a) codec round trip: frame-wise chroma correlation, pitch-class-profile correlation and log-mel
    L1 between a clip and EnCodec's encode -> decode of it, and (b)'s classifiers' accuracy on the
    decoded clips (instrument, tempo, key/mode: the ceiling for any LM on these codes);
(b) caption -> music: the key/mode of the generated audio by Krumhansl-Kessler profile matching of
    its librosa chroma, its tempo class and instrument by classifiers fit on the world's REAL train
    clips (onset autocorrelation; MFCC statistics) and applied to generated audio; accuracy against
    the caption's truth, chance beside it;
(c) continuation: pitch-class-profile correlation of what the decoder adds after a 2 s prompt of
    a source clip to the source's own remaining 2 s, against the same for music generated from
    the caption alone.
`real_ceiling` applies (b)'s measures to the real held-out clips: how well the measures themselves
read the truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import world as W

SR = 32000                                       # MusicGen's rate; real clips are resampled to it
# Krumhansl-Kessler key profiles, tonic first
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
PITCH_CLASS = {"C": 0, "D": 2, "F": 5, "G": 7}
CHANCE = {"key": 1 / len(W.KEYS), "mode": 1 / len(W.MODES), "key_mode": 1 / (len(W.KEYS) * len(W.MODES)),
          "tempo": 1 / len(W.TEMPI), "instrument": 1 / len(W.INSTRUMENTS)}


# ---------------------------------------------------------------- features

def chroma(wave: np.ndarray, sr: int = SR) -> np.ndarray:
    """(T,) -> (12, frames) librosa STFT chroma (4096-point FFT: semitones apart down to ~C3)."""
    import librosa

    return librosa.feature.chroma_stft(y=np.asarray(wave, np.float32), sr=sr, n_fft=4096, hop_length=1024)


def profile_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two clips' pitch-class profiles (mean chroma): same key/notes -> high."""
    pa, pb = chroma(a).mean(1), chroma(b).mean(1)
    if pa.std() < 1e-8 or pb.std() < 1e-8:
        return 0.0
    return float(np.corrcoef(pa, pb)[0, 1])


def chroma_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two aligned clips' chromagrams frame by frame (melody, not just key)."""
    ca, cb = chroma(a), chroma(b)
    n = min(ca.shape[1], cb.shape[1])
    x, y = ca[:, :n].ravel(), cb[:, :n].ravel()
    if x.std() < 1e-8 or y.std() < 1e-8:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def log_mel_l1(a: np.ndarray, b: np.ndarray, sr: int = SR) -> float:
    import librosa

    n = min(len(a), len(b))
    ma, mb = (np.log(librosa.feature.melspectrogram(y=np.asarray(x[:n], np.float32), sr=sr, n_mels=64) + 1e-5)
              for x in (a, b))
    return float(np.abs(ma - mb).mean())


def key_mode(wave: np.ndarray, sr: int = SR) -> tuple[str, str]:
    """The world key and mode whose rotated Krumhansl profile best correlates with the clip's
    pitch-class profile (candidates: the world's 4 keys x 2 modes)."""
    prof = chroma(wave, sr).mean(1)
    best, best_r = ("C", "major"), -np.inf
    for key, pc in PITCH_CLASS.items():
        for mode, template in (("major", MAJOR), ("minor", MINOR)):
            r = np.corrcoef(prof, np.roll(template, pc))[0, 1] if prof.std() > 1e-8 else 0.0
            if r > best_r:
                best, best_r = (key, mode), r
    return best


def tempo_features(wave: np.ndarray, sr: int = SR) -> np.ndarray:
    """Onset-envelope autocorrelation at half, one and two beat periods of each tempo class: (9,)."""
    import librosa

    hop = 512
    env = librosa.onset.onset_strength(y=np.asarray(wave, np.float32), sr=sr, hop_length=hop)
    env = env - env.mean()
    ac = np.correlate(env, env, "full")[len(env) - 1:]
    ac = ac / (ac[0] + 1e-9)
    fps = sr / hop
    out = []
    for bpm in W.TEMPI.values():
        for mult in (0.5, 1.0, 2.0):
            lag = 60.0 / bpm * fps * mult
            out.append(np.interp(lag, np.arange(len(ac)), ac) if lag < len(ac) - 1 else 0.0)
    return np.array(out)


def timbre_features(wave: np.ndarray, sr: int = SR) -> np.ndarray:
    """MFCC means and standard deviations: (40,)."""
    import librosa

    m = librosa.feature.mfcc(y=np.asarray(wave, np.float32), sr=sr, n_mfcc=20)
    return np.concatenate([m.mean(1), m.std(1)])


# ---------------------------------------------------------------- classifiers fit on real clips

@dataclass
class Reference:
    """Tempo and instrument classifiers fit on real world clips (32 kHz)."""

    tempo: object
    instrument: object

    @classmethod
    def fit(cls, clips, degraded_copies: int = 1, seed: int = 0) -> "Reference":
        """clips: a `standins_decoder.Clips` (waves at 32 kHz and their pieces), plus
        `degraded_copies` noisy / low-passed copies of each (`augment.py`: fit on clean clips
        alone, the instrument classifier read real clips with noise 30 dB under the music at 0.60,
        so it measured a decoder's noise as much as its instrument)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from .augment import with_degraded

        def model():
            return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))

        waves, pieces = with_degraded(clips.waves, clips.pieces, SR, seed=seed, copies=degraded_copies)
        tempo = model().fit(np.stack([tempo_features(w) for w in waves]), [p.tempo for p in pieces])
        inst = model().fit(np.stack([timbre_features(w) for w in waves]), [p.instrument for p in pieces])
        return cls(tempo, inst)

    def read(self, waves) -> list[dict]:
        """What the measures hear in each clip: key, mode, tempo class, instrument."""
        t = self.tempo.predict(np.stack([tempo_features(w) for w in waves]))
        i = self.instrument.predict(np.stack([timbre_features(w) for w in waves]))
        return [{"key": km[0], "mode": km[1], "tempo": str(tt), "instrument": str(ii)}
                for km, tt, ii in zip((key_mode(w) for w in waves), t, i)]


def accuracy(heard: list[dict], pieces) -> dict:
    """Accuracy of each attribute against the pieces' truth, with chance."""
    out = {}
    for a in ("key", "mode", "tempo", "instrument"):
        out[a] = round(float(np.mean([h[a] == getattr(p, a) for h, p in zip(heard, pieces)])), 4)
    out["key_mode"] = round(float(np.mean([(h["key"], h["mode"]) == (p.key, p.mode)
                                           for h, p in zip(heard, pieces)])), 4)
    return {"accuracy": out, "chance": {k: round(v, 4) for k, v in CHANCE.items()}}


def real_ceiling(clips, ref: Reference) -> dict:
    """(b)'s measures on the real held-out clips: the best a decoder could score."""
    return accuracy(ref.read(clips.waves), clips.pieces)


# ---------------------------------------------------------------- the decoder

def _batched(fn, n: int, batch: int) -> np.ndarray:
    return np.concatenate([fn(slice(i, min(n, i + batch))) for i in range(0, n, batch)])


@torch.no_grad()
def evaluate(folder, clips, ref: Reference, seed: int = 0, duration: float = 4.0, prompt_s: float = 2.0,
             guidance_scale: float = 3.0, batch: int = 20) -> dict:
    """(a), (b), (c) for the MusicGen folder on held-out `clips` (fixed-seed sampling, the
    project's guidance 3.0)."""
    from llama.decoders.musicgen import MusicGenDecoder

    dec = MusicGenDecoder.from_pretrained(folder)
    if dec.sampling_rate != SR:
        raise ValueError(f"{folder}: codec at {dec.sampling_rate} Hz, the measures expect {SR}")
    waves, pieces = clips.waves, clips.pieces
    caps = [c[0] for c in clips.captions]
    n = len(waves)
    codec = dec.model.audio_encoder

    def round_trip(rows):
        x = torch.from_numpy(waves[rows])[:, None]                                 # (B, 1, T)
        codes = codec.encode(x).audio_codes                                        # (1, B, K, F)
        return codec.decode(codes, [None])[0][:, 0, :x.shape[-1]].numpy()          # (B, T)

    rt = _batched(round_trip, n, batch)
    heard = accuracy(ref.read(rt), pieces)["accuracy"]        # the most any LM on these codes can score
    out = {"n_pieces": n, "round_trip": {
        "chroma_corr": round(float(np.mean([chroma_corr(a, b) for a, b in zip(waves, rt)])), 4),
        "profile_corr": round(float(np.mean([profile_corr(a, b) for a, b in zip(waves, rt)])), 4),
        "log_mel_l1": round(float(np.mean([log_mel_l1(a, b) for a, b in zip(waves, rt)])), 4),
        **{k: heard[k] for k in ("instrument", "tempo", "key_mode")}}}
    gen = _batched(lambda r: dec.render_text(caps[r], duration, guidance_scale=guidance_scale, seed=seed),
                   n, batch)                                                       # (N, T)
    out["caption_to_music"] = accuracy(ref.read(gen), pieces)
    cut = int(prompt_s * SR)
    rest = duration - prompt_s

    def continue_(rows):
        cond, mask = dec.condition_text(caps[rows], return_mask=True)
        return dec.render(cond, rest, guidance_scale=guidance_scale, seed=seed, cond_mask=mask,
                          audio_prompt=waves[rows, :cut])

    cont = _batched(continue_, n, batch)                                           # (N, rest * SR)
    scratch = _batched(lambda r: dec.render_text(caps[r], rest, guidance_scale=guidance_scale, seed=seed + 1),
                       n, batch)
    src = waves[:, cut:]
    cont_heard = ref.read(cont)
    out["continuation"] = {
        "profile_corr_continued": round(float(np.mean([profile_corr(a, b) for a, b in zip(cont, src)])), 4),
        "profile_corr_from_caption": round(float(np.mean([profile_corr(a, b) for a, b in zip(scratch, src)])), 4),
        "key_mode_kept": accuracy(cont_heard, pieces)["accuracy"]["key_mode"],
        "instrument_kept": accuracy(cont_heard, pieces)["accuracy"]["instrument"]}
    return out
