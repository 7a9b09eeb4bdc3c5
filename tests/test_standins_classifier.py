"""DataSet/synth/standins_classifier.py: the world's instrument classifier for the KL metric is a
folder the metric loader accepts, labelled with the world's instruments, and fixed by its seed."""
import pytest

from DataSet.synth import world as W
from DataSet.synth.build import build_world
from DataSet.synth.standins_classifier import main, train_world_classifier
from llama.metrics.models import load


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=0, size=12, progress=False)
    return out


def test_trains_loads_and_is_seeded(world, tmp_path):
    a = train_world_classifier(tmp_path / "a", world, seed=0, steps=6, log=lambda s: None)
    b = train_world_classifier(tmp_path / "b", world, seed=0, steps=6, log=lambda s: None)
    assert a["train_clips"] > 0 and a["steps"] == 6
    assert 0.0 <= a["heldout_accuracy"] <= 1.0 and a["chance"] == 0.25
    assert a["loss_first"] > 0 and a["loss_last"] > 0
    m = load(tmp_path / "a", "ast")                              # the project's checked loader
    assert m.model.config.num_labels == 4
    assert [m.model.config.id2label[i] for i in range(4)] == list(W.INSTRUMENTS)
    assert m.model.config.label2id == {n: i for i, n in enumerate(W.INSTRUMENTS)}
    assert m.sampling_rate == 16000
    wa = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert wa == (tmp_path / "b" / "model.safetensors").read_bytes()
    c = train_world_classifier(tmp_path / "c", world, seed=1, steps=6, log=lambda s: None)
    assert c["loss_first"] != a["loss_first"] or (tmp_path / "c" / "model.safetensors").read_bytes() != wa


def test_cli_prints_report(world, tmp_path, capsys):
    import json
    assert main([str(tmp_path / "cls"), "--world", str(world), "--steps", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 2 and (tmp_path / "cls" / "config.json").is_file()
