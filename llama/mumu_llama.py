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
from .errors import UserError
from .llama import KVCache, Transformer
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
                 max_new_tokens: int | list[int] = 128, temperature: float = 0.0, top_p: float = 0.9,
                 eos_id: int = 2, force_music: bool | list[bool] = False, use_cache: bool = True,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 decode_step=None, on_token=None) -> GenerationResult:
        """Decode up to `max_new_tokens` per prompt (left-padded batch).

        When a sample emits [AUD0] (or, with force_music, when it would stop), [AUD1..7] follow
        in turn. The projector reads, for each [AUD_k], the pre-norm state of the last position of
        the step that chose it (as published), so [AUD7] itself is never fed.
        use_cache=False recomputes the whole sequence per token (reference for tests/benchmarks).
        max_new_tokens / force_music may be given per prompt, and `generator` as one generator
        per prompt: each row then samples from its own stream, so a sampled answer does not depend
        on its batch-mates (batched inference relies on this). `decode_step` (see
        `llama.compiled_decode`) replaces the cached one-token step, e.g. by a compiled one.
        `on_token(row, token_id)` is called for every token as it is chosen (streaming); it only
        observes, so the result is the same with or without it.
        """
        L = self.cfg.llama
        B, device = len(prompts), self.prefix_query.weight.device
        n_aud, aud_set, aud0 = L.n_aud_tokens, set(self.aud_ids), self.aud_ids[0]
        max_new = _per_row(max_new_tokens, B, "max_new_tokens")
        force = _per_row(force_music, B, "force_music")
        longest = max(len(p) for p in prompts)
        capacity = longest + max(max_new) + n_aud             # room for a full [AUD] run
        if capacity > L.max_seq_len:
            raise UserError(f"prompt of {longest} tokens + {max(max_new)} new tokens (+{n_aud} for music) "
                            f"exceeds the context of {L.max_seq_len} tokens; shorten the prompt or lower "
                            f"--max-new-tokens")
        seq = torch.zeros(B, capacity, dtype=torch.long, device=device)
        mask = torch.ones_like(seq, dtype=torch.bool)
        for b, p in enumerate(prompts):                       # left padding keeps the ends aligned
            seq[b, longest - len(p):longest] = torch.tensor(p, device=device)
            mask[b, :longest - len(p)] = False
        padded = bool((~mask).any())
        prefixes = self.prefix_inputs(B, feats or {}, present)
        adapter_res = self.llm.adapter_residuals(prefixes)    # computed once for the whole decode
        cache_len = decode_step.cache_len(capacity) if decode_step is not None else capacity
        cache = KVCache.allocate(L, B, cache_len, device, prefixes.dtype) if use_cache else None
        step = decode_step.bind(self.llm, adapter_res, cache, mask if padded else None) \
            if decode_step is not None and use_cache else None

        generated: list[list[int]] = [[] for _ in range(B)]
        aud_hidden: list[list[torch.Tensor]] = [[] for _ in range(B)]
        done = [False] * B
        end, inp = longest, seq[:, :longest]
        while True:
            km = mask[:, :end] if padded else None
            if step is not None and end > longest:            # one new token per row
                logits, hidden = step(inp, end - 1)
            elif use_cache:
                logits, hidden = self.llm(inp, adapter_res, cache, key_mask=km, logits_for="last")
            else:
                logits, hidden = self.llm(seq[:, :end], adapter_res, key_mask=km, logits_for="last")
            sampled = self._sample(logits[:, -1], temperature, top_p, generator)   # (B,)
            # rows already done are fed a filler token (never read); eos_id may be -1, "no EOS"
            nxt = torch.full((B,), max(eos_id, 0), dtype=torch.long)
            for b in range(B):
                if done[b]:
                    continue
                g = generated[b]
                if g and g[-1] in aud_set:                    # inside a run: force [AUD1..7]
                    t = g[-1] + 1
                else:
                    t = int(sampled[b])
                    if t in aud_set:                          # any [AUDk] starts the run at [AUD0]
                        t = aud0
                    elif t == eos_id or len(g) >= max_new[b]:
                        if not force[b]:
                            done[b] = True
                            continue
                        t = aud0
                if t in aud_set:                              # the state that predicts [AUD_k]
                    aud_hidden[b].append(hidden[b, -1].float().clone())
                g.append(t)
                nxt[b] = t
                if on_token is not None:
                    on_token(b, t)
                if len(aud_hidden[b]) == n_aud:
                    done[b] = True
            if all(done):
                break
            seq[:, end] = nxt.to(device)
            end += 1
            inp = seq[:, end - 1:end]

        tokens_out = generated
        hid = [torch.stack(h) if len(h) == n_aud else None for h in aud_hidden]
        cond = []
        for b in range(B):
            if hid[b] is None:
                cond.append(None)
                continue
            ids = torch.tensor(self.aud_ids, device=device)[None]
            cond.append(self.project_music(hid[b][None].to(prefixes.dtype), ids)[0])
        return GenerationResult(tokens_out, hid, cond)

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
