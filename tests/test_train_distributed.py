"""The shipped FSDP config on 2 CPU processes: accelerate runs it as DDP (gloo), and says so."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data_fixtures import write_fixture_datasets

ROOT = Path(__file__).resolve().parents[1]


def test_fsdp_config_on_cpu_trains_as_ddp_with_equal_weights(tiny_bundle, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("accelerate CLI not installed")
    data = write_fixture_datasets(tmp_path / "data")
    out = tmp_path / "run"
    proc = subprocess.run([accelerate, "launch", "--config_file", str(ROOT / "configs/accelerate/fsdp.yaml"),
                           "--mixed_precision", "no", "--main_process_port", "29531",
                           str(ROOT / "train.py"), "--stage", "1", "--data", str(data), "--ckpt-dir", str(tiny_bundle),
                           "--out", str(out), "--max-steps", "3", "--batch-size", "2", "--cpu"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FSDP config given but accelerate runs MULTI_CPU" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["distributed"] == "MULTI_CPU"
    assert summary["steps"] == 3 and summary["weights_equal_across_processes"] is True
