"""Staged training with accelerate: one loop for CPU, one GPU and several processes (DDP/FSDP).

Stages (docs/design.md): 1 captioning, 2 caption -> music ([AUD] + bridge loss), 3 instructions.
Only the stage's parameters train (llama/trainable.py); checkpoints hold only those, plus the
optimizer, scheduler, RNG and data position, so `--resume` continues exactly. The run folder
rules are in llama/run_dir.py; settings and optimiser in llama/train_config.py; batches in
llama/train_batches.py; features (live or cached) in llama/train_features.py; records in
llama/train_log.py.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

from . import run_dir
from .checkpoint import save_trained
from .data.collate import collate, encode_sample
from .train_batches import epoch_batches, padding_fraction
from .train_config import TrainConfig, TrainingError, lr_lambda, param_groups  # noqa: F401 (re-exported)
from .train_features import BatchFeatures
from .train_log import RunLog
from .train_state import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint

LOSS_KEYS = ("loss", "ce_loss", "bridge_loss")


class Trainer:
    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.cfg = cfg
        mp = cfg.mixed_precision
        if mp == "auto":       # bf16 autocast on a GPU that has it; fp32 on CPU
            mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() and not cfg.cpu else "no"
        self.acc = Accelerator(mixed_precision=mp, cpu=cfg.cpu, kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True)])
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and self.acc.num_processes == 1:
            # accelerate found no backend (e.g. an FSDP/GPU config on a machine without GPUs):
            # every process would train alone and write the same folder
            raise TrainingError(f"launched as {os.environ['WORLD_SIZE']} processes but accelerate set up no "
                                "process group (no GPU? add --cpu for gloo, which runs DDP)")
        self.fsdp = self.acc.distributed_type.value == "FSDP"
        set_seed(cfg.seed)
        self.log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if self.acc.is_main_process else (lambda *a: None)

    # ------------------------------------------------------------ set-up
    def _encode(self, samples, what: str):
        """(samples kept, their encodings, number too long): too-long samples are counted and named."""
        kept, encoded, too_long = [], [], []
        for s in samples:
            e = encode_sample(s, self.pipe.tokenizer, self.cfg.max_len)
            if e is None:
                too_long.append(s.id)
            else:
                kept.append(s)
                encoded.append(e)
        if too_long:
            self.log(f"{what}: skipped {len(too_long)} samples longer than --max-len {self.cfg.max_len}: "
                     f"{too_long[:3]}")
        return kept, encoded, len(too_long)

    def setup(self) -> None:
        from .checkpoint import load_trained
        from .data.config import load_stage
        from .pipeline import BundlePaths, MuMuPipeline
        from .tiny import ensure_tiny_bundle
        from .trainable import set_trainable

        cfg = self.cfg
        if self.fsdp and (cfg.save_every or cfg.resume):
            raise TrainingError("under FSDP train.py writes final/ only (optimizer state is sharded); "
                                "--save-every and --resume need DDP (configs/accelerate/ddp.yaml)")
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not self.fsdp:
            self.log(f"FSDP config given but accelerate runs {self.acc.distributed_type.value} "
                     "(accelerate shards only on GPUs and other accelerators): training as DDP")
        run_dir.prepare(cfg.out, cfg.resume, cfg.overwrite, self.acc.is_main_process)
        self.acc.wait_for_everyone()
        samples, reports = load_stage(cfg.data, cfg.stage)     # before the model: a bad config fails fast
        eval_samples, eval_reports = load_stage(cfg.eval_data, cfg.stage) if cfg.eval_data else ([], [])
        ckpt = cfg.ckpt_dir or ensure_tiny_bundle(Path(__file__).resolve().parents[1] / "ckpts" / "tiny")
        paths = BundlePaths.from_bundle(ckpt, music_decoder=cfg.music_decoder)
        if cfg.init_from is not None:   # stage N+1 starts from stage N: its weights and its sizes
            own = Path(cfg.init_from) / "config.json"
            setattr(paths, "mumu_audioldm2" if paths.music_decoder == "audioldm2" else "mumu",
                    Path(cfg.init_from).resolve() if own.is_file() else None)
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
        for r in eval_reports:
            self.log(f"held-out {r.line()}")
        self.samples, self.encoded, self.too_long = self._encode(samples, "training data")
        if not self.encoded:
            raise TrainingError(f"{cfg.data}: no usable samples for stage {cfg.stage}")
        self.eval_samples, self.eval_encoded, _ = self._encode(eval_samples, "held-out data")
        if cfg.eval_data and not self.eval_encoded:
            raise TrainingError(f"{cfg.eval_data}: no usable held-out samples for stage {cfg.stage}")
        self.eval_unreadable = 0            # held-out samples whose media could not be read, per evaluation
        self.lengths = [len(e.tokens) for e in self.encoded] if cfg.group_by_length else None
        cache_dir = cfg.cache_features or cfg.features
        self.feats = BatchFeatures.open(self.pipe, self.acc.device, self.scale, self.log,
                                        self.samples + self.eval_samples, cache_dir,
                                        build_it=cfg.cache_features is not None,
                                        is_main=self.acc.is_main_process, wait=self.acc.wait_for_everyone)

        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.log(f"stage {cfg.stage}: {len(self.encoded)} samples, {len(self.names)} trained tensors "
                 f"({n_trainable:,} parameters)")
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        per_epoch = math.ceil(len(self._batches(0, 0)) / cfg.grad_accum)
        self.total_steps = cfg.max_steps or per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.total_steps))
        # a rough size of one checkpoint: the trained tensors and AdamW's two moments, in fp32
        run_dir.check_free_space(cfg.out, (cfg.keep + 2) * 3 * 4 * n_trainable)
        self.settings = {"stage": cfg.stage, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                         "seed": cfg.seed, "max_len": cfg.max_len, "processes": self.acc.num_processes,
                         "group_by_length": cfg.group_by_length,
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
                if saved.get("group_by_length", False) != cfg.group_by_length:
                    raise run_dir.OutputError(f"--resume: --group-by-length was {saved.get('group_by_length', False)} "
                                              f"in {last}; resume with the saved value, or pass --overwrite")
            self.state = load_checkpoint(last, self.raw_model, self.optimizer, self.scheduler)
            self.log(f"resumed from {last} (step {self.state.step})")

    def _batches(self, epoch: int, rank: int | None = None) -> list[list[int]]:
        rank = self.acc.process_index if rank is None else rank
        return epoch_batches(len(self.encoded), self.cfg.batch_size, epoch, self.cfg.seed,
                             self.acc.num_processes, rank, self.lengths)

    @property
    def raw_model(self):
        return self.acc.unwrap_model(self.model)

    # ------------------------------------------------------------ one batch
    def batch_loss(self, idx: list[int], held_out: bool = False):
        """The model's output on samples `idx` (of the held-out set if held_out), and their ids;
        (None, ids) when no sample's media could be read (counted)."""
        pool, encoded = (self.eval_samples, self.eval_encoded) if held_out else (self.samples, self.encoded)
        samples = [pool[i] for i in idx]
        feats, bad = self.feats.media(samples)
        if not held_out:
            self.state.skipped_bad_media += len(bad)
        keep = [i for i in range(len(idx)) if i not in bad]
        if not keep:
            return None, [s.id for s in samples]
        samples = [samples[i] for i in keep]
        feats = {k: [v[i] for i in keep] for k, v in feats.items()}
        batch = collate([encoded[idx[i]] for i in keep])
        dev = self.acc.device
        music = [s.target_caption for s, p in zip(samples, batch["aud_positions"]) if p[0] >= 0]
        target = self.feats.bridge_target(music) if music else None
        with self.acc.autocast():
            out = self.model(batch["tokens"].to(dev), batch["labels"].to(dev), feats=feats,
                             key_mask=batch["key_mask"].to(dev),
                             aud_positions=batch["aud_positions"].to(dev) if music else None,
                             bridge_target=target)
        return out, batch["ids"]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out losses, mean over samples (each batch's mean weighted by its size), all processes."""
        n, rank = self.acc.num_processes, self.acc.process_index
        idx = list(range(len(self.eval_encoded)))
        mine = [idx[i:i + self.cfg.batch_size] for i in range(0, len(idx), self.cfg.batch_size)][rank::n]
        sums = torch.zeros(len(LOSS_KEYS) * 2, dtype=torch.float64)     # (sum, count) per key
        self.model.eval()
        try:
            for b in mine:
                out, ids = self.batch_loss(b, held_out=True)
                if out is None:
                    self.eval_unreadable += len(ids)
                for j, k in enumerate(LOSS_KEYS):
                    v = getattr(out, k) if out is not None else None
                    if v is not None:
                        sums[2 * j] += float(v) * len(b)
                        sums[2 * j + 1] += len(b)
        finally:
            self.model.train()
        total = self.acc.reduce(sums.to(self.acc.device), reduction="sum").cpu()
        return {f"eval_{k}": float(total[2 * j] / total[2 * j + 1])
                for j, k in enumerate(LOSS_KEYS) if total[2 * j + 1] > 0}

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
        self.runlog = RunLog(cfg.out, cfg.stage, st.step, acc.is_main_process)
        st.eval_losses = [e for e in st.eval_losses if e[0] <= st.step]
        from tqdm import tqdm
        bar = tqdm(total=self.total_steps, initial=st.step, desc=f"stage {cfg.stage}", unit="step",
                   disable=not acc.is_main_process, file=sys.stderr)
        try:
            self._loop(bar)
            if self.eval_encoded and (not st.eval_losses or st.eval_losses[-1][0] != st.step):
                self._evaluate_and_log()
        finally:                                  # an error still leaves a clean log and files
            bar.close()
            self.runlog.flush()
        self._save()
        from .trainable import fold_aud_rows
        # FSDP: one sharded copy, gathered whole (a collective: every process calls it)
        full = self.acc.get_state_dict(self.model) if self.fsdp else None
        equal = None if self.fsdp else self._weights_equal_across_processes()
        if acc.is_main_process:
            pad = padding_fraction(self._batches(0, 0), [len(e.tokens) for e in self.encoded])
            summary = {"stage": cfg.stage, "steps": st.step, "final_loss": st.losses[-1] if st.losses else None,
                       "final_eval_loss": st.eval_losses[-1][1] if st.eval_losses else None,
                       "processes": acc.num_processes, "distributed": acc.distributed_type.value,
                       "weights_equal_across_processes": equal,
                       "samples": len(self.encoded), "padding_fraction_epoch0": round(pad, 4),
                       "feature_cache": str(self.feats.cache.root) if self.feats.cache else None,
                       "skipped_nonfinite_batches": st.skipped_nonfinite,
                       "skipped_too_long": st.skipped_too_long, "skipped_bad_media": st.skipped_bad_media}
            (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2))
            save_trained(self.raw_model, cfg.out / "final", self.save_names, tensors=full)
            self.runlog.loss_curve(st.losses, st.eval_losses)
            self.runlog.close()
            held = f", held-out loss {st.eval_losses[-1][1]:.4f}" if st.eval_losses else ""
            self.log(f"done: {st.step} steps, final loss {st.losses[-1]:.4f}{held}; skipped batches with "
                     f"non-finite loss: {st.skipped_nonfinite}; samples skipped: {st.skipped_too_long} too long, "
                     f"{st.skipped_bad_media} unreadable media; weights -> {cfg.out / 'final'}")
        acc.wait_for_everyone()
        if not self.fsdp:
            fold_aud_rows(self.raw_model)         # the model in memory is a plain one again
        return st

    def _evaluate_and_log(self) -> None:
        self.eval_unreadable = 0
        values = self.evaluate()
        if values:
            values["eval_samples_unreadable"] = self.eval_unreadable
            self.state.eval_losses.append([self.state.step, values["eval_loss"]])
            self.runlog.record(self.state.step, values, "eval")

    def _loop(self, bar) -> None:
        cfg, acc, st = self.cfg, self.acc, self.state
        micro, window = 0, []
        while st.step < self.total_steps:
            batches = self._batches(st.epoch)
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
                window.append({k: float(getattr(out, k).detach()) for k in LOSS_KEYS
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
                          for k in LOSS_KEYS if any(k in w for w in window)}
                window = []
                st.losses.append(logged["loss"])
                self.runlog.record(st.step, {"lr": lr, **logged}, "train")
                bar.set_postfix(loss=f"{logged['loss']:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                if cfg.eval_every and self.eval_encoded and st.step % cfg.eval_every == 0:
                    self._evaluate_and_log()
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
        if self.fsdp:
            return
        if self.acc.is_main_process:
            save_checkpoint(self.cfg.out, self.raw_model, self.save_names, self.optimizer, self.scheduler,
                            self.state, keep=self.cfg.keep, settings=self.settings)
        self.acc.wait_for_everyone()
