"""`accelerate launch --num_processes 2 inference.py --input ...`: two processes (gloo on CPU),
one part file each, merged by rank 0 into one results.jsonl equal to a single process's; a
process killed with SIGKILL leaves parts that the next run merges and completes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from llama.distributed_parts import merge_parts
from llama.safe_paths import Journal

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
       "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def accelerate(port: int, *argv) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), str(ROOT / "inference.py"), *map(str, argv)]


def single(*argv) -> list[str]:
    return [sys.executable, str(ROOT / "inference.py"), *map(str, argv)]


def requests(path: Path, n: int, new_tokens: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "Describe it." + " again" * (i % 3),
                                        "max_new_tokens": new_tokens, "music": i % 4 == 0, "duration": 0.2,
                                        "seed": i}) + "\n" for i in range(n)))
    return path


def records(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "timings"}
            for line in (out / "results.jsonl").read_text().splitlines()]


def test_two_processes_merge_into_the_single_process_results(tiny_bundle, tmp_path):
    reqs = requests(tmp_path / "r.jsonl", 8, 4)
    common = ("--ckpt-dir", tiny_bundle, "--input", reqs, "--batch-size", 2)
    subprocess.run(single(*common, "--output-dir", tmp_path / "one"), env=ENV, check=True, capture_output=True)
    run = subprocess.run(accelerate(29611, *common, "--output-dir", tmp_path / "two"), env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 processes" in run.stderr and "merged 8 records" in run.stderr
    assert records(tmp_path / "two") == records(tmp_path / "one")
    assert not list((tmp_path / "two").glob("results.part-*"))
    wavs = sorted(p.name for p in (tmp_path / "two").glob("*.wav"))
    assert wavs == sorted(p.name for p in (tmp_path / "one").glob("*.wav")) and wavs
    for name in wavs:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def _worker(launcher: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "inference.py" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def test_kill_9_of_one_process_then_a_rerun_completes(tiny_bundle, tmp_path):
    reqs = requests(tmp_path / "r.jsonl", 16, 40)
    out = tmp_path / "out"
    common = ("--ckpt-dir", tiny_bundle, "--input", reqs, "--output-dir", out)
    launcher = subprocess.Popen(accelerate(29612, *common), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    part = out / "results.part-1.jsonl"
    deadline = time.time() + 300
    while not (part.is_file() and part.read_text().count("\n") >= 2) and time.time() < deadline:
        assert launcher.poll() is None, launcher.stderr.read()[-3000:]
        time.sleep(0.05)
    victim = _worker(launcher, 1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim.pid, signal.SIGKILL)
    launcher.wait(timeout=120)                 # the launcher takes the other rank down with it
    assert launcher.returncode != 0
    answered = part.read_text().count("\n")
    assert 2 <= answered < 8                   # rank 1 had 8 requests and did not finish them
    rerun = subprocess.run(accelerate(29613, *common), env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "merged" in rerun.stderr and "already done" in rerun.stderr
    recs = records(out)
    assert sorted(r["id"] for r in recs) == sorted(f"r{i}" for i in range(16))   # each once
    assert all(r["error"] is None for r in recs)
    assert not list(out.glob("results.part-*"))
    reference = tmp_path / "ref"
    subprocess.run(single(*common[:-1], reference), env=ENV, check=True, capture_output=True)
    assert sorted(recs, key=lambda r: r["id"]) == sorted(records(reference), key=lambda r: r["id"])


def test_merge_is_in_input_order_repairs_torn_parts_and_is_idempotent(tmp_path):
    order = {f"r{i}": i for i in range(4)}
    with Journal(tmp_path / "results.part-1.jsonl") as j:
        j.append({"id": "r3", "answer": "c"})
        j.append({"id": "r1", "answer": "b"})
    with Journal(tmp_path / "results.part-0.jsonl") as j:
        j.append({"id": "r2", "answer": "x"})
    with open(tmp_path / "results.part-0.jsonl", "ab") as f:
        f.write(b'{"id": "r0", "ans')                              # a kill mid-write
    with Journal(tmp_path / "results.jsonl") as j:
        j.append({"id": "r1", "answer": "b"})                      # already merged once
    assert merge_parts(tmp_path, order) == (2, 1)
    ids = [json.loads(line)["id"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert ids == ["r1", "r2", "r3"]
    assert not list(tmp_path.glob("results.part-*"))
    assert merge_parts(tmp_path, order) == (0, 0)


def test_a_locked_folder_stops_every_process(tiny_bundle, tmp_path):
    from llama.safe_paths import folder_lock
    out = tmp_path / "o"
    out.mkdir()
    with folder_lock(out):
        run = subprocess.run(accelerate(29614, "--ckpt-dir", tiny_bundle, "--input",
                                        requests(tmp_path / "r.jsonl", 2, 2), "--output-dir", out),
                             env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "another run is writing to this folder" in run.stderr
    assert not (out / "results.jsonl").exists() and not list(out.glob("results.part-*"))
