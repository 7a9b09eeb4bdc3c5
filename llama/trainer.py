"""Staged training with accelerate: one loop for CPU, one GPU and several processes (DDP).

Stages (docs/design.md): 1 captioning, 2 caption -> music ([AUD] + bridge loss), 3 instructions.
Only the stage's parameters train (llama/trainable.py); checkpoints hold only those, plus the
optimizer, scheduler, RNG and data position, so `--resume` continues exactly. The run folder
rules (one run per folder, --resume/--overwrite, settings a resume may not change) are in
llama/run_dir.py.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import run_dir
from .checkpoint import save_trained
from .errors import UserError
from .feature_memo import FeatureMemo
from .data.collate import collate, encode_sample
from .data.formats import Sample
from .media import MediaError
from .train_state import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint


class TrainingError(UserError, RuntimeError):
    """A run cannot go on (e.g. a non-finite loss); the message names the step and samples."""


@dataclass
class TrainConfig:
    stage: int
    data: Path                          # data config (YAML/JSON) listing datasets per stage
    out: Path                           # run folder: checkpoints/, final/, tb/, metrics.jsonl, loss.png
    ckpt_dir: Path | None = None        # bundle.json folder (default: the tiny bundle)
    init_from: Path | None = None       # trained weights of the previous stage (our format)
    music_decoder: str | None = None
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    epochs: int = 1
    max_steps: int | None = None        # optimizer steps; overrides epochs when set
    clip: float = 1.0
    max_len: int = 512
    bridge_scale: float | None = None   # None: the model config's (10)
    mixed_precision: str = "auto"       # auto | no | bf16 | fp16
    save_every: int = 0                 # optimizer steps between checkpoints; 0 = only at the end
    keep: int = 2
    seed: int = 0
    resume: bool = False
    overwrite: bool = False             # clear an earlier run's files in `out` (llama/run_dir.py)
    skip_nonfinite: bool = False
    trust_remote_code: bool = False
    cpu: bool = False


def lr_lambda(cfg: TrainConfig, total_steps: int):
    """Linear warmup, then cosine from lr to min_lr over the remaining steps."""
    floor = cfg.min_lr / cfg.lr

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No decay on norms, biases, gates, and the embedding/LM-head matrices (only their [AUD]
    rows get gradients; decaying the whole matrix would erode the frozen vocabulary)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = name.endswith(".bias") or "norm" in name or name.endswith(".gate") \
            or name in ("llm.tok_embeddings.weight", "llm.output.weight")
        (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, n_procs: int, rank: int) -> list[list[int]]:
    """This process's batches for an epoch: a seeded permutation cut into batches, dealt round
    robin. The last round is topped up from the start so every process steps equally (no sample
    is left out)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    while len(batches) % n_procs:
        batches.append(batches[len(batches) % max(1, len(batches) - 1)])
    return batches[rank::n_procs]


