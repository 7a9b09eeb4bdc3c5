"""Staged training on the tiny bundle and the fixture datasets (every published format)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from llama.checkpoint import load_trained
from llama.train_state import latest_checkpoint
from tests.data_fixtures import write_fixture_datasets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fixture_datasets(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def fresh_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle without its 'trained' weights: training starts from zero gates."""
    spec = json.loads((tiny_bundle / "bundle.json").read_text())
    spec = {k: (str(tiny_bundle / v) if k not in ("preset", "llama_type") else v)
            for k, v in spec.items() if not k.startswith("mumu")}
    d = tmp_path_factory.mktemp("fresh")
    (d / "bundle.json").write_text(json.dumps(spec))
    return d


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def run_train(*args) -> int:
    return train.main([str(a) for a in args])


def test_three_stages_chain_on_every_format(tiny_bundle, data, tmp_path, capsys):
    common = ["--data", data, "--ckpt-dir", tiny_bundle, "--batch-size", 4, "--max-steps", 2]
    assert run_train("--stage", 1, "--out", tmp_path / "s1", *common) == 0
    err = capsys.readouterr().err
    assert "mucaps: 4 read, 2 kept, 2 skipped (empty caption: 1, media file missing: 1)" in err
    assert run_train("--stage", 2, "--out", tmp_path / "s2", "--init-from", tmp_path / "s1" / "final",
                     "--bridge-scale", 2.5, *common) == 0
    # generation divides the projector output by the scale it was trained with
    assert json.loads((tmp_path / "s2" / "final" / "config.json").read_text())["bridge_scale"] == 2.5
    assert run_train("--stage", 3, "--out", tmp_path / "s3", "--init-from", tmp_path / "s2" / "final", *common) == 0
    err = capsys.readouterr().err
    assert "muedit: 4 read, 2 kept, 2 skipped" in err and "alpaca: 6 read, 4 kept" in err
    for stage in (1, 2, 3):
        run = tmp_path / f"s{stage}"
        assert len(metrics(run)) == 2 and (run / "loss.png").stat().st_size > 0
        assert any((run / "tb").iterdir())
    assert "bridge_loss" in metrics(tmp_path / "s2")[0]
    s1 = load_file(str(tmp_path / "s1" / "final" / "model.safetensors"))
    s3 = load_file(str(tmp_path / "s3" / "final" / "model.safetensors"))
    assert "adapters.image.proj.weight" in s1 and "output_projector.out.weight" not in s1
    assert "llm.tok_embeddings.aud_rows" in s1
    # stage 3 does not train the adapters but its final/ carries them from stage 1 unchanged
    torch.testing.assert_close(s3["adapters.image.proj.weight"], s1["adapters.image.proj.weight"])
    assert "output_projector.out.weight" in s3
    # the trained weights load for inference over the base model
    code = subprocess.run([sys.executable, str(ROOT / "inference.py"), "--ckpt-dir", str(tiny_bundle),
                           "--mumu", str(tmp_path / "s3" / "final"), "--prompt", "hi", "--max-new-tokens", "3"],
                          capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr


def _caption_set(root: Path, data: Path, stage: int) -> Path:
    """One sample per modality (stage 1) or three music captions (stage 2): a fixed batch."""
    fixture = data.parent
    sets = {"audio": ("MUCaps/MUCapsCaptions.json", "MUCaps/audios"),
            "image": ("COCO/captions.json", "COCO/images"),
            "video": ("MUVideo/captions.json", "MUVideo/videos")}
    root.mkdir()
    entries = []
    for modality, (ann, media) in sets.items():
        if stage == 2 and modality != "audio":
            continue
        caps = json.loads((fixture / ann).read_text())
        usable = {k: v for k, v in caps.items() if v.strip() and (fixture / media / k).exists()}
        n = 3 if stage == 2 else 1
        assert len(usable) >= min(n, 2)
        (root / f"{modality}.json").write_text(json.dumps(dict(list(usable.items())[:n])))
        entries.append({"name": modality, "format": "captions", "modality": modality,
                        "annotations": f"{modality}.json", "media_dir": str(fixture / media)})
    (root / "data.json").write_text(json.dumps({f"stage{stage}": entries}))
    return root / "data.json"


@pytest.mark.parametrize("stage,key,lr", [(1, "ce_loss", 3e-3), (2, "bridge_loss", 1e-2)])
def test_loss_on_a_fixed_batch_halves(fresh_bundle, data, tmp_path, stage, key, lr):
    cfg = _caption_set(tmp_path / "d", data, stage)
    run = tmp_path / "run"
    assert run_train("--stage", stage, "--data", cfg, "--ckpt-dir", fresh_bundle, "--out", run,
                     "--batch-size", 3, "--max-steps", 40, "--lr", lr, "--min-lr", lr) == 0
    losses = [m[key] for m in metrics(run)]
    assert losses[-1] <= 0.5 * losses[0], losses


def test_stage1_opens_the_gates_and_moves_the_adapters(fresh_bundle, data, tmp_path):
    cfg = _caption_set(tmp_path / "d", data, 1)
    run = tmp_path / "run"
    assert run_train("--stage", 1, "--data", cfg, "--ckpt-dir", fresh_bundle, "--out", run,
                     "--batch-size", 3, "--max-steps", 3, "--lr", 1e-3, "--min-lr", 1e-3) == 0
    w = load_file(str(run / "final" / "model.safetensors"))
    from llama.config import preset
    c = preset("tiny").llama
    adapter_layers = range(c.n_layers - c.n_adapter_layers, c.n_layers)
    gates = torch.cat([w[f"llm.layers.{i}.attention.gate"].flatten() for i in adapter_layers])
    assert gates.abs().min() > 0          # zero at the start; the published trainer never moved them
    from llama.mumu_llama import MuMuLLaMA
    torch.manual_seed(0)
    init = MuMuLLaMA(preset("tiny"))      # not the same init, but adapters must differ from a fresh draw
    for m in ("audio", "image", "video"):
        assert not torch.equal(w[f"adapters.{m}.blocks.0.w1.weight"], init.adapters[m].blocks[0].w1.weight)


def test_nonfinite_loss_stops_with_step_and_ids_or_is_skipped(tiny_bundle, data, tmp_path, monkeypatch, capsys):
    from llama import trainer as T
    real = T.Trainer.batch_loss
    calls = {"n": 0}

    def poisoned(self, idx):
        out, ids = real(self, idx)
        calls["n"] += 1
        if calls["n"] == 2:
            out.loss = out.loss * float("nan")
        return out, ids

    monkeypatch.setattr(T.Trainer, "batch_loss", poisoned)
    args = ["--stage", 1, "--data", data, "--ckpt-dir", tiny_bundle, "--batch-size", 2, "--max-steps", 3]
    assert run_train(*args, "--out", tmp_path / "a") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss at step 2 (samples [") and ":" in last
    calls["n"] = 0
    assert run_train(*args, "--out", tmp_path / "b", "--skip-nonfinite") == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["skipped_nonfinite_batches"] == 1


def _train_cmd(bundle, data, out, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--stage", "1", "--data", str(data), "--ckpt-dir", str(bundle),
            "--out", str(out), "--batch-size", "2", "--max-steps", "10", "--save-every", "2", "--lr", "1e-3",
            *extra]


def test_kill_dash_nine_then_resume_gives_the_same_losses(tiny_bundle, data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(tiny_bundle, data, ref), check=True, capture_output=True, env=env, timeout=600)
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(tiny_bundle, data, run), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:                 # kill once past the 5th step, mid-run
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # every checkpoint on disk is whole and loadable
    ckpts = [p for p in (run / "checkpoints").iterdir() if p.is_dir() and p.name.startswith("step_")]
    assert ckpts
    from llama.config import preset
    from llama.mumu_llama import MuMuLLaMA
    for c in ckpts:
        if c.name.endswith(".partial"):
            continue
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"} <= {f.name for f in c.iterdir()}
        load_trained(MuMuLLaMA(preset("tiny")), c)
    assert latest_checkpoint(run).name.startswith("step_")
    subprocess.run(_train_cmd(tiny_bundle, data, run, "--resume"), check=True, capture_output=True, env=env,
                   timeout=600)
    assert [m["loss"] for m in metrics(run)] == [m["loss"] for m in metrics(ref)]
    a = load_file(str(run / "final" / "model.safetensors"))
    b = load_file(str(ref / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_cpu_processes_with_accelerate_launch(tiny_bundle, data, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("accelerate CLI not installed")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
                           *_train_cmd(tiny_bundle, data, out)[1:], "--cpu"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["weights_equal_across_processes"] is True
    assert summary["steps"] == 10
