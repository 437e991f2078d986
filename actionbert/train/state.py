"""What the parts of a training run share: the hooks the CLI listens through, the result, the model with its optimizer,
and where the run stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from actionbert.models import VideoClassifier


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
