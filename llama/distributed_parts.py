"""One batch file answered by several processes (`accelerate launch` / torchrun), one part each.

Why parts: processes must not interleave appends to one results.jsonl (a torn line of one would
cut another's record), and each needs its own resume point. So rank r writes
`results.part-<r>.jsonl` through the same `Journal` (one write + fsync per record, torn last
line repaired on read); rank 0 holds the folder lock for the whole run and, at the end, appends
the parts' records to results.jsonl in input order and deletes the parts. A part left by a
killed run is merged the same way at the start of the next run, before anyone computes what
is left to do; merging skips records results.jsonl already holds, so a merge cut short by a
kill is simply redone.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .safe_paths import Journal, OutputError, folder_lock

RESULTS = "results.jsonl"
PART_GLOB = "results.part-*.jsonl"


@dataclass
class Ranks:
    """This process's place in the launch: from the environment accelerate/torchrun set."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> str:
        """`--device cuda` means this process's own GPU (cuda:<local rank>) under a launcher."""
        return f"cuda:{self.local_rank}" if self.world > 1 and name == "cuda" else name

    def start(self, backend: str | None = None) -> None:
        """Join the process group when launched as several (gloo: it only carries barriers)."""
        import torch.distributed as dist
        if self.world > 1 and not dist.is_initialized():
            backend = backend or "gloo"   # only a barrier and a flag: CPU tensors, any device
            # a long batch: ranks wait at the final barrier for the slowest one
            dist.init_process_group(backend, rank=self.rank, world_size=self.world,
                                    timeout=datetime.timedelta(days=7))

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def all_ok(self, ok: bool) -> bool:
        """True when every rank says ok (one all-reduce)."""
        if self.world == 1:
            return ok
        import torch
        import torch.distributed as dist
        flag = torch.tensor([1 if ok else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def stop(self) -> None:
        import torch.distributed as dist
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def part(self, out_dir: Path) -> Path:
        """Where this rank appends its records: results.jsonl alone, a part under a launcher."""
        return out_dir / (RESULTS if self.world == 1 else f"results.part-{self.rank}.jsonl")

    def share(self, todo: list) -> list:
        """This rank's requests: every world-th one, so each rank gets a mix of the file."""
        return todo[self.rank::self.world]


@contextlib.contextmanager
def run_lock(ranks: Ranks, folder: Path):
    """The folder lock, held by rank 0 for everyone: if it is taken, every rank stops."""
    with contextlib.ExitStack() as stack:
        error = None
        if ranks.main:
            try:
                stack.enter_context(folder_lock(folder))
            except OutputError as e:
                error = e
        if not ranks.all_ok(error is None):
            raise error or OutputError(f"{folder}: another run is writing to this folder (rank 0 could not "
                                       "lock it); wait for it or use another --output-dir")
        yield


def _canonical(record: dict) -> str:
    return json.dumps(record, sort_keys=True, allow_nan=False)


def merge_parts(out_dir: Path, order: dict[str, int]) -> tuple[int, int]:
    """Append every part's records to results.jsonl in input order (`order`: id -> line), skip
    those already there, delete the parts. (records merged, torn/unreadable lines dropped)."""
    parts = sorted(out_dir.glob(PART_GLOB))
    if not parts:
        return 0, 0
    main = Journal(out_dir / RESULTS)
    present = {_canonical(r) for r in main.read()[0]}
    records, dropped = [], 0
    for part in parts:
        recs, torn, bad = Journal(part).read()
        records += recs
        dropped += torn + bad
    records.sort(key=lambda r: order.get(str(r.get("id")), len(order)))    # stable: a part's own order
    merged = 0
    with main:
        for rec in records:
            key = _canonical(rec)
            if key not in present:
                main.append(rec)
                present.add(key)
                merged += 1
    for part in parts:
        try:
            part.unlink()
        except OSError as e:
            raise OutputError(f"{part}: merged, but cannot be removed ({e.strerror or e})") from None
    return merged, dropped
