"""Training: one function, `train(config)`, for one process or many (torchrun / DDP).

Per epoch: training clips (random start, multi-scale crop, flip) -> AdamW steps (gradient accumulation, optional
bf16/fp16 autocast) -> validation on centre clips -> ReduceLROnPlateau on the validation loss -> `metrics.csv`,
TensorBoard, `last.pt` (every epoch) and `best.pt` (best validation top-1), curves as PNG. Only rank 0 writes.

Determinism: the sample order of epoch e is a function of (seed, e) (a seeded DistributedSampler, also with one
process); process r seeds its generators from (seed, r) (rank 0: the seed itself), so processes draw different
dropout and token masks; every checkpoint stores every process's RNG states (its CPU generator and its own GPU's),
so a CPU run killed after epoch k and resumed with as many processes ends with exactly the weights of an
uninterrupted run. Under torchrun only rank 0 reads (`last.pt`, broadcast to the others) and writes the run folder.

Videos that fail to decode are reported through `TrainHooks.on_failure` by name and left out of that batch;
they are never replaced by another sample.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import socket
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, DistributedSampler

from actionbert import runfolder, runtime
from actionbert.checkpoint import inference_config, load_on_main
from actionbert.config import (RunConfig, TrainConfig, config_from_dict, config_to_dict, dump_config,
                               preprocessing_of, resolve, resume_config)
from actionbert.errors import DataError, MissingFileError, UsageError
from actionbert.fileio import atomic_write, atomic_write_text
from actionbert.metrics import topk_correct
from actionbert.models import BertHead, VideoClassifier

METRIC_FIELDS = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr", "failures", "clips_per_s",
                 "seconds"]


@dataclass
class TrainHooks:
    """Callbacks through which the CLI shows progress (the library itself prints nothing)."""

    on_epoch_start: Callable[[int, int], None] = lambda epoch, steps: None
    on_step: Callable[[dict], None] = lambda info: None
    on_epoch_end: Callable[[dict], None] = lambda row: None
    on_failure: Callable[[str, str], None] = lambda video_id, reason: None
    on_message: Callable[[str], None] = lambda text: None


@dataclass
class TrainResult:
    run_dir: Path
    best_top1: float | None  # None: no validation data, best.pt is the last epoch's model
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    failures: int = 0


# ------------------------------------------------------------------------------------------ parameters
NO_DECAY_NAMES = ("cls_token", "pos_embed")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on conv/linear weights only; none on norms, biases, CLS token, positions.

    Backbone and head parameters are kept in separate groups so the backbone can be frozen (lr 0) for the first
    epochs without rebuilding the optimizer.
    """
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "backbone" if name.startswith("backbone.") else "head"
        decay = p.ndim > 1 and not name.endswith(NO_DECAY_NAMES)
        groups.setdefault((part, decay), []).append(p)
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0, "part": part}
            for (part, decay), ps in sorted(groups.items())]


