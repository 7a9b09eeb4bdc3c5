"""The MusicGen stand-in's pretraining (`standins_decoder`) as a second process of `make synth`.

It needs only the world's clips and the pretrained T5, and the three stages never read the
decoder's LM or codec (the bridge targets are T5 encodings), so on two cores it runs beside stage
training instead of adding its ~5 minutes after it. It works on its own copy of the MusicGen folder
(out/decoder/), so the training bundle is never rewritten under a running stage.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from llama.errors import UserError

from .standins_decoder import REPORT_FILE
from .standins_melody import FOLDER as MELODY_FOLDER


class DecoderJob:
    def __init__(self, out: Path, bundle: Path, world: Path, seed: int = 0, args: list[str] | None = None):
        from llama.tiny import LAYOUT

        self.dir, self.bundle, self.world, self.seed = Path(out), Path(bundle), Path(world), seed
        self.args = list(args or [])                     # extra CLI flags (tests: fewer steps)
        self.folder = self.dir / LAYOUT["musicgen"]      # the trained MusicGen, once done
        self.melody_folder = self.dir / MELODY_FOLDER    # and MusicGen-Melody, unless --melody-steps 0
        self.source = self.bundle / LAYOUT["musicgen"]
        self.log = self.dir / "log.txt"
        self.proc: subprocess.Popen | None = None

    @property
    def done(self) -> bool:
        return (self.dir / REPORT_FILE).is_file()

    def start(self) -> None:
        """Start from a fresh copy of the bundle's MusicGen, unless a finished run is there (rerun
        after an interruption: a half-done one restarts, its report is written last)."""
        if self.done:
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.source, self.folder)
        cmd = [sys.executable, "-m", "DataSet.synth.standins_decoder", str(self.dir.resolve()),
               "--world", str(self.world.resolve()),
               "--seed", str(self.seed), *self.args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        root = Path(__file__).resolve().parents[2]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)

    def wait(self) -> dict:
        """The decoder report, once the process is done; a failure names its log."""
        if self.proc is not None:
            rc = self.proc.wait()
            self.proc = None
            if rc != 0:
                tail = self.log.read_text().strip().splitlines()[-1:] if self.log.is_file() else []
                raise UserError(f"{self.log}: MusicGen stand-in pretraining failed (exit {rc})"
                                + (f": {tail[0]}" if tail else ""))
        if not self.done:
            raise UserError(f"{self.dir}: no {REPORT_FILE}; the decoder job was never started")
        return json.loads((self.dir / REPORT_FILE).read_text())

    def stop(self) -> None:
        """Kill a running job (the main run failed); its folder restarts on the next run."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
