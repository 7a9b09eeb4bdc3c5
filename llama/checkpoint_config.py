"""Model sizes read off a published checkpoint's own tensor shapes.

A released M2UGen / MuMu-LLaMA `checkpoint.pth` says, through its shapes, how wide every adapter,
RNN and projector is, how many prefix queries and LoRA ranks it has, and which audio pooling it
was trained with. Reading them here means a checkpoint of any width loads with no config written
by hand, and a preset that disagrees with the file can never load it into the wrong shapes.

Not readable from shapes: the projector's number of attention heads (the in-projection is
(3 d, d) for any head count) and the adapters' RMSNorm eps. Those keep the preset's values
(4 heads and 1e-6, the published ones).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from .config import AdapterConfig, MuMuConfig
from .errors import UserError

_ADAPTER_PREFIX = {"audio": "mu_mert", "image": "iu_vit", "video": "iu_vivit"}


class FlavourError(UserError):
    """The checkpoint's flavour (MuMu-LLaMA vs M2UGen, MusicGen vs AudioLDM2) is not the one asked for."""


def published_variant(shapes: Mapping[str, tuple]) -> str:
    """'mumu' when audio is pooled by an RNN + attention (MuMu-LLaMA), else 'm2ugen'."""
    return "mumu" if "mu_mert_rnn.weight_ih_l0" in shapes else "m2ugen"


def _need(shapes: Mapping[str, tuple], key: str, where: str) -> tuple:
    if key not in shapes:
        raise UserError(f"{where}: lacks {key} (not a published MuMu-LLaMA/M2UGen checkpoint?)")
    return tuple(shapes[key])


def _adapter(shapes, modality: str, pooling: str, dim: int, where: str) -> AdapterConfig:
    p = _ADAPTER_PREFIX[modality]
    n_pool = _need(shapes, f"{p}_agg.weight", where)[1]              # Conv1d (1, n_pool, 1)
    out_dim, in_dim = _need(shapes, f"{p}_proj.weight", where)      # Linear (D, W)
    if out_dim != dim:
        raise UserError(f"{where}: {p}_proj maps to width {out_dim} but the LLaMA is {dim} wide")
    rnn = shapes.get(f"{p}_rnn.weight_ih_l0")
    n_blocks = sum(1 for k in shapes if re.fullmatch(rf"{p}_norm_\d+\.weight", k))
    if pooling == "conv_rnn" and rnn is None:
        pooling = "mean_conv"
    return AdapterConfig(pooling=pooling, n_pool=n_pool, in_dim=in_dim, out_dim=dim,
                         n_blocks=n_blocks, rnn_size=rnn[0] if rnn is not None else None)


def config_from_published(shapes: Mapping[str, tuple], base: MuMuConfig, where: str = "checkpoint") -> MuMuConfig:
    """`base` (LLaMA sizes from params.json, preset for the rest) with every size the file sets.

    shapes: published key -> tensor shape (frozen sub-models may be present and are ignored).
    """
    L = base.llama
    dim = _need(shapes, "llama.norm.weight", where)[0]
    if dim != L.dim:
        raise UserError(f"{where}: made for a LLaMA of width {dim}, but the base LLaMA is {L.dim} wide")
    n_rows = _need(shapes, "llama.tok_embeddings.weight", where)[0]
    if n_rows <= L.vocab_size:
        raise UserError(f"{where}: {n_rows} embedding rows, no room for [AUD] tokens after the "
                        f"tokenizer's {L.vocab_size}")
    L.n_aud_tokens = n_rows - L.vocab_size
    lora = [s for k, s in shapes.items() if re.fullmatch(r"llama\.layers\.\d+\.\w+\.lora_w\w_l1\.weight", k)]
    if lora:
        L.lora_rank = lora[0][0]
    n_queries = _need(shapes, "prefix_query.weight", where)[0]
    if n_queries % 3:
        raise UserError(f"{where}: {n_queries} prefix queries, not 3 groups (audio, image, video)")
    L.adapter_layers_per_modality = n_queries // 3

    variant = published_variant(shapes)
    audio_pool = "conv_rnn" if variant == "mumu" else "mean_conv"
    audio = _adapter(shapes, "audio", audio_pool, dim, where)
    image = _adapter(shapes, "image", "conv", dim, where)
    video = _adapter(shapes, "video", "conv", dim, where)   # its RNN stays a loadable legacy part
    for a, b in ((audio, base.audio_adapter), (image, base.image_adapter), (video, base.video_adapter)):
        a.norm_eps = b.norm_eps

    P = base.projector
    P.d_model, P.in_dim = _need(shapes, "output_projector.fc.weight", where)
    P.n_queries = _need(shapes, "output_projector.query_embs", where)[1]
    P.out_dim = _need(shapes, "output_projector.model.weight", where)[0]
    P.ff_dim = _need(shapes, "output_projector.tfm.encoder.layers.0.linear1.weight", where)[0]
    P.n_encoder_layers = _count_layers(shapes, "output_projector.tfm.encoder.layers.")
    P.n_decoder_layers = _count_layers(shapes, "output_projector.tfm.decoder.layers.")
    return MuMuConfig(llama=L, audio_adapter=audio, image_adapter=image, video_adapter=video,
                      projector=P, music_decoder=base.music_decoder, bridge_scale=base.bridge_scale)


def _count_layers(shapes, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in shapes if k.startswith(prefix)})


def check_music_decoder(shapes: Mapping[str, tuple], music_decoder: str, where: str) -> None:
    """A MusicGen checkpoint projects to many queries, an AudioLDM2 one to a single long vector."""
    n_queries = tuple(shapes.get("output_projector.query_embs", (1, 0, 0)))[1]
    found = "audioldm2" if n_queries == 1 else "musicgen"
    if found != music_decoder:
        raise FlavourError(f"{where}: its output projector was trained for {found} "
                           f"({n_queries} queries), but the {music_decoder} decoder was asked for")
