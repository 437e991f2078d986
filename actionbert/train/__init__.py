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

The package: `state` (the types its modules share), `loaders` (datasets and samplers), `runsetup` (config,
model, optimizer, resumed standing), `steps` (an epoch of optimizer steps, validation), `records` (checkpoint
state, metrics.csv, TensorBoard, curves); this module runs the epochs.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch

from actionbert import runfolder, runtime
from actionbert.checkpoint import inference_config, load_on_main
from actionbert.config import RunConfig, config_from_dict, resume_config
from actionbert.errors import DataError
from actionbert.train.loaders import build_datasets, make_loader
from actionbert.train.records import (METRIC_FIELDS, NO_VALIDATION, _checkpoint_state, _log_epoch,
                                      _start_run_folder)
from actionbert.train.runsetup import (NO_DECAY_NAMES, _build, _progress, _settle, disable_stochastic_layers,
                                       param_groups)
from actionbert.train.state import TrainHooks, TrainResult, _Parts, _Progress
from actionbert.train.steps import _set_lrs, _train_epoch, evaluate_loader, set_train_mode

__all__ = ["METRIC_FIELDS", "NO_DECAY_NAMES", "NO_VALIDATION", "TrainHooks", "TrainResult", "build_datasets",
           "disable_stochastic_layers", "evaluate_loader", "make_loader", "param_groups", "set_train_mode", "train"]


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
