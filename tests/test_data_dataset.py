"""The clip dataset: items, modes, cache vs decode, failures, DataLoader and DistributedSampler."""

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from actionbert.data.dataset import Sample, VideoClipDataset, collate_clips, load_split
from actionbert.data.prepare import prepare_dataset
from actionbert.data.transforms import eval_transform, ten_crop_transform, train_transform
from actionbert.preprocessing import Preprocessing, Resize

SMALL = dict(resize=(48, 64), crop_size=32)


@pytest.fixture(scope="module")
def data_prepared(tmp_path_factory, video_tools):
    """Two classes of coded videos (40 and 70 frames), prepared with a cache."""
    d = tmp_path_factory.mktemp("dataset")
    for cls, n in (("short", 40), ("long", 70)):
        for k in range(3):
            video_tools.write_coded(d / "data" / cls / f"{k}.mp4", n, gop=10)
    prepare_dataset(d / "data", d / "cached", cache=True, val_fraction=0.34, cache_resize=Resize(*SMALL["resize"]))
    prepare_dataset(d / "data", d / "plain", val_fraction=0.34)
    return d


def code_of(video: torch.Tensor, video_tools, t: int) -> int:
    """Frame code of frame t of an un-normalised ("hara") full-frame clip (3, T, H, W)."""
    mean = torch.tensor([114.7748, 107.7354, 99.4750]).view(3, 1, 1)
    frame = (video[:, t] + mean).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0)
    return video_tools.frame_code(frame)


def test_train_items_are_random_clips_of_consecutive_frames(data_prepared, video_tools):
    samples, classes = load_split(data_prepared / "plain", "train")
    full = eval_transform(resize=(48, 48), crop_size=48, norm="hara")  # keeps the code band visible
    record = Preprocessing(resize=Resize(48, 48), crop_size=48, norm="hara", clip_len=16)
    ds = VideoClipDataset(samples, preprocessing=record, mode="train", transform=_CentreAsTrain(full), seed=3)
    assert len(ds) == len(samples) == 4
    item = ds[0]
    assert set(item) == {"video", "label", "video_id", "clip_index", "num_clips"}
    assert item["video"].shape == (3, 16, 48, 48) and item["label"] == classes.index(samples[0].class_name)
    first = code_of(item["video"], video_tools, 0)
    assert [code_of(item["video"], video_tools, t) for t in range(16)] == list(range(first, first + 16))
    assert first == ds.clip_indices(0)[0]
    assert torch.equal(ds[0]["video"], item["video"])  # seeded: same epoch, same clip
    starts = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        starts.add(ds.clip_indices(0)[0])
    assert len(starts) > 1


def test_val_is_the_centre_clip_and_test_has_every_window(data_prepared, video_tools):
    samples, _ = load_split(data_prepared / "plain", "val")
    long = [s for s in samples if s.num_frames == 70]
    full = eval_transform(resize=(48, 48), crop_size=48, norm="hara")
    val = VideoClipDataset(long, clip_len=32, mode="val", transform=full)
    assert code_of(val[0]["video"], video_tools, 0) == 19  # (70 - 32) // 2
    test = VideoClipDataset(long, clip_len=32, mode="test", transform=ten_crop_transform(**SMALL))
    assert len(test) == 2 * len(long)
    items = [test[0], test[1]]
    assert [i["clip_index"] for i in items] == [0, 1] and [i["num_clips"] for i in items] == [2, 2]
    assert items[0]["video"].shape == (10, 3, 32, 32, 32)
    single = VideoClipDataset(long, clip_len=32, mode="test", transform=full)
    windows = [code_of(single[k]["video"][0], video_tools, 0) for k in range(2)]
    assert windows == [3, 35] and single[0]["video"].shape == (1, 3, 32, 48, 48)


