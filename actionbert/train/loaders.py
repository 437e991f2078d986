"""The prepared dataset's training and validation clips, and the (distributed) loaders over them."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader, DistributedSampler

from actionbert import runtime
from actionbert.config import RunConfig, preprocessing_of
from actionbert.errors import DataError, MissingFileError


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
