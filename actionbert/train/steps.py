"""One epoch of optimizer steps (DDP-aware, with gradient accumulation and autocast), learning rates per epoch,
and the validation pass."""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.nn import functional as F

from actionbert import runtime
from actionbert.metrics import topk_correct
from actionbert.train.state import TrainHooks


def set_train_mode(model: nn.Module, *, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


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
