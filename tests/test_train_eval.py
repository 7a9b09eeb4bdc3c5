"""Held-out evaluation during training, and length-grouped batches."""
import json

import pytest

import train
from llama.train_batches import epoch_batches, padding_fraction
from tests.data_fixtures import write_fixture_datasets


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fixture_datasets(tmp_path_factory.mktemp("data"))


def test_held_out_loss_is_logged_beside_the_training_loss(tiny_bundle, data, tmp_path):
    run = tmp_path / "run"
    assert train.main([str(a) for a in ["--stage", 1, "--data", data, "--ckpt-dir", tiny_bundle, "--out", run,
                                         "--max-steps", 3, "--batch-size", 2, "--grad-accum", 2,
                                         "--group-by-length", "--eval-data", data, "--eval-every", 2]]) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [x["step"] for x in lines if "loss" in x]
    held = [x for x in lines if "eval_loss" in x]
    assert train_steps == [1, 2, 3]
    assert [x["step"] for x in held] == [2, 3]            # every 2 steps, and at the end
    assert all(x["eval_loss"] > 0 and x["eval_samples_unreadable"] == 0 for x in held)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_eval_loss"] == held[-1]["eval_loss"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(run / "tb"))
    ev.Reload()
    assert "eval/loss" in ev.Tags()["scalars"] and "train/loss" in ev.Tags()["scalars"]


def test_eval_every_needs_eval_data(data, tmp_path, capsys):
    assert train.main(["--stage", "1", "--data", str(data), "--out", str(tmp_path / "r"), "--eval-every", "5"]) == 2
    assert "--eval-every needs --eval-data" in capsys.readouterr().err


def test_length_grouped_batches_cover_every_sample_with_less_padding():
    import random
    rng = random.Random(0)
    lengths = [rng.randint(10, 500) for _ in range(403)]
    plain = epoch_batches(len(lengths), 8, 0, 0, 1, 0)
    grouped = epoch_batches(len(lengths), 8, 0, 0, 1, 0, lengths)
    assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))
    assert grouped == epoch_batches(len(lengths), 8, 0, 0, 1, 0, lengths)      # seeded
    assert grouped != epoch_batches(len(lengths), 8, 1, 0, 1, 0, lengths)      # reshuffled per epoch
    assert padding_fraction(grouped, lengths) < 0.1 < 0.4 < padding_fraction(plain, lengths)
    # two processes: equal numbers of batches, together every sample
    r0, r1 = (epoch_batches(len(lengths), 8, 0, 0, 2, r, lengths) for r in (0, 1))
    assert len(r0) == len(r1) and set(i for b in r0 + r1 for i in b) == set(range(len(lengths)))
