"""--compile: the compiled decode step gives the eager path's greedy tokens, and compiles once per
batch size however long the sequence grows and whatever the prompt length."""
import shutil
from pathlib import Path

import pytest
import torch

from llama.compiled_decode import CompiledDecode
from llama.pipeline import BundlePaths, MuMuPipeline
from llama.tokenizer import format_prompt

PROMPTS = ["Describe the music.", "What instruments can you hear?", "Write a short poem about the sea, please."]


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return MuMuPipeline.load(BundlePaths.from_bundle(tiny_bundle))


def prompts(pipe):
    return [pipe.tokenizer.encode(format_prompt(p), bos=True) for p in PROMPTS]


def feats(pipe, tiny_bundle: Path):
    from llama.examples import write_examples
    media = tiny_bundle.parent / "media"
    if not (media / "image.png").is_file():
        write_examples(media)
    return pipe.features(image=media / "image.png")


def run(pipe, ids, step, **kw):
    return pipe.model.generate(ids, kw.pop("f", {}), max_new_tokens=24, eos_id=-1, force_music=True,
                               decode_step=step, **kw)


def test_static_step_uncompiled_matches_eager(pipe, tiny_bundle):
    """The static cache, masked full-cache attention and real-valued rope, without a compiler."""
    step = CompiledDecode.for_model(pipe.model, compile=False)
    ids = prompts(pipe)
    for one in ids:
        assert run(pipe, [one], step).tokens == run(pipe, [one], None).tokens
    assert run(pipe, ids, step).tokens == run(pipe, ids, None).tokens          # left padding
    f = feats(pipe, tiny_bundle)
    eager, static = run(pipe, [ids[0]], None, f=f), run(pipe, [ids[0]], step, f=f)
    assert static.tokens == eager.tokens
    assert torch.allclose(static.music_cond[0], eager.music_cond[0], atol=1e-5)
    assert step.compiles == 0


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                    reason="torch.compile's CPU backend needs a C compiler")
def test_compiled_step_matches_eager_and_compiles_once(pipe):
    step = CompiledDecode.for_model(pipe.model)
    ids = prompts(pipe)
    for one in ids:                       # three prompt lengths, 24+8 growing steps each
        assert run(pipe, [one], step).tokens == run(pipe, [one], None).tokens
    assert step.compiles == 1
    assert run(pipe, ids, step).tokens == run(pipe, ids, None).tokens          # batch of 3: its own shape
    assert step.compiles == 2
    # continuous batching: 2 rows for 3 prompts, rows at their own positions, a row refilled
    assert run(pipe, ids, step, slots=2).tokens == run(pipe, ids, None).tokens
    assert step.compiles <= 3         # dynamo may already treat the batch size as dynamic


def test_compile_flag_gives_the_same_answer(tiny_bundle, capsys):
    import inference
    args = ["--ckpt-dir", str(tiny_bundle), "--prompt", "Describe it.", "--max-new-tokens", "6"]
    assert inference.main(args) == 0
    eager = capsys.readouterr().out
    assert inference.main(args + ["--compile"]) == 0
    assert capsys.readouterr().out == eager
