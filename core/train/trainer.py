"""The training loop: mixed batches, AdamW with warm-up and cosine decay, logs, checkpoints, resume, DDP.

A run folder is always readable: status, logs and weights are written as the run goes (see ``run_dir``). A
resumed run continues at the step after its last saved state and reproduces an uninterrupted run: the sampler's
order for an epoch and each sample's augmentation are functions of (seed, epoch, position), not of history.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.config import Config, load_config
from core.data.augment import build_augmentation
from core.data.cache import PreprocessCache, default_cache_dir
from core.data.crops import CropPolicy
from core.data.dataset import IdridDataset, collate
from core.data.metadata import Metadata, load_metadata, write_metadata
from core.data.preprocess import canvas_preprocess
from core.data.sampling import DistributedWeightedSampler, balanced_gate_weights, weighted_sampler
from core.data.sources import describe, describe_source, require_samples, resolve_metadata, unlabeled_samples
from core.errors import ConfigError, DataError, StudioError
from core.fileio import atomic_write_text
from core.model.backbone import backbone_normalization
from core.model.factory import build_loss, build_model, model_signature
from core.train import distributed
from core.run.state import load_state, save_state, set_rng_state
from core.run.weights import save_weights
from core.run.folder import RunDir
from core.run.logs import append_jsonl, truncate_jsonl
from core.run.status import write_status
from core.train.consistency import MeanTeacher, consistency_loss, consistency_ramp, photometric_perturbation
from core.train.schedule import budget_shortfall, warmup_cosine
from core.train.selection import is_better
from core.train.validation import LossMeter, OutcomeMeter, score
from core.vocabulary import TASKS

log = logging.getLogger("core.train")


class TrainingError(StudioError):
    """Training cannot go on (NaN loss, say); the message says why and what to change."""


@dataclass
class Progress:
    """Counters saved with the state, so a resumed run knows where it is."""

    epoch: int = 0
    step: int = 0  # optimizer steps done in all
    step_in_epoch: int = 0
    best: float | None = None
    best_epoch: int | None = None
    train_sums: dict[str, float] = field(default_factory=dict)
    outcome_sums: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when supported ("auto"); on CPU only when asked for ("bf16"), since CPUs without
    AMX or AVX512-BF16 run it slower than float32."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    moved = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


class Trainer:
    """One run: ``Trainer(config, out).fit()``; ``resume=True`` continues the run folder's saved state."""

    def __init__(self, config: Config, out: Path | str, resume: bool = False, overwrite: bool = False,
                 progress_bar: bool = True) -> None:
        self.config = config
        self.run = RunDir(Path(out))
        self.resume = resume
        self.overwrite = overwrite
        self.progress_bar = progress_bar
        self.stop_requested = False
        self.budget_checked = False
        self.started = time.time()

    # -- set-up ----------------------------------------------------------------------------------------------

    def _prepare_folder(self) -> None:
        run = self.run
        if self.config.model.gate_input == "glance":  # before anything is written
            raise ConfigError("model.gate_input: glance reads the trained decoder's own maps, so it is fitted after "
                              "training: train with gate_input lesions or pooled, then run python -m core fit-gate "
                              "--gate-input glance")
        if self.resume:
            if not run.state.exists():
                raise ConfigError(f"cannot resume {run.path}: it has no saved state ({run.state})")
            return
        if run.weights.exists() and any(run.weights.iterdir()) and not self.overwrite:
            raise ConfigError(f"run folder {run.path} already holds a trained run; use --resume to continue it, "
                              "--overwrite to replace it, or another --out")
        for path in (run.log, run.history, run.state, run.console):
            path.unlink(missing_ok=True)
        run.path.mkdir(parents=True, exist_ok=True)

    def _setup_logging(self) -> None:
        root = logging.getLogger("core")
        root.setLevel(logging.INFO)
        formatter = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
        for handler in list(root.handlers):
            if getattr(handler, "_studio", False):
                root.removeHandler(handler)
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
        if self.dist.is_main:
            handlers.append(logging.FileHandler(self.run.console, encoding="utf-8"))
        for handler in handlers:
            handler.setFormatter(formatter)
            handler._studio = True  # type: ignore[attr-defined]
            root.addHandler(handler)
        root.propagate = False

    def _metadata(self) -> Metadata:
        if self.resume and self.run.metadata.exists():
            return load_metadata(self.run.metadata)
        metadata = resolve_metadata(self.config.data, progress=self.progress_bar and self.dist.is_main)
        if self.dist.is_main:
            write_metadata(metadata.raw, self.run.metadata)
        return metadata

    def _datasets(self, metadata: Metadata) -> None:
        data = self.config.data
        mean, std = backbone_normalization(self.config.model.backbone)
        preprocess = canvas_preprocess(data)
        cache = PreprocessCache(Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir())
        augment = build_augmentation(data.augment, preprocessed_clahe=data.clahe != "none")
        crops = CropPolicy(data.crop_scale, data.crop_probability, data.crop_on_lesion)
        target = self.config.model.gate_target
        self.train_set = IdridDataset(metadata.split("train"), preprocess, mean, std, cache, augment,
                                      seed=self.config.train.seed, crops=crops, gate_target=target)
        self.val_set = IdridDataset(metadata.split("val"), preprocess, mean, std, cache, None, gate_target=target)
        self.unlabeled_set = None
        if self.config.train.consistency > 0:
            pool = unlabeled_samples(data)
            if not pool:
                raise ConfigError(f"train.consistency {self.config.train.consistency} learns from training "
                                  f"photographs without masks, and {describe_source(data)} has none in its train split: "
                                  "set train.consistency=0 or add graded photographs")
            self.unlabeled_set = IdridDataset(pool, preprocess, mean, std, cache, augment,
                                              seed=self.config.train.seed + 1, gate_target=target)
        self.samples_per_epoch = data.samples_per_epoch or len(self.train_set)
        if self.dist.enabled:
            self.sampler = DistributedWeightedSampler(self.train_set.samples, self.dist.world_size, self.dist.rank,
                                                      self.samples_per_epoch, seed=self.config.train.seed,
                                                      segmentation_share=data.segmentation_share)
        else:
            self.sampler = None
        per_rank = math.ceil(self.samples_per_epoch / self.dist.world_size)
        self.steps_per_epoch = max(1, math.ceil(per_rank / self.config.train.batch_size))
        self.total_steps = self.steps_per_epoch * self.config.train.epochs

    def _epoch_indices(self, epoch: int) -> list[int]:
        """The sample order of one epoch on this rank, a pure function of (seed, epoch)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            return list(self.sampler)
        sampler = weighted_sampler(self.train_set.samples, self.samples_per_epoch,
                                   seed=self.config.train.seed * 1_000_003 + epoch,
                                   segmentation_share=self.config.data.segmentation_share)
        return list(sampler)

    def _loader(self, epoch: int, skip_batches: int) -> DataLoader:
        indices = self._epoch_indices(epoch)
        size = self.config.train.batch_size
        batches = [indices[i : i + size] for i in range(0, len(indices), size)][skip_batches:]
        self.train_set.set_epoch(epoch)
        workers = self.config.data.workers
        # A generator of its own: creating a loader must not draw from the global RNG that dropout uses, or a
        # resumed run would drift from an uninterrupted one.
        return DataLoader(self.train_set, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                          persistent_workers=False, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(epoch))

    def _unlabeled_loader(self, epoch: int, skip_batches: int) -> Iterator[dict[str, Any]] | None:
        """This epoch's batches of photographs without masks, one per training step, drawn with replacement as a
        pure function of (seed, epoch) so that a resumed run sees the same ones."""
        if self.unlabeled_set is None:
            return None
        size = self.config.train.unlabeled_batch or self.config.train.batch_size
        generator = torch.Generator().manual_seed(self.config.train.seed * 1_000_003 + epoch + 7)
        indices = torch.randint(len(self.unlabeled_set), (self.steps_per_epoch * size,), generator=generator).tolist()
        batches = [indices[i : i + size] for i in range(0, len(indices), size)][skip_batches:]
        self.unlabeled_set.set_epoch(epoch)
        return iter(DataLoader(self.unlabeled_set, batch_sampler=batches, collate_fn=collate,
                               num_workers=self.config.data.workers, persistent_workers=False,
                               generator=torch.Generator().manual_seed(epoch)))

    def _model(self) -> None:
        train = self.config.train
        model = build_model(self.config.model).to(self.device)
        if train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        gate_weights = None
        if self.config.loss.gate_balance:
            gate_weights = balanced_gate_weights(self.train_set.samples, self.config.model.gate_target,
                                                 self.config.data.segmentation_share)
            log.info("gate loss balanced: segmentation x%.2f, classification x%.2f", *gate_weights)
        self.criterion = build_loss(self.config.loss, gate_weights).to(self.device)
        tasks = {task for s in self.train_set.samples for task, flag in zip(TASKS, s.task_vector) if flag}
        self.single_task = len(tasks) < 2
        if self.single_task:
            # With one task the gate's target is constant: training it teaches nothing and reports a vacuous 100%.
            self.criterion.weights["gate"] = 0.0
            log.info("only %s samples in the train split: the gate and the other expert are not trained",
                     next(iter(tasks)))
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=train.lr)
        self.scheduler = warmup_cosine(self.optimizer, self.total_steps, int(train.warmup_fraction * self.total_steps))
        self.teacher = MeanTeacher(model, train.ema_decay) if self.unlabeled_set is not None else None
        if self.teacher is not None:
            log.info("semi-supervised: %d training photographs without masks, %d a step, consistency weight %g "
                     "(ramped up over %.0f%% of the steps), teacher EMA decay %g", len(self.unlabeled_set),
                     train.unlabeled_batch or train.batch_size, train.consistency, 100 * train.consistency_ramp,
                     train.ema_decay)
        self.ddp_model: torch.nn.Module = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Routing leaves an expert idle when no sample of a batch reaches it.
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                                       find_unused_parameters=True)

    def _restore(self) -> Progress:
        if not self.resume:
            return Progress()
        state = load_state(self.run.state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        if self.teacher is not None:
            if "teacher" in state:
                self.teacher.load_state_dict(state["teacher"])
            else:  # the run trained without consistency until now: the teacher starts from the student
                log.warning("the saved state has no teacher: it starts from the resumed weights")
        progress = Progress(**state["progress"])
        if self.dist.is_main:
            truncate_jsonl(self.run.log, lambda r: r.get("step", 0) <= progress.step)
            truncate_jsonl(self.run.history, lambda r: r.get("epoch", 0) <= progress.epoch)  # 1-based
        log.info("resuming %s at epoch %d, step %d", self.run.path, progress.epoch + 1, progress.step)
        return progress

    # -- saving ----------------------------------------------------------------------------------------------

    def _save_state(self, progress: Progress) -> None:
        if not self.dist.is_main:
            return
        extra = {} if self.teacher is None else {"teacher": self.teacher.state_dict()}
        save_state(self.run.state, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                   scheduler=self.scheduler.state_dict(), progress=vars(progress).copy(),
                   config=self.config.to_dict(), **extra)

    def _save_weights(self, which: str, progress: Progress) -> None:
        if not self.dist.is_main:
            return
        dtype = torch.float16 if self.config.train.weights_dtype == "float16" else torch.float32
        save_weights(self.model, self.run.weights_file(which), model_signature(self.config.model), dtype,
                     extra={"epoch": str(progress.epoch), "step": str(progress.step)})

    def _status(self, state: str, progress: Progress, **extra: Any) -> None:
        if not self.dist.is_main:
            return
        done = progress.step
        elapsed = time.time() - self.started
        rate = elapsed / max(1, done - self.start_step) if done > self.start_step else None
        eta = rate * (self.total_steps - done) if rate is not None else None
        fields = dict(state=state, epoch=progress.epoch, epochs=self.config.train.epochs, step=done,
                      steps=self.total_steps, eta_s=eta, pid=os.getpid(), started=self.started)
        write_status(self.run, **(fields | extra))

    # -- steps -----------------------------------------------------------------------------------------------

    def _train_step(self, batch: dict[str, Any], progress: Progress, meter: LossMeter,
                    unlabeled: dict[str, Any] | None = None) -> dict[str, float]:
        train = self.config.train
        batch = _to(batch, self.device, train.channels_last)
        self.ddp_model.train()
        with autocast_for(self.device, train.amp):
            output = self.ddp_model(batch["image"], route=train.route, task=batch["task_vector"])
            loss, parts = self.criterion(output, batch)
            if unlabeled is not None:
                loss = loss + self._consistency(unlabeled, progress, parts)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {progress.step + 1} (lr "
                                f"{self.scheduler.get_last_lr()[0]:.2e}); lower train.lr or raise train.grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.teacher is not None:
            self.teacher.update(self.model)
        meter.add(parts, len(batch["id"]))
        return parts

    def _consistency(self, unlabeled: dict[str, Any], progress: Progress, parts: dict[str, float]) -> torch.Tensor:
        """The weighted mean-teacher term on one batch without masks; its raw value and weight go to ``parts``."""
        train = self.config.train
        images = _to(unlabeled, self.device, train.channels_last)["image"]
        teacher_probs = self.teacher.lesion_probs(images)
        generator = torch.Generator().manual_seed(train.seed * 1_000_003 + progress.step)
        perturbed = photometric_perturbation(images.cpu(), generator).to(self.device)
        if train.channels_last:
            perturbed = perturbed.contiguous(memory_format=torch.channels_last)
        task = torch.tensor([[1.0, 0.0]], device=self.device).expand(images.shape[0], 2)
        student = self.ddp_model(perturbed, route="oracle", task=task)
        value = consistency_loss(student.seg_logits, teacher_probs)
        weight = train.consistency * consistency_ramp(progress.step, self.total_steps, train.consistency_ramp)
        parts["consistency"] = float(value.detach())
        parts["consistency_weight"] = weight
        return weight * value

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """Val losses (each head on the samples of its task) and outcomes; rank 0 only."""
        if not len(self.val_set):
            return {}
        self.model.eval()
        losses, outcomes = LossMeter(), OutcomeMeter()
        loader = DataLoader(self.val_set, batch_size=self.config.train.batch_size, collate_fn=collate,
                            num_workers=self.config.data.workers, generator=torch.Generator().manual_seed(0))
        for batch in loader:
            batch = _to(batch, self.device, self.config.train.channels_last)
            with autocast_for(self.device, self.config.train.amp):
                output = self.model(batch["image"], route="both")
                _, parts = self.criterion(output, batch)
            losses.add(parts, len(batch["id"]))
            outcomes.add(output, batch)
        metrics = LossMeter.summarise(losses.state(), "val")
        metrics.pop("val/misrouted_rate", None)  # route "both" misroutes nothing; gate_acc says it
        metrics.update(OutcomeMeter.summarise(outcomes.state(), "val"))
        if self.single_task:
            metrics.pop("val/gate_acc", None)
        value = score(metrics)
        if value is not None:
            metrics["val/score"] = value
        return metrics

    def _better(self, value: float | None, best: float | None) -> bool:
        return is_better(value, best, self.config.train.best_metric)

    def _end_epoch(self, progress: Progress, train_seconds: float, images: int, partial: bool) -> dict[str, Any]:
        sums = distributed.reduce_sum(progress.train_sums, self.dist, self.device)
        outcome = distributed.reduce_sum(progress.outcome_sums, self.dist, self.device)
        record: dict[str, Any] = {"epoch": progress.epoch + 1, "step": progress.step,
                                  "lr": self.scheduler.get_last_lr()[0]}
        if partial:
            record["partial"] = True  # a budget ended the run inside this epoch
        record.update(LossMeter.summarise(sums, "train"))
        record.update(OutcomeMeter.summarise(outcome, "train"))
        record["time_s"] = round(train_seconds, 2)
        record["images_per_s"] = round(images * self.dist.world_size / max(1e-9, train_seconds), 2)
        if self.dist.is_main:
            record.update(self._validate())
            metric = record.get(self.config.train.best_metric)
            if self._better(metric, progress.best):
                progress.best, progress.best_epoch = metric, progress.epoch + 1
                self._save_weights("best", progress)
            record["best_epoch"] = progress.best_epoch
            append_jsonl(self.run.history, record)
            self._save_weights("last", progress)
        return record

    # -- the loop --------------------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: Any) -> None:
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            log.info("stop requested (signal %d): finishing this step and saving", signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread (tests): no handlers
                signal.signal(sig, request_stop)

    def _should_stop(self, progress: Progress) -> str | None:
        train = self.config.train
        reason = None
        if self.stop_requested:
            reason = "stopped"
        elif train.max_steps is not None and progress.step >= train.max_steps:
            reason = "max_steps"
        elif train.max_minutes is not None and progress.elapsed_s + time.time() - self.segment_started \
                >= train.max_minutes * 60:
            reason = "max_minutes"
        flag = distributed.broadcast_flag(reason is not None, self.dist, self.device)
        return (reason or "stopped") if flag else None

    def fit(self) -> dict[str, Any]:
        """Train to the end (or to a budget or stop request); returns the last history record."""
        self.device = select_device(self.config.train.device)
        self.dist = distributed.init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.dist.is_main:
            self._prepare_folder()
        distributed.barrier(self.dist)
        self._setup_logging()
        try:
            return self._fit()
        except BaseException as error:
            message = str(error) if isinstance(error, StudioError) else f"{error.__class__.__name__}: {error}"
            if isinstance(error, KeyboardInterrupt):
                message = "interrupted"
            if self.dist.is_main and self.run.path.exists():
                write_status(self.run, state="failed" if message != "interrupted" else "stopped", error=message)
            log.error("training failed: %s", message)
            raise
        finally:
            distributed.shutdown(self.dist)

    def _fit(self) -> dict[str, Any]:
        train = self.config.train
        torch.manual_seed(train.seed)
        if train.threads:
            torch.set_num_threads(train.threads)
        if self.dist.is_main:
            atomic_write_text(self.run.config, self.config.to_yaml())
            write_status(self.run, state="pending", error=None, pid=os.getpid(), started=self.started,
                         budget_warning=None)
        backbone_normalization(self.config.model.backbone)  # an unknown backbone fails before any data work
        metadata = self._metadata()
        require_samples(metadata, "train")
        log.info("data: %s", describe(metadata))
        self._datasets(metadata)
        self._model()
        log.info("model: %s", self.model.summary())
        log.info("device %s, %d thread(s), %d process(es), route %s, %d steps (%d epochs x %d)", self.device,
                 torch.get_num_threads(), self.dist.world_size, train.route, self.total_steps, train.epochs,
                 self.steps_per_epoch)
        progress = self._restore()
        self.start_step = progress.step
        self._install_signal_handlers()
        self.segment_started = time.time()
        record: dict[str, Any] = {}
        stop_reason = None
        while progress.epoch < train.epochs and stop_reason is None:
            record, stop_reason = self._run_epoch(progress)
        if self.dist.enabled:
            checksums = distributed.gather_checksums(self.model, self.dist, self.device)
            if len(set(checksums)) != 1:
                raise TrainingError(f"the {self.dist.world_size} processes ended with different weights "
                                    f"(checksums {checksums}): distributed training went out of sync")
            log.info("weights identical on all %d ranks (checksum %.6f)", self.dist.world_size, checksums[0])
        state = "stopped" if stop_reason == "stopped" else "finished"
        if self.config.train.fit_grader and self.dist.is_main and state == "finished" and self._learned_lesions():
            self._fit_grader()
        if self.config.train.fit_gate and self.dist.is_main and state == "finished" and self._learned_lesions():
            self._fit_gate()
        elif (self.config.model.gate_target == "referable" and self.config.train.gate_sensitivity is not None
                and self.dist.is_main and state == "finished" and not self.single_task):
            self._choose_gate_threshold()
        self._status(state, progress, error=None, stop_reason=stop_reason, best=progress.best, eta_s=0.0,
                     best_epoch=progress.best_epoch)
        log.info("%s at epoch %d, step %d%s", state, progress.epoch, progress.step,
                 f" ({stop_reason})" if stop_reason else "")
        return record

    def _learned_lesions(self) -> bool:
        return any(s.masks is not None for s in self.train_set.samples)

    def _fit_grader(self) -> None:
        """Grades from lesion evidence (core.infer.evidence), fitted on the best weights' segmentation expert: on
        the graded training photographs of its source even when the run trained on masks alone (data.tasks)."""
        from core.train.grader import fit_run_grader

        started = time.time()
        try:
            report = fit_run_grader(self.run.path, weights="best", progress=self.progress_bar)
        except DataError as error:  # no graded photograph in the source: the run keeps its heads' grades
            log.warning("no lesion grader fitted: %s", error)
            return
        val = report.get("val") or {}
        log.info("lesion grader fitted on %d graded photographs in %.0f s%s", report["n_train"], time.time() - started,
                 f"; val DR accuracy {val['dr_accuracy']:.3f}, kappa {val['dr_kappa']:.3f}, DME accuracy "
                 f"{val['dme_accuracy']:.3f}, joint {val['joint_accuracy']:.3f}" if val else "")

    def _fit_gate(self) -> None:
        """The gate and the grade heads fitted onto the best weights (core.train.posthoc); the run then routes."""
        from core.train.posthoc import fit_gate

        started = time.time()
        try:
            report = fit_gate(self.run.path, sensitivity=self.config.train.gate_sensitivity or 0.9,
                              views=self.config.train.fit_gate_views, progress=self.progress_bar)
        except DataError as error:  # too few photographs with masks or grades: the run stays as trained
            log.warning("no gate fitted: %s", error)
            return
        point = report["operating_point"]
        log.info("gate fitted on %d photographs in %.0f s: on %d validation photographs ROC AUC %.3f, threshold "
                 "%.4f, sensitivity %.3f, specificity %.3f, %.0f%% spared the decoder", report["n_train"],
                 time.time() - started, point["n"], point["roc_auc"], point["threshold"], point["sensitivity"],
                 point["specificity"], 100 * point["spared_decoder"])

    def _choose_gate_threshold(self) -> None:
        """The gate's operating point for sensitivity on the validation split (core.train.operating_point)."""
        from core.train.operating_point import choose_gate_threshold

        try:
            report = choose_gate_threshold(self.run.path, "val", self.config.train.gate_sensitivity,
                                           progress=self.progress_bar)
        except DataError as error:  # a split without both kinds of photograph: keep 0.5 and say why
            log.warning("gate threshold left at 0.5: %s", error)
            return
        log.info("gate threshold %.4f on %d validation photographs: sensitivity %.3f, specificity %.3f, ROC AUC "
                 "%.3f, %.0f%% spared the decoder", report["threshold"], report["n"], report["sensitivity"],
                 report["specificity"], report["roc_auc"], 100 * report["spared_decoder"])

    def _run_epoch(self, progress: Progress) -> tuple[dict[str, Any], str | None]:
        train = self.config.train
        epoch_started = time.time()
        meter = LossMeter()
        meter.sums.update(progress.train_sums)
        outcomes_sums = dict(progress.outcome_sums)
        loader = self._loader(progress.epoch, progress.step_in_epoch)
        unlabeled = self._unlabeled_loader(progress.epoch, progress.step_in_epoch)
        steps_before = progress.step
        bar = tqdm(loader, total=self.steps_per_epoch, initial=progress.step_in_epoch, leave=False,
                   desc=f"epoch {progress.epoch + 1}/{train.epochs}", disable=not (self.progress_bar and self.dist.is_main),
                   dynamic_ncols=True)
        self._status("running", progress, error=None)
        images = 0
        stop_reason = None
        for batch in bar:
            step_started = time.time()
            parts = self._train_step(batch, progress, meter, None if unlabeled is None else next(unlabeled))
            progress.step += 1
            progress.step_in_epoch += 1
            images += len(batch["id"])
            gate_n = parts.get("n_gate_samples", len(batch["id"]))  # crops have no gate target
            outcomes_sums["gate_correct"] = outcomes_sums.get("gate_correct", 0.0) + parts.get("gate_acc", 0.0) * gate_n
            outcomes_sums["gate_n"] = outcomes_sums.get("gate_n", 0.0) + gate_n
            progress.train_sums, progress.outcome_sums = meter.state(), outcomes_sums
            rate = len(batch["id"]) / max(1e-9, time.time() - step_started)
            if self.dist.is_main and progress.step % max(1, train.log_every) == 0:
                append_jsonl(self.run.log, {"step": progress.step, "epoch": progress.epoch + 1,
                                            "lr": self.scheduler.get_last_lr()[0], "images_per_s": round(rate, 2),
                                            **{k: round(v, 6) for k, v in parts.items()}})
            shown = {"loss": f"{parts['total']:.3f}"}
            if "gate_acc" in parts:  # absent from a batch of crops only, which the gate does not learn from
                shown["gate"] = f"{parts['gate_acc']:.2f}"
            bar.set_postfix(shown)
            if train.checkpoint_every and progress.step % train.checkpoint_every == 0:
                progress.elapsed_s += time.time() - self.segment_started
                self.segment_started = time.time()
                self._save_state(progress)
            if progress.step % max(1, train.log_every) == 0:  # with the log line: the counter never lags the chart
                self._status("running", progress, error=None)
            stop_reason = self._should_stop(progress)
            if stop_reason is not None:
                break
        bar.close()
        train_seconds = time.time() - epoch_started
        finished = progress.step_in_epoch >= self.steps_per_epoch
        record: dict[str, Any] = {}
        if finished or stop_reason in ("max_steps", "max_minutes"):
            record = self._end_epoch(progress, train_seconds, images, partial=not finished)
            log.info(format_epoch(record))
        elif stop_reason == "stopped" and self.dist.is_main:  # asked to stop mid-epoch: keep what it learned so far
            self._save_weights("last", progress)
        if finished:
            progress.epoch += 1
            progress.step_in_epoch = 0
            progress.train_sums, progress.outcome_sums = {}, {}
        progress.elapsed_s += time.time() - self.segment_started
        self.segment_started = time.time()
        self._save_state(progress)
        if finished:
            self._check_budget(progress, time.time() - epoch_started, progress.step - steps_before)
        return record, stop_reason

    def _check_budget(self, progress: Progress, epoch_seconds: float, epoch_steps: int) -> None:
        """Warn once if train.max_minutes will cut the schedule, at the pace of a whole epoch (validation
        included); the first of several epochs is left out: it also builds the preprocessing cache."""
        if self.budget_checked or not self.dist.is_main or epoch_steps <= 0:
            return
        if progress.epoch == 1 and self.config.train.epochs > 1 and not self.resume:
            return
        self.budget_checked = True
        warning = budget_shortfall(progress.elapsed_s, progress.step, self.total_steps,
                                   epoch_seconds / epoch_steps, self.config.train.max_minutes)
        if warning:
            log.warning(warning)
            write_status(self.run, budget_warning=warning)


def format_epoch(record: dict[str, Any]) -> str:
    keys = ["train/total", "train/gate_acc", "val/total", "val/gate_acc", "val/dr_acc", "val/dme_acc",
            "val/dice_mean", "val/score", "images_per_s"]
    shown = ", ".join(f"{k} {record[k]:.3f}" for k in keys if isinstance(record.get(k), (int, float)))
    return f"epoch {record.get('epoch')}: {shown}"


def train_from_files(config_path: Path | None, overrides: list[str], out: Path | None, resume: bool,
                     overwrite: bool = False) -> dict[str, Any]:
    """The CLI's entry: on resume the run's own saved config is used (overrides still apply)."""
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out, the run folder to continue")
        saved = RunDir(out).config
        if not saved.exists():
            raise ConfigError(f"cannot resume {out}: it has no config.yaml")
        config = load_config(saved, overrides)
    else:
        config = load_config(config_path, overrides)
    out = out or Path("checkpoints") / config.name
    return Trainer(config, out, resume=resume, overwrite=overwrite).fit()