def disable_stochastic_layers(model: nn.Module) -> None:
    """Dropout p = 0 and no BERT token masking: for exact equivalence checks (DDP vs one process)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, BertHead):
            m.mask_prob = 0.0


def set_train_mode(model: nn.Module, *, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


# ------------------------------------------------------------------------------------------------ data
def build_datasets(cfg: RunConfig):
    """(train dataset, val dataset, classes) from the prepared folder `cfg.data.root`."""
    from actionbert.data import VideoClipDataset, load_split

    root = Path(cfg.data.root)
    if not (root / "classes.txt").is_file():
        raise MissingFileError(f"{root}: no classes.txt; run `actionbert prepare DATA --out {root}` first")
    train_samples, classes = load_split(root, "train")
    if len(classes) < 2:
        raise DataError(f"{root / 'classes.txt'}: {len(classes)} class(es) {classes}; classification needs at least "
                        "2 classes (add videos of another class and run `actionbert prepare` again)")
    if not train_samples:
        raise DataError(f"{root / 'train.csv'}: no training videos; run `actionbert prepare` again")
    val_samples, _ = load_split(root, cfg.data.val_split)
    pre = preprocessing_of(cfg)  # the one record: transforms, decoding, cache check, and the checkpoints
    train_ds = VideoClipDataset(train_samples, mode="train", preprocessing=pre, seed=cfg.train.seed)
    val_ds = VideoClipDataset(val_samples, mode="val", preprocessing=pre, seed=cfg.train.seed)
    return train_ds, val_ds, classes


def make_loader(dataset, *, batch_size: int, shuffle: bool, seed: int, info: runtime.DistInfo, workers: int,
                drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    """Training: a seeded DistributedSampler (also for one process), so the order of epoch e depends only on
    (seed, e) and the union of the processes' batches equals one process's batch of the same global size.
    Validation (`shuffle=False`): each process takes every world_size-th clip, without the padding
    DistributedSampler adds, so every clip is counted exactly once. `pin_memory` (for CUDA) lets the
    `non_blocking` copies to the GPU overlap with compute. Workers are not persistent: each epoch's workers
    start from the dataset after its `set_epoch`."""
    from actionbert.data import collate_clips

    if shuffle:
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                                     drop_last=drop_last)
    else:
        sampler = list(range(info.rank, len(dataset), info.world_size))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_clips, drop_last=drop_last, pin_memory=pin_memory)


# ----------------------------------------------------------------------------------------------- train
NO_VALIDATION = "last epoch (no validation data)"


def train(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
          hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) the run described by `cfg`; returns the best validation top-1 and the history.

    A run folder that already holds a run is refused unless `resume` (continue it from `last.pt`) or
    `overwrite` (delete its run files first); see `actionbert.runfolder`.
    """
    hooks = hooks or TrainHooks()
    device = runtime.select_device(cfg.train.device)  # under torchrun: GPU LOCAL_RANK
    runtime.resolve_precision(device, cfg.train.precision)  # an impossible precision (fp16 on a CPU): said now
    info = runtime.init_distributed(device.type, timeout_s=cfg.train.dist_timeout_s)
    try:
        return _train(cfg, resume=resume, overwrite=overwrite, hooks=hooks, device=device, info=info)
    except RuntimeError as e:
        failure = runtime.collective_failure(e, info, cfg.train.dist_timeout_s)
        if failure is None:
            raise
        raise failure from e
    finally:
        runtime.shutdown_distributed()


def _settle(cfg: RunConfig, device: torch.device, info: runtime.DistInfo, hooks: TrainHooks):
    """(the config with precision and class count resolved, (train dataset, val dataset, classes)); seeds this
    process. A dataset problem on any process stops every process."""
    from actionbert.data.dataset import check_visible

    precision, note = runtime.resolve_precision(device, cfg.train.precision)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))
    if note and info.is_main:
        hooks.on_message(f"note: {note}")
    runtime.seed_everything(cfg.train.seed, rank=info.rank)  # each process draws its own dropout and masks
    error = datasets = None
    try:
        datasets = build_datasets(cfg)
        if info.enabled:  # every machine must see the videos; a single process skips missing ones one by one
            check_visible(datasets[0].samples, where=f"{socket.gethostname()} (rank {info.rank})")
    except (FileNotFoundError, ValueError) as e:
        error = e
    runtime.raise_together(error, device, info)
    return resolve(cfg, num_classes=len(datasets[2])), datasets


def _load_pretrained(model: VideoClassifier, t: TrainConfig, *, hooks: TrainHooks,
                     info: runtime.DistInfo) -> None:
    """Start from `t.pretrained`, a file or a registry name; a named file is downloaded once, by rank 0."""
    from actionbert import hub
    from actionbert.weights import load_weights

    if info.enabled:
        if info.is_main:
            hub.resolve(t.pretrained)
        runtime.barrier(info)  # the other processes then read rank 0's cache
    report = load_weights(model, t.pretrained, source=t.pretrained_source)
    if info.is_main:
        hooks.on_message(report.summary())


