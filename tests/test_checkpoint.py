import json
import re
from pathlib import Path

import pytest
import torch

from llama.checkpoint import (CheckpointError, load_llama_base, load_meta_llama, load_published_checkpoint,
                              load_trained, published_to_ours, save_trained, shard_dim)
from llama.config import LLaMAConfig, preset
from llama.llama import Transformer
from llama.mumu_llama import MuMuLLaMA

# The published checkpoints' keys and shapes at the 7B shape (copied from the reference manifests).
KEYS = Path(__file__).parent / "fixtures" / "keys"


@pytest.mark.parametrize("decoder", ["musicgen", "audioldm2"])
@pytest.mark.parametrize("variant", ["mumu", "m2ugen"])
def test_every_published_key_maps_to_a_parameter_of_that_shape(decoder, variant):
    manifest = KEYS / f"keys_{decoder}_{variant}.tsv"
    with torch.device("meta"):
        model = MuMuLLaMA(preset("7b", variant=variant, music_decoder=decoder))
    params = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rows = [line.split("\t") for line in manifest.read_text().splitlines() if not line.startswith("#")]
    assert len(rows) > 1000
    targets = set()
    for key, shape in rows:
        ours = published_to_ours(key)
        assert ours is not None, key
        assert ours in params, f"{key} -> {ours}"
        assert params[ours] == tuple(int(s) for s in shape.split("x")), key
        targets.add(ours)
    assert len(targets) == len(rows)          # one-to-one
    # everything the published model trains or carries is covered: no parameter left unmapped
    assert set(k for k, _ in model.named_parameters()) == targets


