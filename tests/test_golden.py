"""Golden values: the published MuMu-LLaMA code's own outputs on small random weights.

`tests/fixtures/upstream_golden/` (README inside) holds a Meta-format base LLaMA, a
published-format checkpoint.pth with every key, the inputs, and what the published model
computed from them. We load both files through the real loaders, with no config written by
hand (sizes come from params.json and the checkpoint's own shapes), and compare every
quantity at fp32, LoRA unmerged and merged.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llama.checkpoint import load_llama_base, load_meta_llama, load_published_checkpoint
from llama.mumu_llama import MuMuLLaMA
from llama.pipeline import BundlePaths, build_config

GOLDEN = Path(__file__).parent / "fixtures" / "upstream_golden"
TOL = 1e-4
MAX_DIFF: dict[str, float] = {}   # printed at the end with -s, for the record


@pytest.fixture(scope="module")
def io():
    return torch.load(GOLDEN / "io.pt", weights_only=True)


def build_model(io) -> MuMuLLaMA:
    paths = BundlePaths(llama_dir=GOLDEN / "llama", llama_type=".", checkpoint=GOLDEN / "checkpoint.pth")
    llama_cfg, meta_sd = load_meta_llama(GOLDEN / "llama")
    cfg = build_config(paths, llama_cfg, vocab_size=io["config"]["base_vocab"])
    model = MuMuLLaMA(cfg)
    load_llama_base(model.llm, meta_sd)
    report = load_published_checkpoint(model, GOLDEN / "checkpoint.pth")
    assert not (report.unknown or report.mismatched or report.missing), report.summary()
    return model.eval()


@pytest.fixture(scope="module", params=["unmerged", "merged"])
def model(request, io):
    m = build_model(io)
    if request.param == "merged":
        m.llm.merge_lora()
    m.tag = request.param
    return m


def feats(io) -> dict:
    return {"audio": io["mert_hidden_states"][None], "image": io["vit_last_hidden_state"]}


def check(name: str, model, ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape, f"{name}: {tuple(ours.shape)} vs {tuple(ref.shape)}"
    diff = (ours.detach().float() - ref.float()).abs().max().item()
    MAX_DIFF[f"{name} [{model.tag}]"] = diff
    assert diff <= TOL, f"{name}: max abs diff {diff:.3g} (scale {ref.abs().max().item():.3g})"


def test_config_is_read_off_the_files(io):
    c, m = io["config"], build_model(io)
    L, P, A = m.cfg.llama, m.cfg.projector, m.cfg.audio_adapter
    assert (L.dim, L.n_layers, L.n_heads, L.ffn_dim, L.lora_rank) == (
        c["dim"], c["n_layers"], c["n_heads"], c["ffn_dim"], c["lora_rank"])
    assert (L.full_vocab_size, L.n_adapter_layers) == (c["vocab_size"], c["n_adapter_layers"])
    assert (A.pooling, A.n_pool, A.in_dim, A.rnn_size) == ("conv_rnn", c["mert_layers"], c["mert_dim"],
                                                            c["audio_rnn_dim"])
    assert (m.cfg.image_adapter.n_pool, m.cfg.image_adapter.in_dim) == (c["vit_tokens"], c["vit_dim"])
    assert (m.cfg.video_adapter.n_pool, m.cfg.video_adapter.in_dim) == (c["vivit_tokens"], c["vivit_dim"])
    assert (P.in_dim, P.d_model, P.ff_dim, P.n_queries, P.out_dim) == (
        c["projector_in"], c["projector_d_model"], c["projector_ff"], c["projector_queries"], c["projector_out"])
    assert (P.n_encoder_layers, P.n_decoder_layers) == (c["projector_encoder_layers"], c["projector_decoder_layers"])
    assert m.output_projector.tfm.encoder.layers[0].norm_first is c["projector_norm_first"]
    assert m.aud_ids == c["aud_token_ids"]


def test_adapters(model, io):
    check("audio adapter", model, model.adapters["audio"](io["mert_hidden_states"][None]), io["audio_feats"][:, 0])
    check("image adapter", model, model.adapters["image"](io["vit_last_hidden_state"]), io["image_feats"][:, 0])


@pytest.mark.parametrize("with_media", [False, True], ids=["text", "audio+image"])
def test_logits_and_prenorm_hidden(model, io, with_media):
    out = model(io["tokens"], feats=feats(io) if with_media else None)
    key = "audio_image" if with_media else "text"
    check(f"logits {key}", model, out.logits[:, -1], io[f"logits_{key}_last"])
    check(f"hidden {key}", model, out.hidden, io[f"hidden_{key}_last_layer"])


def test_output_projector_alone(model, io):
    check("projector", model, model.output_projector(io["projector_in_hidden"], io["projector_in_aud_emb"]),
          io["projector_out"])


def test_training_music_path_and_bridge_loss(model, io):
    tokens, pos = io["music_tokens"], io["music_aud_positions"]
    labels = io["music_labels"].masked_fill(io["music_labels"] == 0, -100)   # upstream: 0 = ignored
    out = model(tokens, labels, feats(io), aud_positions=pos[None], bridge_target=io["music_bridge_target"])
    check("music projector input hidden", model, out.hidden[:, pos - 1], io["music_projector_in_hidden"])
    check("music [AUD] embeddings", model, model.llm.tok_embeddings(tokens[:, pos]), io["music_projector_in_aud_emb"])
    check("music projector output", model, out.music_cond, io["music_projector_out"])
    check("bridge MSE", model, out.bridge_loss, io["music_bridge_mse"])
    check("music CE loss", model, out.ce_loss, io["music_ce_loss"])


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv-cache", "recompute"])
def test_generation_gathers_the_states_that_predict_aud(model, io, use_cache):
    prompt = io["music_tokens"][0, :int(io["music_aud_positions"][0])].tolist()
    r = model.generate([prompt], feats(io), max_new_tokens=0, force_music=True, use_cache=use_cache)
    assert r.tokens[0] == model.aud_ids
    check(f"generation gather ({'cache' if use_cache else 'recompute'})", model, r.aud_hidden[0][None],
          io["music_gen_hidden"])
    check("generation projector output", model, r.music_cond[0][None], io["music_projector_out"])


def test_generation_step_logits(model, io):
    start = int(io["music_aud_positions"][0])
    logits = torch.cat([model(io["music_tokens"][:, :start + k], feats=feats(io)).logits[:, -1]
                        for k in range(8)])
    check("generation step logits", model, logits, io["music_gen_logits"])


def test_zz_report_max_diffs():
    """Prints every quantity's max abs diff (pytest -s); fails only if none were measured."""
    assert MAX_DIFF
    width = max(map(len, MAX_DIFF))
    print("\n" + "\n".join(f"{k:<{width}}  {v:.2e}" for k, v in sorted(MAX_DIFF.items())))
