"""The learning proof in miniature: world -> stand-ins -> stages 1-3 -> held-out report -> a
trained bundle that inference answers with. (`make synth` is the full-size run.)"""
import json

import pytest
import torch

from DataSet.synth.evaluate import bridge, named_right
from DataSet.synth.proof import StageSettings, run_proof

TRUTH = {"instrument": "flute", "tempo": "slow", "key": "D", "mode": "minor", "drums": True, "mood": "sad"}


@pytest.mark.parametrize("text, attribute, right", [
    ("The instrument is the flute.", "instrument", True),
    ("Flute or piano?", "instrument", False),                 # names two: no answer
    ("It is in D minor.", "key", True),
    ("It is in D major.", "key", False),                      # key right, mode wrong
    ("Yes, there are drums.", "drums", True),
    ("No, there are no drums.", "drums", False),
    ("The tempo is fast.", "tempo", False),
])
def test_named_right(text, attribute, right):
    assert named_right(text, TRUTH, attribute) is right


def test_bridge_scores_own_target_against_the_others():
    target = torch.eye(4).reshape(4, 2, 2) * 3
    perfect = bridge(target * 0.5, target)
    assert perfect["cosine"] == pytest.approx(1.0) and perfect["retrieval_top1"] == 1.0
    assert perfect["cosine_to_other_targets"] == pytest.approx(0.0)
    shuffled = bridge(target[[1, 2, 3, 0]], target)
    assert shuffled["cosine"] == pytest.approx(0.0) and shuffled["retrieval_top1"] == 0.0
    assert perfect["retrieval_chance"] == pytest.approx(0.25)


def test_miniature_proof_end_to_end(tmp_path):
    one = StageSettings(epochs=1, lr=3e-3, batch_size=4, warmup_steps=1)
    tiny_steps = {"mert": 4, "vit": 2, "vivit": 2, "llama": 2, "t5": 2}
    report = run_proof(tmp_path, size=3, seed=0, limit=2, stages={1: one, 2: one, 3: one},
                       standin_kwargs=dict(steps=tiny_steps, log=None, copies=1, probe=False, seconds=1.0,
                                           n_train=8, n_test=4),
                       decoder_args=["--codec-steps", "2", "--lm-steps", "2", "--melody-steps", "2", "--no-eval"],
                       music_n=0)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["answers_from_audio"] and saved["music_from_caption"]["bridge"]["n"] == 1
    text = saved["answer_text_metrics"]
    assert text["n"] == sum(v["n"] for v in saved["answers_from_audio"].values())
    assert all(0.0 <= text[k] <= 1.0 for k in ("bleu_1", "bleu_4", "rouge_l"))
    assert set(saved["targets"]) and (tmp_path / "report.png").stat().st_size > 10_000
    assert report["timings"]["total_s"] > 0
    trained = tmp_path / "trained_bundle"
    from safetensors.torch import load_file
    final = load_file(str(tmp_path / "runs" / "stage3" / "final" / "model.safetensors"))
    shipped = load_file(str(trained / "mumu" / "model.safetensors"))
    assert final.keys() == shipped.keys() and all(torch.equal(final[k], shipped[k]) for k in final)
    assert json.loads((tmp_path / "bundle" / "bundle.json").read_text())["mumu"] == "mumu"   # untouched
    # the MusicGen trained in the second process is the shipped one; the training bundle's is not
    from llama.tiny import LAYOUT
    weights = [d / LAYOUT["musicgen"] / "model.safetensors" for d in (tmp_path / "decoder", trained, tmp_path / "bundle")]
    assert weights[0].read_bytes() == weights[1].read_bytes() != weights[2].read_bytes()
    # so is the MusicGen-Melody for edits, which loads as one
    from DataSet.synth.standins_melody import FOLDER
    from llama.decoders.musicgen import MusicGenDecoder
    assert (tmp_path / "decoder" / FOLDER / "model.safetensors").read_bytes() == \
        (trained / FOLDER / "model.safetensors").read_bytes()
    assert MusicGenDecoder.from_pretrained(trained / FOLDER).melody
    assert json.loads((trained / "bundle.json").read_text())["musicgen_melody"] == FOLDER
    assert saved["decoder"]["seconds"]["total"] > 0
    import inference
    assert inference.main(["--ckpt-dir", str(trained), "--prompt", "What instrument is playing?",
                           "--audio", str(next((tmp_path / "world" / "heldout" / "audio").glob("*.wav"))),
                           "--max-new-tokens", "4"]) == 0
    # a rerun finds every step done and trains nothing again
    again = run_proof(tmp_path, size=3, seed=0, limit=2, stages={1: one, 2: one, 3: one}, music_n=0)
    assert again["timings"]["stage1_s"] < 5