def _meta_state(cfg: LLaMAConfig, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {"tok_embeddings.weight": torch.randn(cfg.vocab_size, cfg.dim, generator=g),
          "output.weight": torch.randn(cfg.vocab_size, cfg.dim, generator=g),
          "norm.weight": torch.ones(cfg.dim), "rope.freqs": torch.ones(cfg.head_dim // 2)}
    for i in range(cfg.n_layers):
        for w in "qkvo":
            sd[f"layers.{i}.attention.w{w}.weight"] = torch.randn(cfg.dim, cfg.dim, generator=g)
        sd[f"layers.{i}.feed_forward.w1.weight"] = torch.randn(cfg.ffn_dim, cfg.dim, generator=g)
        sd[f"layers.{i}.feed_forward.w3.weight"] = torch.randn(cfg.ffn_dim, cfg.dim, generator=g)
        sd[f"layers.{i}.feed_forward.w2.weight"] = torch.randn(cfg.dim, cfg.ffn_dim, generator=g)
        sd[f"layers.{i}.attention_norm.weight"] = torch.rand(cfg.dim, generator=g)
        sd[f"layers.{i}.ffn_norm.weight"] = torch.rand(cfg.dim, generator=g)
    return sd


def test_sharded_meta_checkpoint_merges_to_the_single_file(tmp_path):
    cfg = LLaMAConfig(dim=32, n_layers=2, n_heads=4, vocab_size=40, multiple_of=16)
    full = _meta_state(cfg)
    params = {"dim": 32, "n_layers": 2, "n_heads": 4, "multiple_of": 16, "norm_eps": 1e-5, "vocab_size": -1}
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        d.mkdir()
        (d / "params.json").write_text(json.dumps(params))
    torch.save(full, one / "consolidated.00.pth")
    shards = [{}, {}]
    for k, v in full.items():
        dim = shard_dim(k)
        halves = (v, v) if dim is None else v.chunk(2, dim=dim)
        shards[0][k], shards[1][k] = halves[0].clone(), halves[1].clone()
    torch.save(shards[0], two / "consolidated.00.pth")
    torch.save(shards[1], two / "consolidated.01.pth")
    _, a = load_meta_llama(one)
    cfg2, b = load_meta_llama(two)
    assert cfg2.dim == 32 and set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_llama_base_load_initialises_aud_rows_to_the_mean(tmp_path):
    cfg = LLaMAConfig(dim=32, n_layers=2, n_heads=4, vocab_size=40, multiple_of=16, adapter_layers_per_modality=0)
    llm = Transformer(cfg)
    sd = _meta_state(cfg)
    load_llama_base(llm, sd)
    emb = llm.tok_embeddings.weight
    torch.testing.assert_close(emb[:40], sd["tok_embeddings.weight"])
    torch.testing.assert_close(emb[40:], sd["tok_embeddings.weight"].mean(0).expand(8, -1))
    torch.testing.assert_close(llm.layers[1].attention.wo.weight, sd["layers.1.attention.wo.weight"])


def test_llama_base_load_rejects_wrong_vocab():
    cfg = LLaMAConfig(dim=32, n_layers=2, n_heads=4, vocab_size=40, multiple_of=16, adapter_layers_per_modality=0)
    sd = _meta_state(LLaMAConfig(dim=32, n_layers=2, n_heads=4, vocab_size=41, multiple_of=16))
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_llama_base(Transformer(cfg), sd)


def test_meta_device_load_in_bf16_equals_the_in_place_load(tmp_path):
    """The pipeline's path (model on the meta device, two model-parallel shards filled piece by
    piece, pages given back) gives the in-place fp32 load's numbers, cast; extras start neutral."""
    cfg = LLaMAConfig(dim=32, n_layers=2, n_heads=4, vocab_size=40, multiple_of=16, adapter_layers_per_modality=0)
    full = _meta_state(cfg)
    (tmp_path / "params.json").write_text(json.dumps({"dim": 32, "n_layers": 2, "n_heads": 4, "multiple_of": 16}))
    shards = [{}, {}]
    for k, v in full.items():
        halves = (v, v) if shard_dim(k) is None else v.chunk(2, dim=shard_dim(k))
        shards[0][k], shards[1][k] = halves[0].clone(), halves[1].clone()
    for i, shard in enumerate(shards):
        torch.save(shard, tmp_path / f"consolidated.0{i}.pth")
    real = Transformer(cfg)
    load_llama_base(real, full)
    _, weights = load_meta_llama(tmp_path)
    with torch.device("meta"):
        lazy = Transformer(cfg)
    load_llama_base(lazy, weights, torch.bfloat16)
    got = dict(lazy.named_parameters())
    assert not any(t.is_meta for t in [*got.values(), *lazy.buffers()])
    for k, v in real.named_parameters():
        if "lora_a" in k:
            assert got[k].shape == v.shape and got[k].dtype == torch.float32
        elif re.search(r"lora_b|\.bias$|\.gate$", k):
            assert not got[k].any() and got[k].dtype == torch.float32, k
        else:
            assert got[k].dtype == torch.bfloat16, k
            torch.testing.assert_close(got[k], v.detach().to(torch.bfloat16), rtol=0, atol=0, msg=k)
    torch.testing.assert_close(lazy.rope_cos, real.rope_cos, rtol=0, atol=0)


def test_corrupt_weights_file_is_a_one_line_error(tmp_path):
    (tmp_path / "params.json").write_text('{"dim": 32, "n_layers": 2, "n_heads": 4}')
    (tmp_path / "consolidated.00.pth").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError) as e:
        load_meta_llama(tmp_path)
    assert "consolidated.00.pth" in str(e.value) and "\n" not in str(e.value)


def _published_state(model: MuMuLLaMA, ours_to_published: dict) -> dict:
    return {ours_to_published[k]: v.clone() for k, v in model.state_dict().items() if k in ours_to_published}


def test_published_checkpoint_round_trip_and_mismatch(tmp_path):
    """A file in the published names loads into the same numbers; a wrong flavour is refused."""
    manifest = KEYS / "keys_musicgen_mumu.tsv"
    keys = [l.split("\t")[0] for l in manifest.read_text().splitlines() if not l.startswith("#")]
    back = {published_to_ours(k): k for k in keys}
    torch.manual_seed(0)
    src = MuMuLLaMA(preset("tiny"))
    for p in src.parameters():
        torch.nn.init.normal_(p)
    published = _published_state(src, back)     # the tiny model has 4 layers, not 32
    published["mert_model.encoder.weight"] = torch.zeros(1)   # frozen sub-models are skipped
    torch.save({"model": published}, tmp_path / "checkpoint.pth")
    dst = MuMuLLaMA(preset("tiny"))
    report = load_published_checkpoint(dst, tmp_path / "checkpoint.pth")
    assert report.loaded == len(published) - 1 and report.skipped_frozen == 1
    assert not report.unknown and not report.mismatched and not report.missing
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="does not match"):
        load_published_checkpoint(MuMuLLaMA(preset("tiny", music_decoder="audioldm2")), tmp_path / "checkpoint.pth")


def test_trained_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    a = MuMuLLaMA(preset("tiny"))
    names = ["prefix_query.weight", "llm.layers.3.attention.gate"]
    with torch.no_grad():
        a.llm.layers[3].attention.gate.fill_(0.5)
    save_trained(a, tmp_path / "ck", names)
    b = MuMuLLaMA(preset("tiny"))
    assert sorted(load_trained(b, tmp_path / "ck")) == sorted(names)
    torch.testing.assert_close(b.prefix_query.weight, a.prefix_query.weight)
    torch.testing.assert_close(b.llm.layers[3].attention.gate, a.llm.layers[3].attention.gate)
    save_trained(a, tmp_path / "proj", ["output_projector.out.weight"])
    with pytest.raises(CheckpointError, match="do not fit"):
        load_trained(MuMuLLaMA(preset("tiny", music_decoder="audioldm2")), tmp_path / "proj")


def test_aud_rows_train_alone_and_round_trip(tmp_path):
    from llama.trainable import fold_aud_rows, set_trainable
    torch.manual_seed(0)
    m = MuMuLLaMA(preset("tiny"))
    names = set_trainable(m, stage=1)
    assert "llm.tok_embeddings.aud_rows" in names
    before = m.llm.tok_embeddings.weight.detach().clone()
    tokens = torch.tensor([[1, 5, 6] + m.aud_ids])
    m(tokens, tokens.clone()).loss.backward()
    # the base matrices are frozen: no gradient at all; the [AUD] rows are their own parameters
    assert m.llm.tok_embeddings.weight.grad is None and m.llm.output.weight.grad is None
    assert m.llm.tok_embeddings.aud_rows.grad.abs().sum() > 0 and m.llm.output.aud_rows.grad.abs().sum() > 0
    with torch.no_grad():
        m.llm.tok_embeddings.aud_rows += 1.0
    save_trained(m, tmp_path / "ck", names)
    from safetensors.torch import load_file
    saved = load_file(str(tmp_path / "ck" / "model.safetensors"))
    assert saved["llm.tok_embeddings.aud_rows"].shape == (8, m.cfg.llama.dim)
    fresh = MuMuLLaMA(preset("tiny"))
    with torch.no_grad():
        fresh.llm.tok_embeddings.weight.copy_(before)
    load_trained(fresh, tmp_path / "ck")            # a plain model: the rows land in the matrix
    fold_aud_rows(m)
    assert type(m.llm.tok_embeddings) is torch.nn.Embedding
    torch.testing.assert_close(fresh.llm.tok_embeddings.weight, m.llm.tok_embeddings.weight)
    torch.testing.assert_close(fresh.llm.tok_embeddings.weight[:40], before[:40])


def _published_tiny(tmp_path, variant: str, name="checkpoint.pth", wrap=lambda sd: {"model": sd}):
    """A tiny model saved under the published key names (all keys of that flavour's manifest)."""
    keys = [l.split("\t")[0] for l in (KEYS / f"keys_musicgen_{variant}.tsv").read_text().splitlines()
            if not l.startswith("#")]
    torch.manual_seed(1)
    src = MuMuLLaMA(preset("tiny", variant=variant))
    published = _published_state(src, {published_to_ours(k): k for k in keys})
    torch.save(wrap(published), tmp_path / name)
    return src, tmp_path / name


def test_m2ugen_checkpoint_into_a_mumu_model_is_refused_naming_the_flavour(tmp_path):
    _, path = _published_tiny(tmp_path, "m2ugen")
    with pytest.raises(CheckpointError) as e:
        load_published_checkpoint(MuMuLLaMA(preset("tiny", variant="mumu")), path)
    msg = str(e.value)
    assert "6 missing" in msg and "adapters.audio.rnn" in msg and "M2UGen" in msg and "\n" not in msg


def test_ddp_module_prefix_is_accepted(tmp_path):
    src, path = _published_tiny(tmp_path, "mumu", wrap=lambda sd: {"model": {"module." + k: v for k, v in sd.items()}})
    dst = MuMuLLaMA(preset("tiny"))
    report = load_published_checkpoint(dst, path)
    assert not (report.unknown or report.missing or report.mismatched)
    torch.testing.assert_close(dst.adapters["audio"].rnn.weight_ih_l0, src.adapters["audio"].rnn.weight_ih_l0)


@pytest.mark.parametrize("content", [{"optimizer": {}, "epoch": 3}, {"model": {"a": 1}}, [1, 2]])
def test_anything_else_is_refused_naming_the_first_keys(tmp_path, content):
    torch.save(content, tmp_path / "checkpoint.pth")
    with pytest.raises(CheckpointError, match="expected a state dict") as e:
        load_published_checkpoint(MuMuLLaMA(preset("tiny")), tmp_path / "checkpoint.pth")
    assert "checkpoint.pth" in str(e.value)


def test_config_comes_from_the_checkpoint_and_an_explicit_other_flavour_is_refused(tmp_path):
    from llama.checkpoint_config import FlavourError
    from llama.pipeline import BundlePaths, build_config
    _, path = _published_tiny(tmp_path, "m2ugen")
    tiny = preset("tiny").llama
    paths = BundlePaths(llama_dir=tmp_path, checkpoint=path)           # the 7b preset, any variant
    cfg = build_config(paths, tiny, tiny.vocab_size)
    assert cfg.audio_adapter.pooling == "mean_conv" and cfg.audio_adapter.in_dim == 32
    assert cfg.projector.d_model == 32 and cfg.projector.n_encoder_layers == 1 and cfg.llama.lora_rank == 4
    load_published_checkpoint(MuMuLLaMA(cfg), path)                      # loads with no hand-written config
    with pytest.raises(FlavourError, match="M2UGen checkpoint"):
        build_config(BundlePaths(llama_dir=tmp_path, checkpoint=path, variant="mumu"), tiny, tiny.vocab_size)
    with pytest.raises(FlavourError, match="trained for musicgen"):
        build_config(BundlePaths(llama_dir=tmp_path, checkpoint=path, music_decoder="audioldm2"), tiny,
                     tiny.vocab_size)


def test_a_llama_shallower_than_the_adapter_layers_is_one_line(tmp_path):
    from llama.pipeline import BundlePaths, build_config
    shallow = LLaMAConfig(dim=64, n_layers=16, n_heads=4)
    with pytest.raises(CheckpointError, match="16 layers.*last 18"):
        build_config(BundlePaths(llama_dir=tmp_path), shallow, 512)