class Trainer:
    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.cfg = cfg
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() and not cfg.cpu else "no"
        self.acc = Accelerator(mixed_precision=mp, cpu=cfg.cpu, kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True)])
        set_seed(cfg.seed)
        self.log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if self.acc.is_main_process else (lambda *a: None)
        self._bridge_cache: dict[str, torch.Tensor] = {}
        self.memo = FeatureMemo()          # frozen-encoder features, once per media file

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        from .checkpoint import load_trained
        from .data.config import load_stage
        from .pipeline import BundlePaths, MuMuPipeline
        from .tiny import ensure_tiny_bundle
        from .trainable import set_trainable

        cfg = self.cfg
        run_dir.prepare(cfg.out, cfg.resume, cfg.overwrite, self.acc.is_main_process)
        self.acc.wait_for_everyone()
        samples, reports = load_stage(cfg.data, cfg.stage)     # before the model: a bad config fails fast
        ckpt = cfg.ckpt_dir or ensure_tiny_bundle(Path(__file__).resolve().parents[1] / "ckpts" / "tiny")
        paths = BundlePaths.from_bundle(ckpt, music_decoder=cfg.music_decoder)
        if cfg.init_from is not None:                      # stage N+1 starts from stage N
            setattr(paths, "mumu_audioldm2" if paths.music_decoder == "audioldm2" else "mumu", None)
        self.pipe = MuMuPipeline.load(paths, device=str(self.acc.device), trust_remote_code=cfg.trust_remote_code,
                                      merge_lora=False)
        model = self.pipe.model
        inherited = load_trained(model, cfg.init_from) if cfg.init_from is not None else []
        self.names = set_trainable(model, cfg.stage)
        # what we save: this stage's tensors plus those inherited from earlier stages, so that
        # final/ alone (over the base model) is the whole trained model
        self.save_names = sorted(set(self.names) | set(inherited))
        model.train()
        self.scale = cfg.bridge_scale if cfg.bridge_scale is not None else model.cfg.bridge_scale
        model.cfg.bridge_scale = self.scale     # saved in config.json: generation divides by it

        for r in reports:
            self.log(r.line())
        self.samples, self.encoded, too_long = [], [], []
        for s in samples:
            e = encode_sample(s, self.pipe.tokenizer, cfg.max_len)
            if e is None:
                too_long.append(s.id)
            else:
                self.samples.append(s)
                self.encoded.append(e)
        if too_long:
            self.log(f"skipped {len(too_long)} samples longer than --max-len {cfg.max_len}: {too_long[:3]}")
        if not self.encoded:
            raise TrainingError(f"{cfg.data}: no usable samples for stage {cfg.stage}")
        self.too_long = len(too_long)

        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.log(f"stage {cfg.stage}: {len(self.encoded)} samples, {len(self.names)} trained tensors "
                 f"({n_trainable:,} parameters incl. full embedding/LM-head matrices)")
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        per_epoch = math.ceil(len(epoch_batches(len(self.encoded), cfg.batch_size, 0, cfg.seed,
                                                self.acc.num_processes, 0)) / cfg.grad_accum)
        self.total_steps = cfg.max_steps or per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.total_steps))
        # a rough size of one checkpoint: the trained tensors and AdamW's two moments, in fp32
        run_dir.check_free_space(cfg.out, (cfg.keep + 2) * 3 * 4 * n_trainable)
        self.settings = {"stage": cfg.stage, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                         "seed": cfg.seed, "max_len": cfg.max_len, "processes": self.acc.num_processes,
                         "data_config": run_dir.file_digest(cfg.data),
                         "samples": run_dir.samples_digest([s.id for s in self.samples])}
        self.model, self.optimizer = self.acc.prepare(model, self.optimizer)
        self.state = TrainState(skipped_too_long=self.too_long)
        last = latest_checkpoint(cfg.out) if cfg.resume else None
        if cfg.resume and last is None:
            self.log(f"--resume: no checkpoint in {cfg.out / 'checkpoints'}, starting from scratch")
        if last is not None:
            saved = run_dir.read_settings(last)
            if saved is None:
                self.log(f"{last} predates {run_dir.SETTINGS_FILE}: resuming without checking the settings")
            else:
                run_dir.check_resume(saved, self.settings, last)
            self.state = load_checkpoint(last, self.raw_model, self.optimizer, self.scheduler)
            self.log(f"resumed from {last} (step {self.state.step})")

    @property
    def raw_model(self):
        return self.acc.unwrap_model(self.model)

    # ------------------------------------------------------------ one batch
    def media_features(self, samples: list[Sample]) -> tuple[dict, list[int]]:
        """Per-sample features {modality: [tensor | None]}, and indices of unreadable samples."""
        from .media import load_audio, load_image, load_video

        feats = {"audio": [None] * len(samples), "image": [None] * len(samples), "video": [None] * len(samples)}
        bad = []
        with torch.no_grad():
            for i, s in enumerate(samples):
                try:
                    if s.audio is not None:
                        enc = self.pipe.encoder("audio")
                        feats["audio"][i] = self.memo.get("audio", s.audio, lambda: enc.encode(
                            load_audio(s.audio, enc.sampling_rate)))
                    if s.image is not None:
                        enc = self.pipe.encoder("image")
                        feats["image"][i] = self.memo.get("image", s.image, lambda: enc.encode(
                            [load_image(s.image)])[0])
                    if s.video is not None:
                        enc = self.pipe.encoder("video")
                        feats["video"][i] = self.memo.get("video", s.video, lambda: enc.encode(
                            [load_video(s.video, enc.num_frames)])[0])
                except MediaError as e:
                    self.log(f"sample {s.id}: {e}")
                    bad.append(i)
        return {k: v for k, v in feats.items() if any(x is not None for x in v)}, bad

    def bridge_target(self, captions: list[str]) -> torch.Tensor:
        """scale x the decoder's own conditioning of each caption, cached per caption."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._bridge_cache]
        if missing:
            cond = self.pipe.decoder().condition_text(missing)
            for c, t in zip(missing, cond):
                self._bridge_cache[c] = (self.scale * t).float()
        return torch.stack([self._bridge_cache[c] for c in captions]).to(self.acc.device)

    def batch_loss(self, idx: list[int]):
        samples = [self.samples[i] for i in idx]
        feats, bad = self.media_features(samples)
        self.state.skipped_bad_media += len(bad)
        keep = [i for i in range(len(idx)) if i not in bad]
        if not keep:
            return None, [s.id for s in samples]
        samples = [samples[i] for i in keep]
        feats = {k: [v[i] for i in keep] for k, v in feats.items()}
        batch = collate([self.encoded[idx[i]] for i in keep])
        dev = self.acc.device
        music = [s.target_caption for s, p in zip(samples, batch["aud_positions"]) if p[0] >= 0]
        target = self.bridge_target(music) if music else None
        with self.acc.autocast():
            out = self.model(batch["tokens"].to(dev), batch["labels"].to(dev),
                             feats={k: [x.to(dev) if x is not None else None for x in v] for k, v in feats.items()},
                             key_mask=batch["key_mask"].to(dev),
                             aud_positions=batch["aud_positions"].to(dev) if music else None,
                             bridge_target=target)
        return out, batch["ids"]

    # ------------------------------------------------------------ the loop
    def train(self) -> TrainState:
        """Run to the last step; a failed write (full disk, ...) is a one-line OutputError."""
        try:
            return self._train()
        except OSError as e:
            raise run_dir.OutputError(f"cannot write the run's files ({run_dir.describe_os_error(e)}); "
                                      "checkpoints already written are whole") from e

    def _train(self) -> TrainState:
        cfg, acc, st = self.cfg, self.acc, self.state
        cfg.out.mkdir(parents=True, exist_ok=True)
        writer = self._tensorboard()
        metrics = self._metrics_file()
        from tqdm import tqdm
        bar = tqdm(total=self.total_steps, initial=st.step, desc=f"stage {cfg.stage}", unit="step",
                   disable=not acc.is_main_process, file=sys.stderr)
        try:
            self._loop(bar, writer, metrics)
        finally:                                  # an error still leaves a clean log and files
            bar.close()
            if acc.is_main_process:
                writer.flush()
                metrics.flush()
        self._save()
        equal = self._weights_equal_across_processes()
        if acc.is_main_process:
            summary = {"stage": cfg.stage, "steps": st.step, "final_loss": st.losses[-1] if st.losses else None,
                       "processes": acc.num_processes, "weights_equal_across_processes": equal,
                       "samples": len(self.encoded), "skipped_nonfinite_batches": st.skipped_nonfinite,
                       "skipped_too_long": st.skipped_too_long, "skipped_bad_media": st.skipped_bad_media}
            (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2))
            save_trained(self.raw_model, cfg.out / "final", self.save_names)
            self._loss_curve()
            writer.close()
            metrics.close()
            self.log(f"done: {st.step} steps, final loss {st.losses[-1]:.4f}; skipped batches with non-finite "
                     f"loss: {st.skipped_nonfinite}; samples skipped: {st.skipped_too_long} too long, "
                     f"{st.skipped_bad_media} unreadable media; weights -> {cfg.out / 'final'}")
        acc.wait_for_everyone()
        return st

    def _loop(self, bar, writer, metrics) -> None:
        cfg, acc, st = self.cfg, self.acc, self.state
        micro, window = 0, []
        while st.step < self.total_steps:
            batches = epoch_batches(len(self.encoded), cfg.batch_size, st.epoch, cfg.seed,
                                    acc.num_processes, acc.process_index)
            while st.batch_in_epoch < len(batches) and st.step < self.total_steps:
                idx = batches[st.batch_in_epoch]
                st.batch_in_epoch += 1
                micro += 1
                boundary = micro % cfg.grad_accum == 0 or st.batch_in_epoch == len(batches)
                out, ids = self.batch_loss(idx)
                finite = out is not None and bool(torch.isfinite(out.loss.detach()).all())
                all_finite = bool(acc.gather(torch.tensor([finite], device=acc.device)).all())
                if not all_finite:
                    if out is not None and not cfg.skip_nonfinite:
                        raise TrainingError(f"non-finite loss at step {st.step + 1} (samples {ids}); "
                                            "--skip-nonfinite skips such batches instead")
                    st.skipped_nonfinite += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    micro, window = 0, []
                    continue
                if boundary:
                    acc.backward(out.loss / cfg.grad_accum)
                else:
                    with acc.no_sync(self.model):
                        acc.backward(out.loss / cfg.grad_accum)
                window.append({k: float(getattr(out, k).detach()) for k in ("loss", "ce_loss", "bridge_loss")
                               if getattr(out, k) is not None})
                if not boundary:
                    continue
                if cfg.clip > 0:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.clip)
                lr = self.scheduler.get_last_lr()[0]          # the rate this step used
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                st.step += 1
                micro = 0
                logged = {k: sum(w[k] for w in window if k in w) / max(1, sum(k in w for w in window))
                          for k in ("loss", "ce_loss", "bridge_loss") if any(k in w for w in window)}
                window = []
                st.losses.append(logged["loss"])
                if acc.is_main_process:
                    metrics.write(json.dumps({"step": st.step, "lr": lr, **logged}) + "\n")
                    metrics.flush()
                    for k, v in logged.items():
                        writer.add_scalar(f"train/{k}", v, st.step)
                    writer.add_scalar("train/lr", lr, st.step)
                bar.set_postfix(loss=f"{logged['loss']:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                if cfg.save_every and st.step % cfg.save_every == 0:
                    self._save()
            if st.batch_in_epoch >= len(batches):
                st.epoch, st.batch_in_epoch = st.epoch + 1, 0

    def _weights_equal_across_processes(self) -> bool:
        """Gather a fingerprint of every trained tensor from each process and compare."""
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            prints = torch.stack([(p.detach().float().cpu().flatten() *
                                   torch.rand(p.numel(), generator=g)).sum()
                                  for p in self.raw_model.parameters() if p.requires_grad])
        gathered = self.acc.gather(prints.to(self.acc.device)[None]).cpu()   # (n_procs, n_tensors)
        return bool((gathered == gathered[0]).all())

    def _save(self) -> None:
        if self.acc.is_main_process:
            save_checkpoint(self.cfg.out, self.raw_model, self.save_names, self.optimizer, self.scheduler,
                            self.state, keep=self.cfg.keep, settings=self.settings)
        self.acc.wait_for_everyone()

    def _metrics_file(self):
        """metrics.jsonl holds one line per optimizer step; after a resume it is cut back to the
        checkpoint's step, so it always matches the weights on disk."""
        path = self.cfg.out / "metrics.jsonl"
        if not self.acc.is_main_process:
            return None
        kept = []
        if path.exists() and self.state.step:
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= self.state.step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError):
                    break                       # a line cut by a kill
        path.write_text("".join(k + "\n" for k in kept))
        return path.open("a")

    def _tensorboard(self):
        if not self.acc.is_main_process:
            return None
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(self.cfg.out / "tb"))

    def _loss_curve(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(self.state.losses) + 1), self.state.losses)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_title(f"stage {self.cfg.stage}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.cfg.out / "loss.png", dpi=100)
        plt.close(fig)