def _train(cfg: RunConfig, *, resume: bool, overwrite: bool, hooks: TrainHooks, device: torch.device,
           info: runtime.DistInfo) -> TrainResult:
    run_dir = Path(cfg.train.out)
    ckpt = None
    if resume:
        # rank 0 reads last.pt and broadcasts it: the other processes (machines) need no copy of the run folder
        ckpt = load_on_main(runfolder.resume_checkpoint(run_dir) if info.is_main else run_dir / "last.pt", info,
                            missing="nothing to resume (no last checkpoint in the run folder)")
        cfg, changes = resume_config(config_from_dict(ckpt["config"], where=str(run_dir / "last.pt")), cfg)
        if info.is_main and changes:
            hooks.on_message("resume: " + "; ".join(changes))
    cfg, (train_ds, val_ds, classes) = _settle(cfg, device, info, hooks)
    if cfg.model.num_classes != len(classes):
        raise DataError(f"model.num_classes={cfg.model.num_classes} but the dataset {cfg.data.root} has "
                        f"{len(classes)} classes; remove model.num_classes from the config to use the dataset's")
    if info.is_main and not len(val_ds):
        hooks.on_message(f"no validation videos in {Path(cfg.data.root) / (cfg.data.val_split + '.csv')}: best.pt "
                         "will be the last epoch's model, the learning rate is not lowered on plateau and early "
                         "stopping is off")
    claim = runfolder.claim(run_dir, resume=resume, overwrite=overwrite) if info.is_main else nullcontext([])
    with claim as notes:
        for note in notes:
            hooks.on_message(note)
        parts = _build(cfg, ckpt, device, info, hooks)
        progress = _progress(ckpt, parts, run_dir, device, info, hooks, cfg.train.seed)
        writer = _start_run_folder(run_dir, cfg, classes) if info.is_main else None
        try:
            return _fit(cfg, parts, progress, train_ds, val_ds, classes, run_dir, device, info, hooks, writer)
        finally:
            if writer is not None:
                writer.close()


@dataclass
class _Parts:
    """The model (DDP-wrapped or not), its unwrapped core and what optimises it."""

    model: nn.Module
    core: VideoClassifier
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    memory_format: torch.memory_format


@dataclass
class _Progress:
    """Where the run stands: what checkpoints record besides the model and optimizer states."""

    start_epoch: int = 0
    best_top1: float | None = -1.0  # None: no validation data (best.pt = last epoch)
    best_epoch: int = -1
    stale: int = 0
    history: list[dict] = field(default_factory=list)