def test_cache_and_decoding_give_the_same_clip(data_prepared):
    cached, _ = load_split(data_prepared / "cached", "train")
    plain, _ = load_split(data_prepared / "plain", "train")
    assert all(s.cache for s in cached) and not any(s.cache for s in plain)
    t = train_transform(**SMALL)
    a = VideoClipDataset(cached, clip_len=16, mode="train", transform=t, seed=0)
    b = VideoClipDataset(plain, clip_len=16, mode="train", transform=t, seed=0)
    for i in range(len(a)):
        assert torch.equal(a[i]["video"], b[i]["video"])  # the cache holds frames at the record's 48 x 64
    c = VideoClipDataset(plain, clip_len=16, mode="train", transform=t, seed=0,
                         cache_dir=data_prepared / "cached" / "cache")
    assert torch.equal(c[1]["video"], a[1]["video"])


def test_short_video_is_circularly_padded(tmp_path, video_tools):
    path = video_tools.write_coded(tmp_path / "tiny.mp4", 5)
    ds = VideoClipDataset([Sample("tiny", str(path), 0, 5, width=64, height=48)], clip_len=12, mode="val",
                          transform=eval_transform(resize=(48, 48), crop_size=48, norm="hara"))
    assert [code_of(ds[0]["video"], video_tools, t) for t in range(12)] == [i % 5 for i in range(12)]


def test_failures_are_reported_not_raised_nor_replaced(tmp_path, data_prepared):
    good, _ = load_split(data_prepared / "plain", "train")
    broken = tmp_path / "broken.mp4"
    broken.write_text("garbage")
    bad = [Sample("gone", str(tmp_path / "gone.mp4"), 1, 40), Sample("broken", str(broken), 0, 40)]
    ds = VideoClipDataset(good[:2] + bad, clip_len=8, mode="val", transform=eval_transform(**SMALL))
    item = ds[2]
    assert "video" not in item and item["video_id"] == "gone"
    assert item["error"].startswith(str(tmp_path / "gone.mp4")) and "file not found" in item["error"]
    batch = collate_clips([ds[i] for i in range(4)])
    assert batch["video"].shape == (2, 3, 8, 32, 32) and batch["label"].shape == (2,)
    assert batch["video_id"] == [good[0].video_id, good[1].video_id]
    assert [v for v, _ in batch["failures"]] == ["gone", "broken"]
    assert "broken.mp4" in batch["failures"][1][1]
    empty = collate_clips([ds[2], ds[3]])
    assert empty["video"] is None and empty["label"].numel() == 0 and len(empty["failures"]) == 2


def test_dataloader_workers_and_distributed_sampler(tmp_path, data_prepared):
    samples, _ = load_split(data_prepared / "cached", "train")
    samples = samples + [Sample("gone", str(tmp_path / "gone.mp4"), 0, 40)]
    ds = VideoClipDataset(samples, clip_len=8, mode="train", transform=train_transform(**SMALL), seed=1)
    seen, failures = [], []
    for batch in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_clips):
        seen += batch["video_id"]
        failures += batch["failures"]
        assert batch["video"] is None or batch["video"].shape[1:] == (3, 8, 32, 32)
    assert sorted(seen) == sorted(s.video_id for s in samples[:-1]) and [f[0] for f in failures] == ["gone"]
    parts = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert set(parts[0] + parts[1]) == set(range(len(ds))) and len(parts[0]) == len(parts[1]) == 3  # padded
    loader = DataLoader(ds, batch_size=4, sampler=DistributedSampler(ds, num_replicas=2, rank=1),
                        collate_fn=collate_clips)
    assert sum(len(b["video_id"]) + len(b["failures"]) for b in loader) == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        VideoClipDataset([], clip_len=8, mode="eval")
    with pytest.raises(ValueError, match="num_frames"):
        VideoClipDataset([Sample("x", "x.mp4", 0, 0)], clip_len=8)
    with pytest.raises(FileNotFoundError, match="prepare"):
        load_split("/nonexistent", "train")


class _CentreAsTrain:
    """A deterministic full-frame transform standing in for the training one (to read frame codes)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, frames, rng=None):
        return self.inner(frames, rng)
