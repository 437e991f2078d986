"""Prediction on new videos: video-level top-k and, for long videos, a sliding-window timeline.

Frames are streamed (`decode.VideoStream`: one decoding pass, which also measures the frame count and rate),
so memory is bounded by one window of frames plus one batch of clips, whatever the video's length. The clip
length, frame stride, resize, crop size and normalisation come from the checkpoint or model folder, never from
guesses.

```
video --stream--> frames (resized) --window (span = (L-1)*stride+1, hop)--> clip (3, L, S, S)
      --model--> window logits (K) [+ CLS attention over the T' tokens]
      --> timeline rows (start s, end s, label, score) and video top-k (mean of raw window logits)
```
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from actionbert import runtime
from actionbert.config import transform_resize
from actionbert.data.decode import VideoDecodeError, VideoStream
from actionbert.data.sampling import circular_indices, clip_span


@dataclass
class Prediction:
    """Result for one video. `error` is set (and the rest is empty) when the video cannot be read at all;
    `warning` when decoding stopped part-way and the prediction uses the frames before the problem."""

    video: str
    topk: list[tuple[str, float]] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)
    num_frames: int = 0
    fps: float = 0.0
    error: str | None = None
    warning: str | None = None

    def to_dict(self) -> dict:
        return {"video": self.video, "topk": [{"label": lab, "probability": p} for lab, p in self.topk],
                "segments": self.segments, "num_frames": self.num_frames, "fps": self.fps, "error": self.error,
                "warning": self.warning}


class Predictor:
    """Runs a loaded model over videos with the inference settings stored alongside it.

    Args:
        model: a `VideoClassifier` (put in eval mode here).
        info: the inference dict of the checkpoint / model folder (classes, clip_len, frame_stride, resize,
            keep_aspect, input_size, norm).
        device: where the model runs.
        precision: "fp32", "bf16"/"fp16" autocast, or "auto" (`runtime.resolve_precision`).
        hop: frames between window starts (default: one clip span, i.e. non-overlapping windows).
        batch_size: windows per forward pass.
        fast: run the prepared inference copy (`inference.prepare_for_inference`: BatchNorm folded,
            channels-last, compiled where it pays); False runs the model as it is.
    """

    def __init__(self, model, info: dict, *, device: torch.device | str = "cpu", precision: str = "fp32",
                 hop: int | None = None, batch_size: int = 4, fast: bool = True) -> None:
        from actionbert.data.transforms import eval_transform
        from actionbert.inference import prepare_for_inference

        self.device = torch.device(device)
        precision = runtime.resolve_precision(self.device, precision)[0]  # "auto" -> the device's fast one
        self.model = (prepare_for_inference(model, precision=precision, device=self.device) if fast
                      else model.to(self.device).eval())
        self.fast = fast
        self.info = info
        self.classes = list(info["classes"])
        self.clip_len = int(info["clip_len"])
        self.stride = int(info.get("frame_stride", 1))
        self.span = clip_span(self.clip_len, self.stride)
        self.hop = int(hop or self.span)
        if self.hop < 1:
            raise ValueError(f"hop must be >= 1 frame, got {self.hop}")
        self.precision = precision
        self.batch_size = batch_size
        self.resize = tuple(info.get("resize", (128, 170)))
        self.transform = eval_transform(resize=transform_resize(self.resize, bool(info.get("keep_aspect"))),
                                        crop_size=int(info["input_size"]), norm=info["norm"])
        self.has_attention = model.config.head == "bert"

    def predict(self, path: str | Path, *, topk: int = 5) -> Prediction:
        """Predict one video; decoding problems are returned in `Prediction.error`, never raised."""
        pred = Prediction(video=str(path))
        # resized in the decoder's colour conversion: full-size frames never exist
        stream = (VideoStream(path, short_side=self.resize[0]) if self.info.get("keep_aspect")
                  else VideoStream(path, size=self.resize))
        window_logits: list[torch.Tensor] = []
        try:
            for starts, logits, attention in self._windows(stream, pred):
                window_logits.append(logits)
                self._add_segments(pred, starts, logits, attention)
        except VideoDecodeError as e:  # raised only before the first frame: the file cannot be used at all
            pred.error = str(e)
            return pred
        if stream.info is not None:
            pred.num_frames, pred.fps = stream.info.num_frames, stream.info.fps
        self._set_times(pred)
        if window_logits:
            mean = torch.cat(window_logits).mean(dim=0)  # mean of raw logits over windows
            probs = mean.softmax(dim=0)
            k = min(topk, len(self.classes))
            values, idx = probs.topk(k)
            pred.topk = [(self.classes[i], round(float(v), 6)) for v, i in zip(values, idx.tolist())]
        return pred

    def _windows(self, stream: VideoStream,
                 pred: Prediction) -> Iterable[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
        """Yield (window starts, logits (n, K), attention (n, T') or None) batch by batch."""
        batch, starts = [], []
        for start, frames in self._window_frames(stream, pred):
            batch.append(self.transform(frames))  # (3, L, S, S)
            starts.append(start)
            if len(batch) == self.batch_size:
                yield starts, *self._run(batch)
                batch, starts = [], []
        if batch:
            yield starts, *self._run(batch)

    def _window_frames(self, stream: VideoStream, pred: Prediction) -> Iterable[tuple[int, torch.Tensor]]:
        """Slide a window over the stream, keeping at most one span of frames in memory. A decoder error
        part-way ends the stream there (recorded in `pred.warning`); the frames before it are used. An error
        before the first frame is raised."""
        buffer: deque[torch.Tensor] = deque(maxlen=self.span)
        next_start, last_start, total = 0, None, 0
        try:
            for index, frame in enumerate(stream):
                buffer.append(frame)  # (H, W, 3)
                total = index + 1
                start = index - self.span + 1
                if start == next_start:
                    yield start, torch.stack(list(buffer)[:: self.stride])  # (L, H, W, 3)
                    last_start, next_start = start, start + self.hop
        except VideoDecodeError as e:
            if not total:
                raise
            pred.warning = f"{e}; predicted from the {total} frames before it"
        if last_start is None and total:
            # shorter than one clip span: one circularly padded window (the paper's rule for short videos)
            frames = list(buffer)
            yield 0, torch.stack([frames[i] for i in circular_indices(total, self.clip_len, 0, self.stride)])
        elif last_start is not None and last_start + self.span < total:
            # a last window flush with the end, so the timeline covers the whole video
            yield total - self.span, torch.stack(list(buffer)[:: self.stride])

    @torch.inference_mode()
    def _run(self, batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = torch.stack(batch).to(self.device)  # (n, 3, L, S, S)
        with runtime.autocast(self.device, "fp32" if self.fast else self.precision):  # prepared: autocasts itself
            logits, attention = self.model.forward_with_attention(x)
        if attention is not None:
            attention = attention.float().mean(dim=1)[:, 1:].cpu()  # (n, T'): CLS -> tokens, mean over heads
        return logits.float().cpu(), attention

    def _add_segments(self, pred: Prediction, starts, logits, attention) -> None:
        """Timeline rows of a batch of windows; their times in seconds are set once the frame rate is known."""
        probs = logits.softmax(dim=1)
        for i, start in enumerate(starts):
            score, label = probs[i].max(dim=0)
            row = {"start": None, "end": None, "start_frame": start, "label": self.classes[int(label)],
                   "score": round(float(score), 4)}
            if attention is not None:
                row["attention"] = [round(float(a), 4) for a in attention[i]]
            pred.segments.append(row)

    def _set_times(self, pred: Prediction) -> None:
        """Window start/end in seconds from the measured frame rate (frame index / fps; 1 fps if unknown)."""
        fps = pred.fps or 1.0
        for row in pred.segments:
            start = row["start_frame"]
            row["start"] = round(start / fps, 3)
            row["end"] = round(min(start + self.span, max(pred.num_frames, 1)) / fps, 3)


def predict_videos(predictor: Predictor, videos: Iterable[str | Path], *, topk: int = 5,
                   on_done: Callable[[Prediction], None] = lambda p: None) -> list[Prediction]:
    """Predict many videos; one failing video is reported in its Prediction and the run goes on."""
    results = []
    for v in videos:
        p = predictor.predict(v, topk=topk)
        results.append(p)
        on_done(p)
    return results
