"""What a run writes each epoch: the checkpoint state, metrics.csv, TensorBoard scalars and the curves."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from actionbert.config import RunConfig, config_to_dict, dump_config
from actionbert.fileio import atomic_write, atomic_write_text
from actionbert.train.state import _Parts, _Progress


METRIC_FIELDS = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr", "failures", "clips_per_s",
                 "seconds"]
NO_VALIDATION = "last epoch (no validation data)"


def _start_run_folder(run_dir: Path, cfg: RunConfig, classes: list[str]) -> Any:
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    atomic_write_text(run_dir / "classes.txt", "\n".join(classes) + "\n")
    return _tensorboard(run_dir)


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
