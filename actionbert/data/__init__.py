"""The video data pipeline: everything between video files and a `(B, 3, T, H, W)` batch.

Flow, one module per arrow: video file -> `decode` (PyAV, frames by decoded index) -> `sampling` (pure index
math: which frames) -> `transforms` (resize, crop, flip, normalise) -> `dataset` (items and batches).
`prepare` indexes and checks a dataset once (its input `layouts`, the symlink-safe folder `walk`, `labels`
checks, `caveats`, `problems`, `splits`), `cache` stores decoded frames for fast epochs, `clips` cuts long
videos into clips (recorded in `cliplist`), `synthetic` writes the built-in demo dataset. `framefolder` reads
image folders as videos; `videoinfo` holds what decoding reports; `container` opens files (one error per
problem) and `seekindex` maps packet timestamps to frame indices for seeking. How frames are resized, cropped
and normalised is the record in `actionbert.preprocessing`.
"""

from actionbert.data.cache import StaleCacheWarning, cache_file, cache_video, read_cached, write_frame_folder
from actionbert.data.clips import ClipRecord, ClipReport, ClipSpecError, cut_clips
from actionbert.data.dataset import Sample, VideoClipDataset, collate_clips, load_split
from actionbert.data.decode import (FrameTable, VideoDecodeError, VideoInfo, VideoStream, frame_table, iter_frames,
                                    probe, read_frames, short_side_size)
from actionbert.data.prepare import LAYOUTS, PrepareReport, Problem, detect_layout, prepare_dataset
from actionbert.data.sampling import (center_clip_indices, circular_indices, test_window_indices,
                                      train_clip_indices, uniform_clip_indices)
from actionbert.data.synthetic import SYNTHETIC_CLASSES, make_synthetic_dataset
from actionbert.data.transforms import (NORMALIZATION, EvalTransform, TenCropTransform, TrainTransform,
                                        eval_transform, ten_crop_transform, train_transform)

__all__ = [
    "LAYOUTS", "NORMALIZATION", "SYNTHETIC_CLASSES",
    "ClipRecord", "ClipReport", "ClipSpecError", "EvalTransform", "FrameTable", "PrepareReport", "Problem",
    "Sample", "StaleCacheWarning", "TenCropTransform", "TrainTransform", "VideoClipDataset", "VideoDecodeError",
    "VideoInfo", "VideoStream", "cache_file", "cache_video", "center_clip_indices", "circular_indices", "collate_clips",
    "cut_clips", "detect_layout",
    "eval_transform", "frame_table", "iter_frames", "load_split", "make_synthetic_dataset", "prepare_dataset",
    "probe", "read_cached", "read_frames", "short_side_size", "ten_crop_transform", "test_window_indices",
    "train_clip_indices", "train_transform", "uniform_clip_indices", "write_frame_folder",
]
