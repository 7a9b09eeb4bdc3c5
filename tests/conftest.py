import os
from pathlib import Path

import pytest
import torch

# Tiny models gain nothing from threads, and a shared 2-core machine makes them far slower.
torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (only developers and CI have it)")
    return SHARED


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """The offline tiny bundle, built once per test session."""
    from llama.tiny import build_tiny_bundle
    return build_tiny_bundle(tmp_path_factory.mktemp("ckpts") / "tiny")
