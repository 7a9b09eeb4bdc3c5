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


@pytest.fixture(scope="session")
def tiny_bundle_with_melody(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle with a tiny MusicGen-Melody beside MusicGen (bundle.json "musicgen_melody")."""
    import json
    import shutil

    from llama.decoders.tiny_decoders import build_tiny_musicgen_melody

    bundle = tmp_path_factory.mktemp("ckpts_melody") / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    spec = json.loads((bundle / "bundle.json").read_text())
    cond_dim = json.loads((bundle / spec["musicgen"] / "config.json").read_text())["text_encoder"]["d_model"]
    n_tokens = json.loads((bundle / spec["musicgen"] / "mumu_decoder.json").read_text())["n_cond_tokens"]
    build_tiny_musicgen_melody(bundle / "MusicGenMelody", cond_dim=cond_dim, n_cond_tokens=n_tokens)
    (bundle / "bundle.json").write_text(json.dumps(spec | {"musicgen_melody": "MusicGenMelody"}))
    return bundle


@pytest.fixture(scope="module")
def model():
    """A random tiny MuMuLLaMA (preset "tiny") whose prefix gates are open, so media matter."""
    from llama.config import preset
    from llama.mumu_llama import MuMuLLaMA
    torch.manual_seed(0)
    m = MuMuLLaMA(preset("tiny")).eval()
    with torch.no_grad():
        for layer in m.llm.layers:
            layer.attention.gate.uniform_(-1, 1)
    return m
