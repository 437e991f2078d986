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

from actionbert import runtime
from actionbert.checkpoint import inference_config, load_on_main, save_checkpoint
from actionbert.config import RunConfig, config_from_dict, config_to_dict, dump_config, resolve, transform_resize
from actionbert.metrics import topk_correct
from actionbert.models import BertHead, VideoClassifier, get_backbone_spec

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
    best_top1: float
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
    from actionbert.data import VideoClipDataset, eval_transform, load_split, train_transform

    root = Path(cfg.data.root)
    if not (root / "classes.txt").is_file():
        raise FileNotFoundError(f"{root}: no classes.txt; run `actionbert prepare DATA --out {root}` first")
    train_samples, classes = load_split(root, "train")
    val_samples, _ = load_split(root, cfg.data.val_split)
    d, m = cfg.data, cfg.model
    look = dict(resize=transform_resize(d.resize, d.keep_aspect), crop_size=m.input_size,
                norm=d.norm or get_backbone_spec(m.backbone).norm)
    common = dict(clip_len=m.clip_len, frame_stride=d.frame_stride, seed=cfg.train.seed)
    train_ds = VideoClipDataset(train_samples, mode="train", **common,
                                transform=train_transform(**look, flip_p=d.hflip, scales=d.crop_scales))
    val_ds = VideoClipDataset(val_samples, mode="val", transform=eval_transform(**look), **common)
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
def train(cfg: RunConfig, *, resume: bool = False, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) the run described by `cfg`; returns the best validation top-1 and the history."""
    hooks = hooks or TrainHooks()
    device = runtime.select_device(cfg.train.device)
    with runtime.distributed(device.type) as info:
        return _train(cfg, resume=resume, hooks=hooks, device=device, info=info)


@dataclass
class _Progress:
    """Where a run stands: the state a checkpoint carries besides weights and optimizer."""

    start_epoch: int = 0
    best_top1: float = -1.0
    best_epoch: int = -1
    stale: int = 0
    history: list[dict] = field(default_factory=list)


def _train(cfg: RunConfig, *, resume: bool, hooks: TrainHooks, device: torch.device,
           info: runtime.DistInfo) -> TrainResult:
    # rank 0 reads last.pt and broadcasts it: the other processes (machines) need no copy of the run folder
    ckpt = load_on_main(Path(cfg.train.out) / "last.pt", info, missing="nothing to resume (no last checkpoint in "
                        "the run folder)") if resume else None
    if ckpt is not None:
        saved = config_from_dict(ckpt["config"], where=str(Path(cfg.train.out) / "last.pt"))
        # the run continues with its own config; only the epoch budget may be raised on resume
        cfg = dataclasses.replace(saved, train=dataclasses.replace(saved.train, epochs=cfg.train.epochs))
    cfg, (train_ds, val_ds, classes) = _settle(cfg, device, info, hooks)
    t = cfg.train
    model, core, memory_format = _build_model(cfg, device, info, hooks, pretrained=ckpt is None)
    # the fused kernel is the same update in one pass over the parameters (7-10% per step on CPU here)
    optimizer = torch.optim.AdamW(param_groups(core, t.weight_decay), lr=t.lr, fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=t.plateau_factor,
                                                           patience=t.plateau_patience)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    progress = _Progress()
    if ckpt is not None:
        progress = _restore(ckpt, core, optimizer, scheduler, scaler, cfg, device, info, hooks)
    train_loader, val_loader = _loaders(train_ds, val_ds, cfg, info, pin_memory=device.type == "cuda")
    writer = _start_run_folder(cfg, classes) if info.is_main else None
    infer = inference_config(core, classes=classes, frame_stride=cfg.data.frame_stride, resize=cfg.data.resize,
                             keep_aspect=cfg.data.keep_aspect, norm=cfg.data.norm, hflip=cfg.data.hflip)
    fixed = {"config": config_to_dict(cfg), "inference": infer, "classes": classes}
    total_failures = 0
    for epoch in range(progress.start_epoch, t.epochs):
        _set_lrs(optimizer, t, epoch)
        train_loader.sampler.set_epoch(epoch)
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        t0 = time.perf_counter()
        steps = len(train_loader) if not t.max_steps_per_epoch else min(len(train_loader), t.max_steps_per_epoch)
        hooks.on_epoch_start(epoch, steps)
        tr = _train_epoch(model, core, train_loader, optimizer, scaler, cfg, device, info, hooks, steps, memory_format)
        # without SyncBN each process has updated its own BatchNorm statistics: validate with rank 0's, the ones
        # the checkpoint saves, so the reported top-1 is that of the saved model
        runtime.broadcast_buffers(core, info)
        va = evaluate_loader(core, val_loader, device=device, info=info, precision=t.precision,
                             memory_format=memory_format, hooks=hooks)
        if epoch >= t.warmup_epochs:
            scheduler.step(va["loss"])
        row = _epoch_row(epoch, tr, va, optimizer, time.perf_counter() - t0)
        total_failures += row["failures"]
        improved = _record(progress, row)
        rng = runtime.gather_rng_states(device, info)  # collective: every process's own generators
        if info.is_main:
            state = {"epoch": epoch, "model_state": {k: v.detach().cpu() for k, v in core.state_dict().items()},
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rng, **fixed, "best_top1": progress.best_top1,
                     "best_epoch": progress.best_epoch, "stale_epochs": progress.stale, "history": progress.history}
            _save_epoch(cfg, state, row, improved, writer)
        hooks.on_epoch_end(row)
        runtime.barrier(info)
        if t.early_stopping and progress.stale >= t.early_stopping:
            break
    if writer is not None:
        writer.close()
    return TrainResult(run_dir=Path(t.out), best_top1=progress.best_top1, best_epoch=progress.best_epoch,
                       history=progress.history, failures=total_failures)


def _settle(cfg: RunConfig, device: torch.device, info: runtime.DistInfo, hooks: TrainHooks):
    """(the config with precision and class count resolved, (train dataset, val dataset, classes)); seeds this
    process. A dataset problem on any process stops every process."""
    from actionbert.data.dataset import check_visible

    precision, note = runtime.resolve_precision(device, cfg.train.precision)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))
    if note and info.is_main:
        hooks.on_message(note)
    runtime.seed_everything(cfg.train.seed, rank=info.rank)  # each process draws its own dropout and masks
    error = datasets = None
    try:
        datasets = build_datasets(cfg)
        if info.enabled:  # every machine must see the videos; a single process skips missing ones one by one
            check_visible(datasets[0].samples, where=f"{socket.gethostname()} (rank {info.rank})")
    except (FileNotFoundError, ValueError) as e:
        error = e
    runtime.raise_together(error, device, info)
    cfg = resolve(cfg, num_classes=len(datasets[2]))
    if cfg.model.num_classes != len(datasets[2]):
        raise ValueError(f"model.num_classes={cfg.model.num_classes} but the dataset has {len(datasets[2])} classes")
    return cfg, datasets


def _loaders(train_ds, val_ds, cfg: RunConfig, info: runtime.DistInfo, *, pin_memory: bool):
    t, workers = cfg.train, cfg.data.num_workers
    return (make_loader(train_ds, batch_size=t.batch_size, shuffle=True, seed=t.seed, info=info, workers=workers,
                        drop_last=len(train_ds) >= t.batch_size * info.world_size, pin_memory=pin_memory),
            make_loader(val_ds, batch_size=t.batch_size, shuffle=False, seed=t.seed, info=info, workers=workers,
                        pin_memory=pin_memory))


def _build_model(cfg: RunConfig, device: torch.device, info: runtime.DistInfo, hooks: TrainHooks, *,
                 pretrained: bool) -> tuple[nn.Module, VideoClassifier, torch.memory_format]:
    """(the model to train: DDP-wrapped under torchrun, the bare model, its memory format)."""
    t = cfg.train
    model = VideoClassifier(cfg.model)
    if t.pretrained and pretrained:
        from actionbert.weights import load_weights

        report = load_weights(model, t.pretrained, source=t.pretrained_source or "actionbert")
        if info.is_main:
            hooks.on_message(report.summary())
    if t.deterministic_layers:
        disable_stochastic_layers(model)
    if t.sync_bn:
        if device.type != "cuda":
            raise ValueError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last_3d if t.channels_last else torch.contiguous_format
    core = model.to(device=device, memory_format=memory_format)
    if not info.enabled:
        return core, core, memory_format
    ddp = nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    return ddp, core, memory_format


def _restore(ckpt: dict, core, optimizer, scheduler, scaler, cfg: RunConfig, device: torch.device,
             info: runtime.DistInfo, hooks: TrainHooks) -> _Progress:
    core.load_state_dict(ckpt["model_state"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    progress = _Progress(start_epoch=ckpt["epoch"] + 1, best_top1=ckpt["best_top1"], best_epoch=ckpt["best_epoch"],
                         stale=ckpt["stale_epochs"], history=list(ckpt["history"]))
    note = runtime.restore_rng_states(ckpt["rng"], device, info, seed=cfg.train.seed, epoch=progress.start_epoch)
    if note and info.is_main:
        hooks.on_message(note)
    return progress


def _start_run_folder(cfg: RunConfig, classes: list[str]) -> Any:
    run_dir = Path(cfg.train.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    (run_dir / "classes.txt").write_text("\n".join(classes) + "\n")
    return _tensorboard(run_dir)


def _epoch_row(epoch: int, tr: dict, va: dict, optimizer, seconds: float) -> dict:
    return {"epoch": epoch, "train_loss": tr["loss"], "train_top1": tr["top1"], "val_loss": va["loss"],
            "val_top1": va["top1"], "lr": optimizer.param_groups[-1]["lr"], "failures": tr["failures"] + va["failures"],
            "clips_per_s": tr["clips"] / max(tr["seconds"], 1e-9), "seconds": seconds}


def _record(progress: _Progress, row: dict) -> bool:
    """Add the epoch to the history; True if its validation top-1 is the best so far."""
    progress.history.append(row)
    improved = row["val_top1"] > progress.best_top1
    if improved:
        progress.best_top1, progress.best_epoch, progress.stale = row["val_top1"], row["epoch"], 0
    else:
        progress.stale += 1
    return improved


def _save_epoch(cfg: RunConfig, state: dict, row: dict, improved: bool, writer) -> None:
    """Rank 0: last.pt (and best.pt), metrics.csv, TensorBoard scalars, curves.png."""
    run_dir = Path(cfg.train.out)
    save_checkpoint(run_dir / "last.pt", state)
    if improved:
        save_checkpoint(run_dir / "best.pt", state)
    _write_metrics(run_dir / "metrics.csv", state["history"])
    if writer is not None:
        for k in ("train_loss", "train_top1", "val_loss", "val_top1", "lr", "clips_per_s"):
            writer.add_scalar(k, row[k], row["epoch"])
        writer.flush()
    from actionbert.plots import plot_curves

    plot_curves(state["history"], run_dir / "curves.png", title=f"{cfg.model.backbone} + {cfg.model.head}")


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
            "clips": clips * info.world_size, "seconds": busy}


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
    video = video.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    labels = labels.to(device)
    sync = model.no_sync() if info.enabled and not sync_now else nullcontext()
    with sync, (_stand_in_mode(core) if stand_in else nullcontext()):
        with runtime.autocast(device, t.precision):
            logits = model(video)
            if stand_in:
                loss, objective = None, logits.float().sum()  # 0, and exactly zero gradients
            else:
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=t.label_smoothing)
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
        video = batch["video"].to(device).contiguous(memory_format=memory_format)
        labels = batch["label"].to(device)
        with runtime.autocast(device, precision):
            logits = model(video).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += topk_correct(logits, labels)
        count += labels.numel()
    loss_sum, correct, count, failures = runtime.all_reduce_sum([loss_sum, correct, count, failures], device, info)
    return {"loss": loss_sum / count if count else math.nan, "top1": 100 * correct / count if count else 0.0,
            "failures": int(failures)}


def _write_metrics(path: Path, history: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
