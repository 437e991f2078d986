"""Setting a run up: the resolved config and datasets, the model (pretrained or resumed) with its optimizer,
scheduler and scaler, and the standing restored from `last.pt`."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import torch
from torch import nn

from actionbert import runfolder, runtime
from actionbert.config import RunConfig, TrainConfig, resolve
from actionbert.errors import UsageError
from actionbert.models import BertHead, VideoClassifier
from actionbert.train.loaders import build_datasets
from actionbert.train.state import TrainHooks, _Parts, _Progress


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
