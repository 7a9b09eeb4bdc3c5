import os

import torch

from llama.feature_memo import FeatureMemo


def test_features_are_computed_once_per_file_and_again_when_it_changes(tmp_path):
    f = tmp_path / "a.wav"
    f.write_bytes(b"x" * 10)
    calls = []
    memo = FeatureMemo()
    compute = lambda: (calls.append(1), torch.full((2, 3), float(len(calls))))[1]  # noqa: E731
    first = memo.get("audio", f, compute)
    assert torch.equal(memo.get("audio", f, compute), first) and len(calls) == 1
    assert memo.get("image", f, compute)[0, 0] == 2          # another encoder, another entry
    f.write_bytes(b"y" * 11)
    os.utime(f, ns=(1, 1))
    assert memo.get("audio", f, compute)[0, 0] == 3          # edited file: encoded again
    assert (memo.hits, memo.misses) == (1, 3)


def test_budget_bounds_what_is_kept(tmp_path):
    memo = FeatureMemo(max_bytes=100)
    calls = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        p.write_bytes(b"z")
        memo.get("image", p, lambda: (calls.append(1), torch.zeros(10))[1])   # 40 bytes each
        memo.get("image", p, lambda: (calls.append(1), torch.zeros(10))[1])
    assert memo.bytes == 80 and len(calls) == 4               # the third is recomputed, not kept


def test_a_missing_file_is_left_to_the_loader(tmp_path):
    memo = FeatureMemo()
    assert memo.get("audio", tmp_path / "nope.wav", lambda: torch.ones(1)).item() == 1
