"""Held-out evaluation on the synthetic world: does the model answer and steer music correctly?

Reads a split's `data.yaml` through the trainer's own readers (so the prompts are exactly those
of training) and its `world.json` truth, runs the model through `MuMuPipeline` (the real
loaders, greedy decoding), and measures:

- answers from audio (MusicQA): instrument, tempo, key (key and mode both right), drums, mood;
- captions of held-out music (stage-1 captioning): each attribute named and right;
- music from a picture / a video (MUImage / MUVideo): the attributes the picture or video shows
  (`inferable`) named right in the answer;
- the bridge: cosine between the projector output (divided by the bridge scale) and the
  decoder's own conditioning of the target caption, for caption -> music (stage 2), picture ->
  music and video -> music; and, so a shared component cannot pass for understanding, how often
  the target caption is the nearest of all held-out targets (retrieval top-1);
- editing (MUEdit): the conditioning is nearer to the edited clip's caption than to the source's.

Chance levels are in the report beside every accuracy. Nothing here is tuned to a target.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from llama.data.config import load_stage
from llama.pipeline import BundlePaths, MuMuPipeline
from llama.tokenizer import format_prompt

from . import world as W

CHANCE = {"instrument": 1 / len(W.INSTRUMENTS), "tempo": 1 / len(W.TEMPI), "key": 1 / (len(W.KEYS) * len(W.MODES)),
          "mode": 1 / len(W.MODES), "drums": 0.5, "mood": 1 / len(set(W.MOODS.values()))}


def named_right(text: str, truth: dict, attribute: str) -> bool:
    """Whether `text` names `attribute` with the true value (key: key and mode both)."""
    found = W.attributes_in(text)
    if attribute == "drums":
        return W.drums_in(text) == bool(truth["drums"])
    if attribute == "key":
        return found["key"] == truth["key"] and found["mode"] == truth["mode"]
    return found[attribute] == truth[attribute]


class Evaluator:
    def __init__(self, pipe: MuMuPipeline, split_dir: Path, max_new_tokens: int = 48, limit: int | None = None):
        self.pipe, self.split = pipe, Path(split_dir)
        self.max_new_tokens, self.limit = max_new_tokens, limit
        world = json.loads((self.split / "world.json").read_text())
        self.truth = {r["sample_id"]: r for r in world["records"]}
        self.scale = pipe.model.cfg.bridge_scale
        self.examples: list[dict] = []

    def samples(self, stage: int, dataset: str):
        samples, _ = load_stage(self.split / "data.yaml", stage)
        chosen = [s for s in samples if s.dataset == dataset]
        return chosen[: self.limit] if self.limit else chosen

    def run(self, sample, music: bool) -> tuple[str, torch.Tensor | None]:
        """Greedy answer to the sample's first instruction; the conditioning when it makes music."""
        pipe = self.pipe
        feats = pipe.features(sample.audio, sample.image, sample.video)
        ids = pipe.tokenizer.encode(format_prompt(sample.turns[0][0]), bos=True)
        r = pipe.model.generate([ids], feats, max_new_tokens=self.max_new_tokens, eos_id=pipe.tokenizer.eos_id,
                                force_music=music)
        text = pipe.tokenizer.decode([t for t in r.tokens[0] if t not in pipe.model.aud_ids]).strip()
        cond = r.music_cond[0]
        if len(self.examples) < 40 and (not self.examples or self.examples[-1]["dataset"] != sample.dataset
                                        or len(self.examples) % 8 == 0):
            self.examples.append({"dataset": sample.dataset, "prompt": sample.turns[0][0], "answer": text})
        return text, None if cond is None else cond.float() / self.scale

    def conditioning(self, captions: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.pipe.decoder().condition_text(captions).float()     # (N, n_queries, out_dim)

    # ------------------------------------------------------------ the measures
    def answers(self) -> dict:
        hits = defaultdict(list)
        self.answer_pairs: list[tuple[str, str]] = []       # (answer, reference) for the text metrics
        for s in self.samples(3, "musicqa"):
            rec = self.truth[s.id]
            text, _ = self.run(s, music=False)
            hits[rec["attribute"]].append(named_right(text, rec["attributes"], rec["attribute"]))
            self.answer_pairs.append((text, rec["answer"]))
        return {a: _acc(v) for a, v in hits.items()}

    def answer_text_metrics(self) -> dict:
        """BLEU-1..4 and ROUGE-L of the audio answers against the world's reference answers, with
        the libraries evaluate.py uses (the published tables' text metrics)."""
        from llama.metrics.text import bleu, rouge_l

        hyps = [h for h, _ in self.answer_pairs]
        refs = [[r] for _, r in self.answer_pairs]
        if not hyps:
            return {"n": 0}
        return {"n": len(hyps), **{k: round(v, 4) for k, v in bleu(hyps, refs).items()},
                "rouge_l": round(rouge_l(hyps, refs), 4)}

    def captions(self) -> dict:
        hits = defaultdict(list)
        for s in self.samples(1, "mucaps"):
            truth = self.truth[s.id]["attributes"]
            text, _ = self.run(s, music=False)
            for a in ("instrument", "tempo", "key", "drums"):
                hits[a].append(named_right(text, truth, a))
        out = {a: _acc(v) for a, v in hits.items()}
        out["mean"] = _mean([v["accuracy"] for v in out.values()])
        return out

    def music_from(self, stage: int, dataset: str) -> dict:
        """Answers naming the inferable attributes, and the bridge, for samples that write music."""
        hits, conds, captions = defaultdict(list), [], []
        for s in self.samples(stage, dataset):
            rec = self.truth[s.id]
            text, cond = self.run(s, music=True)
            for a in rec.get("inferable", ()):
                hits[a].append(named_right(text, rec["attributes"], a))
            conds.append(cond)
            captions.append(s.target_caption)
        out = {a: _acc(v) for a, v in hits.items()}
        if hits:
            out["mean"] = _mean([v["accuracy"] for v in out.values()])
        out["bridge"] = bridge(torch.stack(conds), self.conditioning(captions))
        return out

    def edits(self) -> dict:
        closer, conds, targets, sources = [], [], [], []
        pieces = {r["piece"]: r for r in self.truth.values() if r["dataset"] == "mucaps"}
        for s in self.samples(3, "muedit"):
            rec = self.truth[s.id]
            _, cond = self.run(s, music=True)
            conds.append(cond)
            targets.append(rec["caption"])
            sources.append(pieces[rec["source_piece"]]["caption"])
        cond = torch.stack(conds).flatten(1)
        to_target = F.cosine_similarity(cond, self.conditioning(targets).flatten(1))
        to_source = F.cosine_similarity(cond, self.conditioning(sources).flatten(1))
        closer = (to_target > to_source).tolist()
        return {"n": len(closer), "nearer_edited_than_source": _mean(closer),
                "cosine_to_edited_caption": float(to_target.mean()),
                "cosine_to_source_caption": float(to_source.mean())}

    def all(self) -> dict:
        t0 = time.perf_counter()
        report = {"answers_from_audio": self.answers()}
        report["answer_text_metrics"] = self.answer_text_metrics()
        report |= {"captions_of_music": self.captions(),
                  "music_from_caption": self.music_from(2, "mucaps"),
                  "music_from_image": self.music_from(3, "muimage"),
                  "music_from_video": self.music_from(3, "muvideo"), "editing": self.edits()}
        report["chance"] = CHANCE
        report["examples"] = self.examples
        report["seconds"] = round(time.perf_counter() - t0, 1)
        return report


def bridge(cond: torch.Tensor, target: torch.Tensor) -> dict:
    """Cosine to the own target, to the others' targets, and retrieval top-1 among all targets."""
    a, b = cond.flatten(1), target.flatten(1)                              # (N, K)
    sims = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T                 # (N, N)
    n = sims.shape[0]
    own = sims.diagonal()
    others = (sims.sum(1) - own) / max(n - 1, 1)
    # retrieval among distinct captions: identical targets count as the same answer
    same = (F.normalize(b, dim=1) @ F.normalize(b, dim=1).T) > 1 - 1e-6
    top1 = same[torch.arange(n), sims.argmax(1)].float().mean()
    return {"n": n, "cosine": float(own.mean()), "cosine_to_other_targets": float(others.mean()),
            "retrieval_top1": float(top1), "retrieval_chance": float(same.float().sum(1).mean() / n)}


def _acc(hits: list[bool]) -> dict:
    return {"accuracy": _mean(hits), "n": len(hits)}


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def evaluate(bundle_dir: str | Path, split_dir: str | Path, mumu: str | Path | None = None,
             limit: int | None = None, max_new_tokens: int = 48) -> dict:
    paths = BundlePaths.from_bundle(bundle_dir, mumu=Path(mumu).resolve() if mumu else None)
    pipe = MuMuPipeline.load(paths)
    return Evaluator(pipe, Path(split_dir), max_new_tokens=max_new_tokens, limit=limit).all()
