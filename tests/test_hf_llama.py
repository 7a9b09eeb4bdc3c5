"""LLaMA in Hugging Face format (`Llama-2-7b-hf` folders) loads directly, computes what
transformers computes, and a bundle whose LLaMA is such a folder answers like the Meta one."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import inference
from llama.checkpoint import CheckpointError, load_llama_base, load_meta_llama
from llama.hf_llama import load_llama_weights
from llama.llama import Transformer

VOCAB = 512


def hf_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """What transformers' convert_llama_weights_to_hf.py does to wq and wk."""
    d, dim = w.shape
    return w.view(n_heads, d // n_heads // 2, 2, dim).transpose(1, 2).reshape(d, dim)


def to_hf_names(meta_sd: dict, n_layers: int, n_heads: int) -> dict:
    """Meta-named weights -> HF names and layout, spelled out independently of the loader."""
    hf = {"model.embed_tokens.weight": meta_sd["tok_embeddings.weight"],
          "model.norm.weight": meta_sd["norm.weight"], "lm_head.weight": meta_sd["output.weight"]}
    per_layer = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
                 "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
                 "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
                 "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm",
                 "ffn_norm": "post_attention_layernorm"}
    for i in range(n_layers):
        for ours, theirs in per_layer.items():
            w = meta_sd[f"layers.{i}.{ours}.weight"]
            if ours in ("attention.wq", "attention.wk"):
                w = hf_permute(w, n_heads)
            hf[f"model.layers.{i}.{theirs}.weight"] = w
    return hf


def write_hf_folder(folder: Path, hf_sd: dict, config: dict, n_shards: int = 2) -> Path:
    """config.json + model-0000N-of-0000M.safetensors + model.safetensors.index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(hf_sd)
    weight_map = {}
    for s in range(n_shards):
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: hf_sd[k].contiguous().clone() for k in keys[s::n_shards]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def hf_copy_of_meta(meta_dir: Path, out: Path) -> Path:
    """An old-style HF config.json (top-level rope_theta) and shards holding the same weights."""
    cfg, weights = load_meta_llama(meta_dir)
    config = {"model_type": "llama", "hidden_size": cfg.dim, "num_hidden_layers": cfg.n_layers,
              "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_heads,
              "intermediate_size": cfg.ffn_dim, "vocab_size": weights["tok_embeddings.weight"].shape[0],
              "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": None,
              "max_position_embeddings": cfg.max_seq_len, "hidden_act": "silu", "tie_word_embeddings": False}
    return write_hf_folder(out, to_hf_names(dict(weights), cfg.n_layers, cfg.n_heads), config)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A random transformers LlamaForCausalLM saved in >= 2 safetensors shards, with an FFN width
    (200) that Meta's multiple_of rule cannot give and a non-default rope theta."""
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                       vocab_size=VOCAB, intermediate_size=200, max_position_embeddings=128,
                       rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(conf).eval()
        with torch.no_grad():                  # unit-scale weights: logits of order 1, not 0.02
            for p in model.parameters():
                p.copy_(torch.randn_like(p) * p.shape[1] ** -0.5 if p.ndim == 2 else 1 + 0.2 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("hf") / "Llama-tiny-hf"
    model.save_pretrained(folder, max_shard_size="300KB")
    return model, folder


def test_hf_folder_gives_transformers_logits(hf_model):
    ref_model, folder = hf_model
    assert len(list(folder.glob("model-*.safetensors"))) >= 2 and (folder / "model.safetensors.index.json").is_file()
    cfg, weights = load_llama_weights(folder)
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.vocab_size) == (64, 4, 4, VOCAB)
    assert cfg.ffn_dim == 200 and cfg.rope_theta == 500.0 and cfg.norm_eps == 1e-5
    cfg.adapter_layers_per_modality = 1
    with torch.device("meta"):
        lazy = Transformer(cfg)
    load_llama_base(lazy, weights, torch.float32)          # the pipeline's path
    real = Transformer(cfg)
    load_llama_base(real, weights)                          # filled in place
    tokens = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = ref_model(tokens).logits                                      # (B, S, V)
        ours = lazy.eval()(tokens)[0][..., :VOCAB]                          # base-vocab columns
        filled = real.eval()(tokens)[0][..., :VOCAB]
    diff = (ours - ref).abs().max().item()
    print(f"\nHF parity: max |logit diff| = {diff:.3g} (logit scale {ref.abs().max().item():.3g})")
    assert ref.abs().max() > 1 and diff <= 1e-4
    torch.testing.assert_close(filled, ours, rtol=0, atol=0)


