"""The decode loop of `MuMuLLaMA.generate`, with continuous batching.

Why: a batch that decodes until its longest answer ends spends most of its steps on rows that
are already done (in the batch job, 200 steps at B=8 where 144 would hold every token). Here each
of `slots` rows holds one prompt at a time at its own position (`KVCache.update` per-row writes,
per-row rotary angles); when a prompt ends, the next waiting one is prefilled into its row and
decoding goes on. Rows start at position 0 and are right-padded only inside a prefill, where
causal attention already hides the padding, so a row computes what it computes alone, up to the
rounding of batched products.

A row's answer does not depend on its batch-mates: its sampler is its own generator (when given
one per prompt), drawn once per decision, exactly as alone.
"""
from __future__ import annotations

from collections import deque

import torch

from .errors import UserError
from .llama import KVCache


class Decoder:
    """One generate call: prompts wait in a queue, `slots` rows decode them."""

    def __init__(self, model, prompts: list[list[int]], prefixes: torch.Tensor, max_new: list[int],
                 force: list[bool], temperature: list[float], top_p: list[float], eos_id: int, use_cache: bool,
                 generator, decode_step, on_token, slots: int | None):
        L = model.cfg.llama
        self.model, self.llm, self.prompts = model, model.llm, prompts
        self.max_new, self.force, self.eos_id = max_new, force, eos_id
        self.temperature, self.top_p, self.generator, self.on_token = temperature, top_p, generator, on_token
        N = len(prompts)
        S = N if slots is None else max(1, min(slots, N))
        self.n_aud, self.aud_set, self.aud0 = L.n_aud_tokens, set(model.aud_ids), model.aud_ids[0]
        # a row holds one prompt at a time from position 0: room for the largest prompt + answer
        need = [len(p) + n + self.n_aud for p, n in zip(prompts, max_new)]   # + a full [AUD] run
        capacity = max(need)
        if capacity > L.max_seq_len:
            i = need.index(capacity)
            raise UserError(f"prompt of {len(prompts[i])} tokens + {max_new[i]} new tokens (+{self.n_aud} for "
                            f"music) exceeds the context of {L.max_seq_len} tokens; shorten the prompt or lower "
                            f"--max-new-tokens")
        self.device, self.dtype = prefixes.device, prefixes.dtype
        self.res_all = self.llm.adapter_residuals(prefixes)     # per layer (N, 1, D) or None
        # each row's residuals, overwritten in place when a row takes a new prompt
        self.res = [r[:S].clone() if r is not None else None for r in self.res_all]
        self.seq = torch.zeros(S, capacity, dtype=torch.long, device=self.device)
        self.filled = [0] * S                                   # positions in the cache per row
        self.row: list[int | None] = [None] * S                 # prompt index per row
        self.cache = None
        self.step = None
        if use_cache:
            cache_len = decode_step.cache_len(capacity) if decode_step is not None else capacity
            self.cache = KVCache.allocate(L, S, cache_len, self.device, self.dtype)
            if decode_step is not None:
                self.step = decode_step.bind(self.llm, self.res, self.cache)
        self.generated: list[list[int]] = [[] for _ in range(N)]
        self.aud_hidden: list[list[torch.Tensor]] = [[] for _ in range(N)]
        self.steps = 0                                          # forward calls, prefills included

    def run(self) -> tuple[list[list[int]], list[list[torch.Tensor]]]:
        free, queue = deque(range(len(self.row))), deque(range(len(self.prompts)))
        while True:
            while free and queue:                               # fill every free row
                taken = [(free.popleft(), queue.popleft()) for _ in range(min(len(free), len(queue)))]
                slots = [s for s, _ in taken]
                logits, hidden = self._prefill(taken)
                free.extend(self._decide(slots, logits, hidden))
            active = [s for s in range(len(self.row)) if self.row[s] is not None]
            if not active:
                return self.generated, self.aud_hidden
            logits, hidden = self._decode()
            free.extend(self._decide(active, logits[active], hidden[active]))

    # ------------------------------------------------------------------ forward passes
    def _prefill(self, taken: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts into rows, right-padded: -> logits (k, V), hidden (k, D) at each prompt's end."""
        slots = [s for s, _ in taken]
        lengths = [len(self.prompts[n]) for _, n in taken]
        longest = max(lengths)
        idx = torch.tensor(slots, device=self.device)
        rows = torch.tensor([n for _, n in taken], device=self.device)
        for r, r_all in zip(self.res, self.res_all):
            if r is not None:
                r[idx] = r_all[rows]
        for (s, n), length in zip(taken, lengths):
            self.row[s], self.filled[s] = n, length
            self.seq[s, :length] = torch.tensor(self.prompts[n], device=self.device)
        tokens = self.seq[idx, :longest]                                     # (k, longest)
        res = [r_all[rows] if r_all is not None else None for r_all in self.res_all]
        last = torch.tensor(lengths, device=self.device) - 1
        self.steps += 1
        if self.cache is None:
            logits, hidden = self.llm(tokens, res, logits_for=last)
        elif slots == list(range(slots[0], slots[0] + len(slots))):         # rows side by side: a view
            logits, hidden = self.llm(tokens, res, self.cache.rows(slots[0], len(slots)), logits_for=last)
        else:
            part = KVCache.allocate(self.llm.cfg, len(slots), longest, self.device, self.dtype)
            logits, hidden = self.llm(tokens, res, part, logits_for=last)
            for whole, new in zip(self.cache.keys + self.cache.values, part.keys + part.values):
                whole[idx, :, :longest] = new
        return logits[:, 0], hidden[torch.arange(len(slots), device=self.device), last]

    def _decode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row at its own position -> logits (S, V), hidden (S, D). Rows without a
        prompt are fed a filler at position 0 (their next prompt overwrites it)."""
        S = len(self.row)
        positions = [self.filled[s] if self.row[s] is not None else 0 for s in range(S)]
        pos = torch.tensor(positions, device=self.device)
        tokens = self.seq[torch.arange(S, device=self.device), pos][:, None]        # (S, 1)
        self.steps += 1
        if self.cache is None:                    # reference: the whole sequence again
            logits, hidden = self.llm(self.seq[:, :max(positions) + 1], self.res, logits_for=pos)
            hidden = hidden[torch.arange(S, device=self.device), pos][:, None]
        elif self.step is not None:
            logits, hidden = self.step(tokens, pos)
        else:
            logits, hidden = self.llm(tokens, self.res, self.cache, logits_for="last", positions=positions)
        for s in range(S):
            if self.row[s] is not None:
                self.filled[s] += 1
        return logits[:, -1], hidden[:, -1]

    # ------------------------------------------------------------------ token choice
    def _decide(self, slots: list[int], logits: torch.Tensor, hidden: torch.Tensor) -> list[int]:
        """Choose each row's next token; returns the rows whose prompt is finished (now free).

        When a row emits [AUD0] (or, with force_music, when it would stop), [AUD1..7] follow in
        turn; the projector reads, for each [AUD_k], the pre-norm state that chose it."""
        rows = [self.row[s] for s in slots]
        sampled = self._sample(rows, logits)                                      # (k,)
        finished = []
        for i, (s, n) in enumerate(zip(slots, rows)):
            g = self.generated[n]
            if g and g[-1] in self.aud_set:                   # inside a run: force [AUD1..7]
                t = g[-1] + 1
            else:
                t = int(sampled[i])
                if t in self.aud_set:                         # any [AUDk] starts the run at [AUD0]
                    t = self.aud0
                elif t == self.eos_id or len(g) >= self.max_new[n]:
                    if not self.force[n]:
                        finished.append(s)
                        continue
                    t = self.aud0
            if t in self.aud_set:
                self.aud_hidden[n].append(hidden[i].float().clone())
            g.append(t)
            if self.on_token is not None:
                self.on_token(n, t)
            if len(self.aud_hidden[n]) == self.n_aud:
                finished.append(s)
                continue
            self.seq[s, self.filled[s]] = t                   # fed at the next step
        for s in finished:
            self.row[s] = None
        return finished

    def _sample(self, rows: list[int], logits: torch.Tensor) -> torch.Tensor:
        """logits (k, V) of prompts `rows` -> (k,) token ids, each prompt with its own temperature
        and top_p (greedy at temperature 0) and, given one per prompt, its own generator."""
        temps, tops = [self.temperature[n] for n in rows], [self.top_p[n] for n in rows]
        gen = self.generator
        if all(t <= 0 for t in temps):
            return logits.argmax(-1).cpu()
        if not isinstance(gen, (list, tuple)) and len(set(zip(temps, tops))) == 1:
            return self.model._sample(logits, temps[0], tops[0], gen)          # one shared stream
        return torch.cat([self.model._sample(logits[i:i + 1], temps[i], tops[i],
                                             gen[n] if isinstance(gen, (list, tuple)) else gen)
                          for i, n in enumerate(rows)])
