"""MuMu-LLaMA assembled: adapters -> gated prefixes in the LLM -> text, and [AUD] -> projector.

This module holds only trainable-side modules and the math (loss, generation). Frozen encoders,
the tokenizer and the music decoder live in `pipeline.py`, which feeds this model features.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapters import ModalityAdapter
from .config import MuMuConfig
from .llama import Transformer
from .projector import OutputProjector

MODALITIES = ("audio", "image", "video")   # order of the prefix-layer groups, first to last


@dataclass
class ModelOutput:
    logits: torch.Tensor
    hidden: torch.Tensor                          # (B, S, D) last layer, BEFORE the final norm
    loss: torch.Tensor | None = None              # ce_loss + bridge_loss (those present)
    ce_loss: torch.Tensor | None = None
    bridge_loss: torch.Tensor | None = None
    music_cond: torch.Tensor | None = None        # (G, n_queries, out_dim) projector output


@dataclass
class GenerationResult:
    tokens: list[list[int]]                       # generated ids per sample (no prompt)
    aud_hidden: list[torch.Tensor | None]         # (n_aud, D) pre-norm states predicting [AUD0..7]
    music_cond: list[torch.Tensor | None] = field(default_factory=list)  # projector outputs
    steps: int = 0                                # forward passes (prefills and decode steps)


class MuMuLLaMA(nn.Module):
    def __init__(self, cfg: MuMuConfig):
        super().__init__()
        self.cfg = cfg
        L = cfg.llama
        self.llm = Transformer(L)
        self.adapters = nn.ModuleDict({
            "audio": ModalityAdapter(cfg.audio_adapter),
            "image": ModalityAdapter(cfg.image_adapter),
            "video": ModalityAdapter(cfg.video_adapter),
        })
        self.prefix_query = nn.Embedding(L.n_adapter_layers, L.dim)
        self.output_projector = OutputProjector(cfg.projector)

    @property
    def aud_ids(self) -> list[int]:
        n = self.cfg.llama.vocab_size
        return list(range(n, n + self.cfg.llama.n_aud_tokens))

    # ---------------------------------------------------------------- media -> prefixes
    def prefix_inputs(self, batch: int, feats: dict[str, torch.Tensor | list | None],
                      present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Adapter inputs for the prefix layers: (B, n_adapter_layers, D).

        feats[m]: encoder features for modality m, batched, or a list with one tensor (without
        batch axis) or None per sample, for batches that mix modalities and audio lengths.
        present[m]: optional (B,) bool for a batched tensor where only some samples carry m.
        An absent modality contributes only its learned query, as in the published model.
        """
        per = self.cfg.llama.adapter_layers_per_modality
        q = self.prefix_query.weight                                     # (n_adapter_layers, D)
        groups = []
        for g, m in enumerate(MODALITIES):
            query = q[g * per:(g + 1) * per][None].expand(batch, -1, -1)  # (B, per, D)
            vec = self._modality_vector(m, feats.get(m), batch, present)
            if vec is not None:
                query = query + vec[:, None, :]
            groups.append(query)
        return torch.cat(groups, dim=1)

    def _modality_vector(self, m: str, x, batch: int, present) -> torch.Tensor | None:
        """(B, D) adapter output, zero for samples without modality m; None if no sample has it."""
        if x is None:
            return None
        if isinstance(x, (list, tuple)):
            rows = [i for i, f in enumerate(x) if f is not None]
            if not rows:
                return None
            outs = [self.adapters[m](x[i][None])[0] for i in rows]          # each (D,)
            vec = outs[0].new_zeros(batch, outs[0].shape[-1])
            return vec.index_copy(0, torch.tensor(rows, device=vec.device), torch.stack(outs))
        vec = self.adapters[m](x)                                            # (B, D)
        if present is not None and m in present:
            vec = vec * present[m].to(vec.dtype)[:, None]
        return vec

    # ---------------------------------------------------------------- training forward
    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None,
                feats: dict | None = None, present: dict | None = None,
                key_mask: torch.Tensor | None = None, aud_positions: torch.Tensor | None = None,
                bridge_target: torch.Tensor | None = None) -> ModelOutput:
        """tokens, labels: (B, S), labels -100 where not predicted (aligned with tokens; shifted here).

        aud_positions: (B, n_aud) indices of [AUD0..7] in tokens, -1 rows for text-only samples.
        bridge_target: (G, n_queries, out_dim) for the G samples with music, in batch order: the
        scaled decoder conditioning of their caption. Loss = cross-entropy + MSE bridge loss.
        As published, the projector reads the pre-norm state at the position that *predicts*
        each [AUD_k] (one before it), plus the embedding of [AUD_k] itself.
        """
        prefixes = self.prefix_inputs(tokens.shape[0], feats or {}, present)
        logits, hidden = self.llm(tokens, self.llm.adapter_residuals(prefixes), key_mask=key_mask)
        out = ModelOutput(logits=logits, hidden=hidden)
        if labels is not None:
            out.ce_loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                          labels[:, 1:].reshape(-1), ignore_index=-100)
            out.loss = out.ce_loss
        if aud_positions is not None and bridge_target is not None:
            rows = (aud_positions[:, 0] >= 0).nonzero().squeeze(1)               # (G,)
            if rows.numel() != bridge_target.shape[0]:
                raise ValueError(f"{rows.numel()} samples with [AUD] tokens but "
                                 f"{bridge_target.shape[0]} bridge targets")
            if rows.numel():
                pos = aud_positions[rows]                                         # (G, n_aud)
                if bool((pos < 1).any()):
                    raise ValueError("an [AUD] token at position 0 has no state that predicts it")
                aud_hidden = hidden[rows[:, None], pos - 1]                       # (G, n_aud, D)
                projected = self.project_music(aud_hidden, tokens[rows[:, None], pos])
                out.music_cond = projected
                out.bridge_loss = F.mse_loss(projected.float(), bridge_target.float())
                out.loss = out.bridge_loss if out.loss is None else out.loss + out.bridge_loss
        return out

    def project_music(self, aud_hidden: torch.Tensor, aud_tokens: torch.Tensor) -> torch.Tensor:
        """(B, n_aud, D) pre-norm states predicting [AUD0..7], (B, n_aud) their ids
        -> (B, n_queries, out_dim)."""
        return self.output_projector(aud_hidden, self.llm.tok_embeddings(aud_tokens))

    # ---------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], feats: dict | None = None, present: dict | None = None,
                 max_new_tokens: int | list[int] = 128, temperature: float | list[float] = 0.0,
                 top_p: float | list[float] = 0.9,
                 eos_id: int = 2, force_music: bool | list[bool] = False, use_cache: bool = True,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 decode_step=None, on_token=None, slots: int | None = None) -> GenerationResult:
        """Decode up to `max_new_tokens` per prompt, `slots` prompts at a time (default: all).

        With fewer slots than prompts this is continuous batching: when a prompt ends, the next
        one takes its row (`llama.generation`). When a sample emits [AUD0] (or, with force_music,
        when it would stop), [AUD1..7] follow in turn. The projector reads, for each [AUD_k], the
        pre-norm state of the last position of the step that chose it (as published), so [AUD7]
        itself is never fed. use_cache=False recomputes the whole sequence per token (reference
        for tests/benchmarks). max_new_tokens, force_music, temperature and top_p may be given
        per prompt, and
        `generator` as one generator per prompt: each prompt then samples from its own stream,
        once per token it chooses, so a sampled answer does not depend on its batch-mates
        (batched inference relies on this). `decode_step` (see `llama.compiled_decode`) replaces
        the cached one-token step, e.g. by a compiled one. `on_token(prompt_index, token_id)` is
        called for every token as it is chosen (streaming); it only observes.
        """
        from .generation import Decoder, room

        B, L = len(prompts), self.cfg.llama
        max_new = _per_row(max_new_tokens, B, "max_new_tokens")
        gens = generator if isinstance(generator, (list, tuple)) else [generator] * B
        prefixes = self.prefix_inputs(B, feats or {}, present)      # (B, n_adapter_layers, D)
        capacity = room([len(p) for p in prompts], max_new, L.n_aud_tokens, L.max_seq_len)
        dec = Decoder(self, min(slots or B, B), capacity, eos_id, prefixes.device, prefixes.dtype, use_cache,
                      decode_step if use_cache else None, on_token)
        rows = dec.prompts(prompts, prefixes, max_new, _per_row(force_music, B, "force_music"),
                           _per_row(temperature, B, "temperature"), _per_row(top_p, B, "top_p"),
                           _per_row(gens, B, "generator"))
        dec.submit(rows)
        while dec.waiting or dec.running:
            dec.step()
        hid = [torch.stack(r.aud_hidden) if len(r.aud_hidden) == L.n_aud_tokens else None for r in rows]
        return GenerationResult([r.tokens for r in rows], hid, [self.music_cond(h) for h in hid], steps=dec.steps)

    def music_cond(self, aud_hidden: torch.Tensor | None) -> torch.Tensor | None:
        """(n_aud, D) states that chose [AUD0..7] -> the projector output (n_queries, out_dim)."""
        if aud_hidden is None:
            return None
        ids = torch.tensor(self.aud_ids, device=aud_hidden.device)[None]
        return self.project_music(aud_hidden[None].to(self.prefix_query.weight.dtype), ids)[0]

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
        """Greedy at temperature 0, else nucleus sampling (Meta's `sample_top_p`); a list of
        generators samples row b from generator[b] alone."""
        if temperature <= 0:
            return logits.argmax(-1).cpu()
        if isinstance(generator, (list, tuple)):
            return torch.cat([MuMuLLaMA._sample(logits[b:b + 1], temperature, top_p, g)
                              for b, g in enumerate(generator)])
        probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)
        return idx.gather(-1, choice).squeeze(-1)


def _per_row(value, batch: int, name: str) -> list:
    """A setting given once for the batch or once per row -> one value per row."""
    if isinstance(value, (list, tuple)):
        if len(value) != batch:
            raise ValueError(f"{name}: {len(value)} values for a batch of {batch}")
        return list(value)
    return [value] * batch