def test_meta_and_hf_folders_give_the_same_weights(tiny_bundle, tmp_path):
    meta_dir = tiny_bundle / "LLaMA" / "tiny"
    cfg_meta, meta = load_llama_weights(meta_dir)           # Meta's format still loads as before
    _, direct = load_meta_llama(meta_dir)
    cfg_hf, hf = load_llama_weights(hf_copy_of_meta(meta_dir, tmp_path / "hf"))
    assert cfg_hf.ffn_dim == cfg_meta.ffn_dim and cfg_hf.dim == cfg_meta.dim
    assert set(hf) == set(meta) - {"rope.freqs"}
    for k in hf:
        torch.testing.assert_close(hf[k], meta[k], rtol=0, atol=0)
        torch.testing.assert_close(direct[k], meta[k], rtol=0, atol=0)


def _bundle_with_hf_llama(tiny_bundle: Path, root: Path) -> Path:
    """The tiny bundle with its LLaMA replaced by an HF folder (tokenizer.model inside it)."""
    hf = hf_copy_of_meta(tiny_bundle / "LLaMA" / "tiny", root / "Llama-tiny-hf")
    shutil.copy(tiny_bundle / "LLaMA" / "tokenizer.model", hf / "tokenizer.model")
    spec = json.loads((tiny_bundle / "bundle.json").read_text())
    paths = {"mert", "vit", "vivit", "musicgen", "audioldm2", "mumu", "mumu_audioldm2", "checkpoint"}
    spec = {k: (str(tiny_bundle / v) if k in paths and v is not None else v) for k, v in spec.items()}
    spec["llama_dir"] = hf.name
    spec.pop("llama_type", None)
    (root / "bundle.json").write_text(json.dumps(spec))
    return root


def test_inference_cli_answers_the_same_from_an_hf_llama(tiny_bundle, tmp_path, capsys):
    hf_bundle = _bundle_with_hf_llama(tiny_bundle, tmp_path / "bundle")
    common = ["--prompt", "Describe this music.", "--max-new-tokens", "8"]
    runs = {}
    for name, argv in {"meta": ["--ckpt-dir", str(tiny_bundle)],
                       "hf bundle": ["--ckpt-dir", str(hf_bundle)],
                       "--llama-dir": ["--ckpt-dir", str(tiny_bundle), "--llama-dir",
                                       str(hf_bundle / "Llama-tiny-hf")]}.items():
        assert inference.main(argv + common) == 0, name
        runs[name] = capsys.readouterr().out
    assert runs["meta"].strip() and runs["hf bundle"] == runs["meta"] == runs["--llama-dir"]


# ------------------------------------------------------------------ bad folders: one line naming the file
def _one_line_error(folder: Path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as e:
        cfg, weights = load_llama_weights(folder)
        cfg.adapter_layers_per_modality = 1
        with torch.device("meta"):
            llm = Transformer(cfg)
        load_llama_base(llm, weights, torch.float32)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.fixture
def hf_copy(hf_model, tmp_path) -> Path:
    return Path(shutil.copytree(hf_model[1], tmp_path / "hf"))


def test_missing_shard_is_named(hf_copy):
    shard = sorted(hf_copy.glob("model-*.safetensors"))[-1]
    shard.unlink()
    msg = _one_line_error(hf_copy, "lists shard")
    assert shard.name in msg and "model.safetensors.index.json" in msg


def test_tensor_listed_in_the_index_but_absent_is_named(hf_copy):
    index = json.loads((hf_copy / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = sorted(set(index["weight_map"].values()))[0]
    (hf_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "model.layers.9.mlp.up_proj.weight" in _one_line_error(hf_copy, "lacks")


def test_missing_tensor_is_named(hf_copy, tmp_path):
    from safetensors.torch import load_file
    index = json.loads((hf_copy / "model.safetensors.index.json").read_text())
    gone = "model.layers.2.mlp.up_proj.weight"
    shard = hf_copy / index["weight_map"].pop(gone)
    tensors = load_file(str(shard))
    del tensors[gone]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    (hf_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "layers.2.feed_forward.w3.weight" in _one_line_error(hf_copy, "lack")


def test_shape_mismatch_names_the_shard(hf_copy):
    conf = json.loads((hf_copy / "config.json").read_text())
    conf["intermediate_size"] = 256
    (hf_copy / "config.json").write_text(json.dumps(conf))
    assert ".safetensors" in _one_line_error(hf_copy, r"is \(200, 64\).*\(256, 64\)")


@pytest.mark.parametrize("change,match", [({"num_key_value_heads": 2}, "grouped-query"),
                                          ({"rope_scaling": {"rope_type": "linear", "factor": 2.0},
                                            "rope_parameters": None}, "rope scaling"),
                                          ({"model_type": "mistral"}, "model_type")])
def test_unsupported_configs_are_refused(hf_copy, change, match):
    conf = json.loads((hf_copy / "config.json").read_text())
    conf.update(change)
    (hf_copy / "config.json").write_text(json.dumps(conf))
    assert "config.json" in _one_line_error(hf_copy, match)


def test_unknown_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")                  # config but no weights
    assert str(tmp_path) in _one_line_error(tmp_path, "not a LLaMA folder")