def _build(cfg: RunConfig, ckpt: dict | None, device: torch.device, info: runtime.DistInfo,
           hooks: TrainHooks) -> _Parts:
    t = cfg.train
    model = VideoClassifier(cfg.model)
    if t.pretrained and ckpt is None:
        _load_pretrained(model, t, hooks=hooks, info=info)
    if t.deterministic_layers:
        disable_stochastic_layers(model)
    if t.sync_bn:
        if device.type != "cuda":
            raise UsageError("train.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last_3d if t.channels_last else torch.contiguous_format
    model = model.to(device=device, dtype=runtime.param_dtype(t.precision), memory_format=memory_format)
    core: VideoClassifier = model
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # the fused kernel is the same update in one pass over the parameters (7-10% per step on CPU here)
    optimizer = torch.optim.AdamW(param_groups(core, t.weight_decay), lr=t.lr, fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=t.plateau_factor,
                                                           patience=t.plateau_patience)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    if ckpt is not None:
        core.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
    return _Parts(model, core, optimizer, scheduler, scaler, memory_format)


def _progress(ckpt: dict | None, parts: _Parts, run_dir: Path, device: torch.device, info: runtime.DistInfo,
              hooks: TrainHooks, seed: int) -> _Progress:
    """The run's standing from `last.pt` (or a fresh one), after `runfolder.repair` made the folder consistent."""
    lost = 0.0
    if info.is_main:
        notes, best_lost = runfolder.repair(run_dir, ckpt)
        for note in notes:
            hooks.on_message(note)
        lost = float(best_lost)
    lost = runtime.all_reduce_sum([lost], device, info)[0]  # every process must select best.pt alike
    if ckpt is None:
        return _Progress()
    progress = _Progress(start_epoch=ckpt["epoch"] + 1, best_top1=ckpt["best_top1"], best_epoch=ckpt["best_epoch"],
                         stale=ckpt["stale_epochs"], history=list(ckpt["history"]))
    if lost:
        progress.best_top1, progress.best_epoch = -1.0, -1
    note = runtime.restore_rng_states(ckpt["rng"], device, info, seed=seed, epoch=progress.start_epoch)
    if note and info.is_main:
        hooks.on_message(note)
    return progress


def _start_run_folder(run_dir: Path, cfg: RunConfig, classes: list[str]) -> Any:
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    atomic_write_text(run_dir / "classes.txt", "\n".join(classes) + "\n")
    return _tensorboard(run_dir)


def _fit(cfg: RunConfig, parts: _Parts, progress: _Progress, train_ds, val_ds, classes: list[str], run_dir: Path,
         device: torch.device, info: runtime.DistInfo, hooks: TrainHooks, writer) -> TrainResult:
    t, p = cfg.train, progress
    pin = device.type == "cuda"
    train_loader = make_loader(train_ds, batch_size=t.batch_size, shuffle=True, seed=t.seed, info=info,
                               workers=cfg.data.num_workers, drop_last=len(train_ds) >= t.batch_size * info.world_size,
                               pin_memory=pin)
    val_loader = make_loader(val_ds, batch_size=t.batch_size, shuffle=False, seed=t.seed, info=info,
                             workers=cfg.data.num_workers, pin_memory=pin)
    infer = inference_config(parts.core, classes=classes, preprocessing=train_ds.preprocessing)
    has_val, total_failures = len(val_ds) > 0, 0
    if p.start_epoch >= t.epochs and info.is_main:
        hooks.on_message(f"the run already has {p.start_epoch} epoch(s) and train.epochs is {t.epochs}: nothing to "
                         "train (raise --epochs to continue)")
    for epoch in range(p.start_epoch, t.epochs):
        row = _run_epoch(epoch, parts, train_loader, val_loader if has_val else None, cfg, device, info, hooks)
        total_failures += row["failures"]
        p.history.append(row)
        improved = not has_val or row["val_top1"] > (p.best_top1 if p.best_top1 is not None else -1.0)
        if improved:
            p.best_top1, p.best_epoch, p.stale = (row["val_top1"] if has_val else None), epoch, 0
        else:
            p.stale += 1
        rng = runtime.gather_rng_states(device, info)  # collective: every process's own generators
        if info.is_main:
            state = _checkpoint_state(epoch, parts, cfg, infer, classes, p, has_val, rng)
            runfolder.save_epoch(run_dir, state, improved=improved)
            _log_epoch(run_dir, cfg, p.history, row, writer)
        hooks.on_epoch_end(row)
        runtime.barrier(info)
        if has_val and t.early_stopping and p.stale >= t.early_stopping:
            break
    return TrainResult(run_dir=run_dir, best_top1=p.best_top1, best_epoch=p.best_epoch, history=p.history,
                       failures=total_failures)


def _run_epoch(epoch: int, parts: _Parts, train_loader, val_loader, cfg: RunConfig, device: torch.device,
               info: runtime.DistInfo, hooks: TrainHooks) -> dict:
    """One epoch of training and validation (`val_loader` None: no validation data); the metrics.csv row."""
    t = cfg.train
    _set_lrs(parts.optimizer, t, epoch)
    train_loader.sampler.set_epoch(epoch)
    if hasattr(train_loader.dataset, "set_epoch"):
        train_loader.dataset.set_epoch(epoch)
    t0 = time.perf_counter()
    steps = len(train_loader) if not t.max_steps_per_epoch else min(len(train_loader), t.max_steps_per_epoch)
    hooks.on_epoch_start(epoch, steps)
    tr = _train_epoch(parts.model, parts.core, train_loader, parts.optimizer, parts.scaler, cfg, device, info, hooks,
                      steps, parts.memory_format)
    if not tr["count"]:
        raise DataError(f"epoch {epoch}: none of the training clips could be decoded ({tr['failures']} failed, "
                        "see the warnings above), so nothing was trained and no checkpoint was written for this "
                        f"epoch; check the videos listed in {cfg.data.root}/train.csv (run `actionbert prepare` again)")
    va = {"loss": None, "top1": None, "failures": 0}
    if val_loader is not None:
        # without SyncBN each process has updated its own BatchNorm statistics: validate with rank 0's, the ones
        # the checkpoint saves, so the reported top-1 is that of the saved model
        runtime.broadcast_buffers(parts.core, info)
        va = evaluate_loader(parts.core, val_loader, device=device, info=info, precision=t.precision,
                             memory_format=parts.memory_format, hooks=hooks)
        if not va["count"]:
            raise DataError(f"epoch {epoch}: none of the validation clips could be decoded ({va['failures']} "
                            f"failed), so there is nothing to select best.pt on; check the videos listed in "
                            f"{cfg.data.root}/{cfg.data.val_split}.csv")
        if epoch >= t.warmup_epochs:
            parts.scheduler.step(va["loss"])
    return {"epoch": epoch, "train_loss": tr["loss"], "train_top1": tr["top1"], "val_loss": va["loss"],
            "val_top1": va["top1"], "lr": parts.optimizer.param_groups[-1]["lr"],
            "failures": tr["failures"] + va["failures"], "clips_per_s": tr["clips"] / max(tr["seconds"], 1e-9),
            "seconds": time.perf_counter() - t0}


def _checkpoint_state(epoch: int, parts: _Parts, cfg: RunConfig, infer: dict, classes: list[str], p: _Progress,
                      has_val: bool, rng: list) -> dict:
    return {"epoch": epoch, "model_state": {k: v.detach().cpu() for k, v in parts.core.state_dict().items()},
            "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict(), "rng": rng, "config": config_to_dict(cfg),
            "inference": infer, "classes": classes, "best_top1": p.best_top1, "best_epoch": p.best_epoch,
            "selected_by": "val_top1" if has_val else NO_VALIDATION, "stale_epochs": p.stale, "history": p.history}


def _log_epoch(run_dir: Path, cfg: RunConfig, history: list[dict], row: dict, writer) -> None:
    _write_metrics(run_dir / "metrics.csv", history)
    if writer is not None:
        for k in ("train_loss", "train_top1", "val_loss", "val_top1", "lr", "clips_per_s"):
            if row[k] is not None:
                writer.add_scalar(k, row[k], row["epoch"])
        writer.flush()
    from actionbert.plots import plot_curves

    plot_curves(history, run_dir / "curves.png", title=f"{cfg.model.backbone} + {cfg.model.head}")


def _set_lrs(optimizer, t, epoch: int) -> None:
    """Learning rate for this epoch: linear warm-up from lr/100, then the plateau scheduler's value (kept in the
    head groups); backbone groups get lr 0 while the backbone is frozen."""
    if epoch < t.warmup_epochs:
        lr = t.lr * (0.01 + 0.99 * epoch / t.warmup_epochs)
    elif epoch == t.warmup_epochs and t.warmup_epochs:
        lr = t.lr
    else:
        lr = max(g["lr"] for g in optimizer.param_groups if g["part"] == "head")
    for g in optimizer.param_groups:
        g["lr"] = 0.0 if g["part"] == "backbone" and epoch < t.freeze_backbone_epochs else lr


def _train_epoch(model, core, loader, optimizer, scaler, cfg, device, info, hooks, steps, memory_format) -> dict:
    """One epoch of optimizer steps. Each step first sums the clip counts of all processes, so that
    - every clip weighs the same in the averaged gradient, however the clips are spread over the processes (a
      process whose videos failed to decode contributes fewer, or none);
    - a process without any clip still runs the backward pass DDP waits for, on a stand-in that changes nothing;
    - a step without a clip on any process is skipped by all of them (no optimizer step on zero gradients)."""
    t = cfg.train
    set_train_mode(model, freeze_bn=t.freeze_bn)
    loss_sum = correct = count = failures = 0.0
    clips, busy, window = 0, 0.0, 0.0  # window: clips of all processes since the last optimizer step
    optimizer.zero_grad(set_to_none=True)
    it = iter(loader)
    for step in range(steps):
        batch = next(it)
        for video_id, reason in batch.get("failures", []):
            failures += 1
            hooks.on_failure(video_id, reason)
        t0 = time.perf_counter()
        sync_now = (step + 1) % t.accumulation == 0 or step + 1 == steps
        n_local = 0 if batch.get("video") is None else int(batch["label"].numel())
        n_total = runtime.all_reduce_sum([n_local], device, info)[0]
        window += n_total
        out = None
        if n_total or (sync_now and window and info.enabled):  # the latter: all-reduce the window's gradients
            out = _forward_backward(model, core, batch, n_local, n_total, cfg, device, info, scaler, sync_now,
                                    memory_format)
        if sync_now:
            if window:
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            window = 0.0
        if out is not None:
            loss, logits, labels = out
            loss_sum += loss.item() * n_local
            correct += topk_correct(logits.detach(), labels)
            count += n_local
            clips += n_local
        busy += time.perf_counter() - t0
        hooks.on_step({"step": step + 1, "steps": steps, "loss": loss_sum / max(count, 1),
                       "top1": 100 * correct / max(count, 1), "clips_per_s": clips / max(busy, 1e-9)})
    loss_sum, correct, count, failures = runtime.all_reduce_sum([loss_sum, correct, count, failures], device, info)
    return {"loss": loss_sum / max(count, 1), "top1": 100 * correct / max(count, 1), "failures": int(failures),
            "clips": clips * info.world_size, "seconds": busy, "count": int(count)}


def _forward_backward(model, core, batch, n_local: int, n_total: float, cfg, device, info, scaler, sync_now: bool,
                      memory_format):
    """Forward and backward of one batch; (loss, logits, labels), or None for a stand-in.

    The loss is weighted by n_local x world_size / n_total: DDP averages the processes' gradients, so this
    makes the step's gradient the mean over all of its clips. A process without clips runs a stand-in: an empty
    batch (zero gradients) in eval mode (no BatchNorm statistic, dropout or token mask is touched), except for
    SyncBatchNorm layers, which must join their collective and add a count of 0 to it.
    """
    t = cfg.train
    stand_in = not n_local
    if stand_in:
        video = torch.zeros(0, 3, cfg.model.clip_len, cfg.model.input_size, cfg.model.input_size)
        labels = torch.zeros(0, dtype=torch.long)
    else:
        video, labels = batch["video"], batch["label"]
    video = video.to(device, runtime.param_dtype(t.precision), non_blocking=True)
    video = video.contiguous(memory_format=memory_format)
    labels = labels.to(device)
    sync = model.no_sync() if info.enabled and not sync_now else nullcontext()
    with sync, (_stand_in_mode(core) if stand_in else nullcontext()):
        with runtime.autocast(device, t.precision):
            logits = model(video)
            logits = logits.to(runtime.param_dtype(t.precision))  # the loss in fp32 (fp64) under autocast
            if stand_in:
                loss, objective = None, logits.sum()  # 0, and exactly zero gradients
            else:
                loss = F.cross_entropy(logits, labels, label_smoothing=t.label_smoothing)
                objective = loss * (n_local * info.world_size / n_total)
        scaler.scale(objective / t.accumulation).backward()
    return None if stand_in else (loss, logits, labels)


@contextmanager
def _stand_in_mode(module: nn.Module):
    """Every submodule but SyncBatchNorm in eval mode for the duration, then each back in its mode."""
    modes = [(m, m.training) for m in module.modules()]
    for m in module.modules():
        m.training = isinstance(m, nn.SyncBatchNorm) and m.training
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom")  # the empty batch
            yield
    finally:
        for m, mode in modes:
            m.training = mode


@torch.inference_mode()
def evaluate_loader(model, loader, *, device, info: runtime.DistInfo, precision: str = "fp32",
                    memory_format=torch.contiguous_format, hooks: TrainHooks | None = None) -> dict:
    """Clip-level loss and top-1 over a loader of single clips (validation during training)."""
    model.eval()
    loss_sum = correct = count = failures = 0.0
    for batch in loader:
        for video_id, reason in batch.get("failures", []):
            failures += 1
            if hooks:
                hooks.on_failure(video_id, reason)
        if batch.get("video") is None:
            continue
        video = batch["video"].to(device, runtime.param_dtype(precision)).contiguous(memory_format=memory_format)
        labels = batch["label"].to(device)
        with runtime.autocast(device, precision):
            logits = model(video).to(runtime.param_dtype(precision))
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += topk_correct(logits, labels)
        count += labels.numel()
    loss_sum, correct, count, failures = runtime.all_reduce_sum([loss_sum, correct, count, failures], device, info)
    return {"loss": loss_sum / count if count else math.nan, "top1": 100 * correct / count if count else 0.0,
            "failures": int(failures), "count": int(count)}


def _write_metrics(path: Path, history: list[dict]) -> None:
    """metrics.csv, written atomically; an undefined value (no validation data) is an empty cell."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            w.writeheader()
            for row in history:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else "" if v is None else v)
                            for k, v in row.items()})

    atomic_write(path, write)


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
