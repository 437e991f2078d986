"""Run an exported ONNX model on a video with nothing but its file: no actionbert import.

Everything comes from the ONNX file's `metadata_props` (written by `actionbert export`): the preprocessing
record ("actionbert.preprocessing": resize rule, crop, normalisation, clip length, stride) and the class names
("actionbert.classes"). Decoding is PyAV, resizing is one swscale call per frame (PyAV's reformatter, bilinear,
as the record says), cropping and normalisation are NumPy. The windows are `actionbert predict`'s: non-overlapping
windows of `(clip_len - 1) * frame_stride + 1` frames, a last one flush with the end, a video shorter than one
window looped into one; the video's scores are the softmax of the mean of the windows' raw logits.

    python benchmarks/onnx_predict.py model.onnx video.mp4 [--topk 5]
"""

from __future__ import annotations

import argparse
import json

import av
import numpy as np
from av.video.reformatter import VideoReformatter


def read_record(session) -> tuple[dict, list[str]]:
    """(preprocessing record, class names) from an onnxruntime session's model metadata."""
    meta = session.get_modelmeta().custom_metadata_map
    return json.loads(meta["actionbert.preprocessing"]), json.loads(meta["actionbert.classes"])


def resized_size(record: dict, height: int, width: int) -> tuple[int, int]:
    """The record's resize rule for an upright frame of `height` x `width`."""
    h, w = record["resize"]
    if not record["keep_aspect"]:
        return h, w
    if height <= width:
        return h, max(1, round(width * h / height))
    return max(1, round(height * h / width)), h


def frames(path: str, record: dict):
    """Upright RGB uint8 frames (H, W, 3) of a video, resized by the record's rule in one swscale call."""
    reformatter = VideoReformatter()
    with av.open(path) as container:
        for frame in container.decode(video=0):
            turns = int(round((frame.rotation or 0.0) / 90.0)) % 4  # counter-clockwise display rotation
            upright = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
            height, width = resized_size(record, *upright)
            if turns % 2:
                height, width = width, height
            out = reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                       src_color_range=frame.color_range or None, threads=1,
                                       interpolation=record["interpolation"].upper())
            array = out.to_ndarray()
            yield np.ascontiguousarray(np.rot90(array, turns)) if turns else array


def windows(video: list[np.ndarray], clip_len: int, stride: int) -> list[np.ndarray]:
    """The clips `actionbert predict` makes: (L, H, W, 3) each."""
    span, n = (clip_len - 1) * stride + 1, len(video)
    if n < span:  # one window, frames looped
        return [np.stack([video[(i * stride) % n] for i in range(clip_len)])]
    starts = list(range(0, n - span + 1, span))
    if starts[-1] + span < n:
        starts.append(n - span)
    return [np.stack(video[s: s + span: stride]) for s in starts]


def model_input(clip: np.ndarray, record: dict) -> np.ndarray:
    """Centre crop and normalise one clip: uint8 (L, H, W, 3) -> float32 (3, L, S, S)."""
    size = record["crop_size"]
    height, width = clip.shape[1:3]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    crop = clip[:, top: top + size, left: left + size].astype(np.float32)
    std = np.asarray(record["std"], np.float32)
    scale = np.float32(record["value_scale"]) / std
    shift = -np.asarray(record["mean"], np.float32) / std
    return (crop * scale + shift).transpose(3, 0, 1, 2)  # (3, L, S, S)


def predict(model_path: str, video: str) -> dict[str, float]:
    """Class -> probability of the video (softmax of the mean window logits)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    record, classes = read_record(session)
    clips = windows(list(frames(video, record)), record["clip_len"], record["frame_stride"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: model_input(c, record)[None]})[0] for c in clips])
    mean = logits.astype(np.float64).mean(axis=0)
    probs = np.exp(mean - mean.max())
    probs /= probs.sum()
    return dict(zip(classes, probs.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("video")
    parser.add_argument("--topk", type=int, default=5)
    args = parser.parse_args()
    scores = predict(args.model, args.video)
    for name, p in sorted(scores.items(), key=lambda kv: -kv[1])[: args.topk]:
        print(f"{p:.6f}  {name}")


if __name__ == "__main__":
    main()
