"""The decode loop of `MuMuLLaMA.generate`, with continuous batching.

Why: a batch that decodes until its longest answer ends spends most of its steps on rows that
are already done (in the batch job, 200 steps at B=8 where 144 would hold every token). Here each
of `slots` rows holds one prompt at a time at its own position (`KVCache.update` per-row writes,
per-row rotary angles); when a prompt ends, the next waiting one is prefilled into its row and
decoding goes on. Rows start at position 0 and are right-padded only inside a prefill, where
causal attention already hides the padding, so a row computes what it computes alone, up to the
rounding of batched products.

A row's answer does not depend on its batch-mates: its sampler is its own generator (when given
one per prompt), drawn once per decision, exactly as alone. Prompts may be submitted while the
decoder runs (`Decoder.submit`, `Decoder.step`): the batch job feeds one decoder across a whole
file (`llama.batch_stream`).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from .errors import UserError
from .llama import KVCache


@dataclass
class Prompt:
    """One prompt and its settings; the decoder fills `tokens` and `aud_hidden`."""

    ids: list[int]
    residuals: list                        # per layer (1, 1, D) adapter residual, or None
    max_new: int
    force_music: bool = False
    temperature: float = 0.0
    top_p: float = 0.9
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    aud_hidden: list[torch.Tensor] = field(default_factory=list)
    key: object = None                     # the caller's name for it (on_token gets it)
    started_s: float = 0.0                 # perf_counter at admission and at the end
    finished_s: float = 0.0


def room(ids_lengths: list[int], max_new: list[int], n_aud: int, context: int) -> int:
    """Cache positions a row needs: the largest prompt + answer (+ a full [AUD] run); a UserError
    naming the first prompt that does not fit the context."""
    need = [n + m + n_aud for n, m in zip(ids_lengths, max_new)]
    for n, m, total in zip(ids_lengths, max_new, need):
        if total > context:
            raise UserError(f"prompt of {n} tokens + {m} new tokens (+{n_aud} for music) exceeds the context "
                            f"of {context} tokens; shorten the prompt or lower --max-new-tokens")
    return max(need)


class Decoder:
    """`slots` rows decoding the prompts submitted to it, in submission order; more may be
    submitted while it runs. `capacity`: cache positions per row (`room`)."""

    def __init__(self, model, slots: int, capacity: int, eos_id: int, device, dtype, use_cache: bool = True,
                 decode_step=None, on_token=None):
        L = model.cfg.llama
        self.model, self.llm, self.eos_id, self.on_token = model, model.llm, eos_id, on_token
        self.n_aud, self.aud_set, self.aud0 = L.n_aud_tokens, set(model.aud_ids), model.aud_ids[0]
        self.device, self.dtype, self.capacity = device, dtype, capacity
        S = max(1, slots)
        # each row's adapter residuals, overwritten in place when a row takes a new prompt
        first = self.llm.first_adapter_layer
        self.res = [torch.zeros(S, 1, L.dim, device=device, dtype=dtype) if i >= first else None
                    for i in range(L.n_layers)]
        self.seq = torch.zeros(S, capacity, dtype=torch.long, device=device)
        self.filled = [0] * S                                   # positions in the cache per row
        self.row: list[Prompt | None] = [None] * S
        self.waiting: deque[Prompt] = deque()
        self.cache = None
        self.step_fn = None
        if use_cache:
            cache_len = decode_step.cache_len(capacity) if decode_step is not None else capacity
            self.cache = KVCache.allocate(L, S, cache_len, device, dtype)
            if decode_step is not None:
                self.step_fn = decode_step.bind(self.llm, self.res, self.cache)
        self.steps = 0                                          # forward calls, prefills included

    def prompts(self, ids: list[list[int]], prefixes: torch.Tensor, max_new: list[int], force: list[bool],
                temperature: list[float], top_p: list[float], generators: list) -> list[Prompt]:
        """Prompt records for `submit`: prefixes (k, n_adapter_layers, D) -> per-prompt residuals."""
        res = self.llm.adapter_residuals(prefixes)               # per layer (k, 1, D) or None
        return [Prompt(p, [r[i:i + 1] if r is not None else None for r in res], max_new[i], force[i],
                       temperature[i], top_p[i], generators[i], key=i) for i, p in enumerate(ids)]

    def submit(self, prompts: list[Prompt]) -> None:
        for p in prompts:
            if len(p.ids) + p.max_new + self.n_aud > self.capacity:
                raise ValueError(f"a prompt needs {len(p.ids) + p.max_new + self.n_aud} positions; "
                                 f"this decoder has {self.capacity}")
        self.waiting.extend(prompts)

    @property
    def running(self) -> int:
        return sum(r is not None for r in self.row)

    def step(self) -> list[Prompt]:
        """Fill free rows from the waiting prompts, then decode one token per row; -> the prompts
        that finished (their `tokens` and `aud_hidden` complete)."""
        done: list[Prompt] = []
        while self.waiting and None in self.row:                # fill every free row
            free = [s for s, r in enumerate(self.row) if r is None]
            taken = [(s, self.waiting.popleft()) for s in free[:len(self.waiting)]]
            logits, hidden = self._prefill(taken)
            done += self._decide([s for s, _ in taken], logits, hidden)
        active = [s for s, r in enumerate(self.row) if r is not None]
        if active:
            logits, hidden = self._decode()
            done += self._decide(active, logits[active], hidden[active])
        return done

    # ------------------------------------------------------------------ forward passes
    def _prefill(self, taken: list[tuple[int, Prompt]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts into rows, right-padded: -> logits (k, V), hidden (k, D) at each prompt's end."""
        slots = [s for s, _ in taken]
        lengths = [len(p.ids) for _, p in taken]
        longest = max(lengths)
        idx = torch.tensor(slots, device=self.device)
        res = [None if r is None else torch.cat([p.residuals[i] for _, p in taken]) for i, r in enumerate(self.res)]
        for r, new in zip(self.res, res):
            if r is not None:
                r[idx] = new                                                 # (k, 1, D)
        now = time.perf_counter()
        for (s, p), length in zip(taken, lengths):
            self.row[s], self.filled[s], p.started_s = p, length, now
            self.seq[s, :length] = torch.tensor(p.ids, device=self.device)
        tokens = self.seq[idx, :longest]                                     # (k, longest)
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
        elif self.step_fn is not None:
            logits, hidden = self.step_fn(tokens, pos)
        else:
            logits, hidden = self.llm(tokens, self.res, self.cache, logits_for="last", positions=positions)
        for s in range(S):
            if self.row[s] is not None:
                self.filled[s] += 1
        return logits[:, -1], hidden[:, -1]

    # ------------------------------------------------------------------ token choice
    def _decide(self, slots: list[int], logits: torch.Tensor, hidden: torch.Tensor) -> list[Prompt]:
        """Choose each row's next token; returns the prompts that finished (their rows now free).

        When a row emits [AUD0] (or, with force_music, when it would stop), [AUD1..7] follow in
        turn; the projector reads, for each [AUD_k], the pre-norm state that chose it."""
        rows = [self.row[s] for s in slots]
        sampled = self._sample(rows, logits)                                      # (k,)
        finished = []
        for i, (s, n) in enumerate(zip(slots, rows)):
            g = n.tokens
            if g and g[-1] in self.aud_set:                   # inside a run: force [AUD1..7]
                t = g[-1] + 1
            else:
                t = int(sampled[i])
                if t in self.aud_set:                         # any [AUDk] starts the run at [AUD0]
                    t = self.aud0
                elif t == self.eos_id or len(g) >= n.max_new:
                    if not n.force_music:
                        finished.append(s)
                        continue
                    t = self.aud0
            if t in self.aud_set:
                n.aud_hidden.append(hidden[i].float().clone())
            g.append(t)
            if self.on_token is not None:
                self.on_token(n.key, t)
            if len(n.aud_hidden) == self.n_aud:
                finished.append(s)
                continue
            self.seq[s, self.filled[s]] = t                   # fed at the next step
        done, now = [], time.perf_counter()
        for s in finished:
            done.append(self.row[s])
            self.row[s] = None
            done[-1].finished_s = now
        return done

    def _sample(self, rows: list[Prompt], logits: torch.Tensor) -> torch.Tensor:
        """logits (k, V) of `rows` -> (k,) token ids, each prompt with its own temperature and
        top_p (greedy at temperature 0) and its own generator (or one shared by all)."""
        if all(p.temperature <= 0 for p in rows):
            return logits.argmax(-1).cpu()
        first = rows[0]
        if all((p.temperature, p.top_p, p.generator) == (first.temperature, first.top_p, first.generator)
               for p in rows):                                                   # one shared stream
            return self.model._sample(logits, first.temperature, first.top_p, first.generator)
        return torch.cat([self.model._sample(logits[i:i + 1], p.temperature, p.top_p, p.generator)
                          for i, p in enumerate(rows)])
