"""DataSet/synth/music_eval.py: the trained chain's music read back. A stand-in for the model
whose bridge is perfect (its conditioning is the decoder's own T5 encoding of the target caption)
drives the measures on a tiny world: only melody-keeping edits are scored, hearing the source
changes the audio, and a seed fixes every number."""
import numpy as np
import pytest

from DataSet.synth import music_eval as M
from DataSet.synth.build import build_world
from DataSet.synth.evaluate import Evaluator
from llama.decoders.musicgen import MusicGenDecoder
from llama.decoders.tiny_decoders import build_tiny_musicgen


class PerfectBridge(Evaluator):
    """Evaluator's samples and truth; `run` answers with the decoder's own conditioning."""

    def __init__(self, split, decoder):
        import json
        self.split, self.limit, self.decoder = split, None, decoder
        self.truth = {r["sample_id"]: r for r in json.loads((split / "world.json").read_text())["records"]}
        self.calls = 0

    def run(self, sample, music):
        self.calls += 1
        return "", self.decoder.condition_text([sample.target_caption])[0]          # (N, C)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=0, size=15, progress=False)
    return out


@pytest.fixture(scope="module")
def decoder_folder(tmp_path_factory):
    return build_tiny_musicgen(tmp_path_factory.mktemp("dec") / "MusicGen", cond_dim=32, seed=0)


def _report(world, folder, n=4):
    ev = PerfectBridge(world / "heldout", MusicGenDecoder.from_pretrained(folder))
    return M.music_report(ev, folder, world / "train", n=n, seed=0), ev


def test_music_report_scores_what_it_should(world, decoder_folder):
    report, ev = _report(world, decoder_folder)
    edits = [ev.truth[s.id]["kind"] for s in ev.samples(3, "muedit")]
    keeps = [k for k in edits if k in M.KEEPS_MELODY][:4]
    assert report["edits"]["n"] == len(keeps) > 0 and sum(report["edits"]["kinds"].values()) == len(keeps)
    assert report["caption_to_music"]["n"] == min(4, len(ev.samples(2, "mucaps")))
    acc = report["caption_to_music"]["model"]["accuracy"]
    assert set(acc) == {"key", "mode", "tempo", "instrument", "key_mode"} and all(0 <= v <= 1 for v in acc.values())
    assert report["edits"]["prompt"] != report["edits"]["none"]     # hearing the source changes the music
    assert report["real_clips"]["instrument"] >= 0.5                # the measures read real clips


def test_same_seed_same_numbers(world, decoder_folder):
    a, _ = _report(world, decoder_folder, n=2)
    b, _ = _report(world, decoder_folder, n=2)
    assert a == b


def test_no_samples_no_numbers(world, decoder_folder):
    ev = PerfectBridge(world / "heldout", MusicGenDecoder.from_pretrained(decoder_folder))
    assert M.caption_to_music(ev, ev.decoder, None, n=0) == {"n": 0}
    assert M.edits(ev, ev.decoder, None, n=0) == {"n": 0}
    assert np.isnan(np.nan) and ev.calls == 0


def test_fad_to_real_is_zero_for_the_real_clips_and_writes_the_wavs(world, tmp_path):
    import soundfile as sf

    from llama.metrics.tiny_models import write_hubert

    hubert = write_hubert(tmp_path / "hubert", 0)
    real = sorted((world / "train" / "audio").glob("*.wav"))[:6]
    waves = np.stack([sf.read(p, dtype="float32")[0] for p in real])
    rate = sf.info(real[0]).samplerate
    same = M.fad_to_real(waves, rate, real, hubert, tmp_path / "same")
    assert same["n"] == 6 and abs(same["fad"]) < 1e-3 and len(list((tmp_path / "same").glob("*.wav"))) == 6
    noise = np.random.default_rng(0).normal(0, 0.3, waves.shape).astype(np.float32)
    assert M.fad_to_real(noise, rate, real, hubert, tmp_path / "noise")["fad"] > 1.0


def test_melody_decoder_edits_follow_the_source_chroma(world, decoder_folder, tmp_path):
    from llama.decoders.tiny_decoders import build_tiny_musicgen_melody

    melody = build_tiny_musicgen_melody(tmp_path / "MusicGenMelody", cond_dim=32, seed=0)
    ev = PerfectBridge(world / "heldout", MusicGenDecoder.from_pretrained(decoder_folder))
    report = M.music_report(ev, decoder_folder, world / "train", n=4, seed=0, melody_folder=melody)["edits"]
    assert {"prompt", "none", "melody"} <= set(report)
    assert report["melody"] != report["none"] and -1 <= report["melody"]["chroma_corr_to_source"] <= 1
    without = M.music_report(ev, decoder_folder, world / "train", n=4, seed=0)["edits"]
    assert "melody" not in without and without["prompt"] == report["prompt"]
