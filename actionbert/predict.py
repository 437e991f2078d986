"""Prediction on new videos: video-level top-k and, for long videos, a sliding-window timeline.

Frames are streamed (`decode.VideoStream`: one decoding pass, which also measures the frame count and rate),
so memory is bounded by one window of frames plus one batch of clips, whatever the video's length. The clip
length, frame stride, resize, crop size and normalisation come from the checkpoint or model folder, never from
guesses.

```
video --stream--> frames (resized) --window (span = (L-1)*stride+1, hop)--> clip (3, L, S, S)
      --model--> window logits (K) [+ CLS attention over the T' tokens]
      --> timeline rows (start s, end s, label, score, probabilities of the video's top-k classes)
          and video top-k (mean of raw window logits)
```
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from actionbert import runtime
from actionbert.data.caveats import short_caveat, truncation_caveat
from actionbert.data.decode import VideoDecodeError, VideoStream
from actionbert.data.sampling import circular_indices, clip_span
from actionbert.preprocessing import Preprocessing, Resize


@dataclass
class Prediction:
    """Result for one video. `error` is set (and the rest is empty) when the video cannot be read at all;
    `warning` holds the caveats of a usable one ("; " between several): decoding stopped part-way and the
    prediction uses the frames before the problem, fewer frames decode than the container claims
    ("truncated: ..."), or the video is shorter than one clip and its frames were looped ("short: ...")."""

    video: str
    topk: list[tuple[str, float]] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)
    num_frames: int = 0
    fps: float = 0.0
    error: str | None = None
    warning: str | None = None
    #: the video's mean raw window logits (K), full precision (results files keep them; `to_dict` does not)
    mean_logits: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"video": self.video, "topk": [{"label": lab, "probability": p} for lab, p in self.topk],
                "segments": self.segments, "num_frames": self.num_frames, "fps": self.fps, "error": self.error,
                "warning": self.warning}

    @staticmethod
    def from_dict(d: dict) -> "Prediction":
        """The inverse of `to_dict` (a line of a results file; extra keys such as "index" are ignored)."""
        return Prediction(video=d["video"], topk=[(t["label"], t["probability"]) for t in d["topk"]],
                          segments=d["segments"], num_frames=d["num_frames"], fps=d["fps"], error=d["error"],
                          warning=d["warning"])


class Predictor:
    """Runs a loaded model over videos with the inference settings stored alongside it.

    Args:
        model: a `VideoClassifier` (put in eval mode here).
        info: the inference dict of the checkpoint / model folder: class names and the preprocessing record
            (`Preprocessing.from_info`, also for files written before the record), the only source of the clip
            length, stride, resize, crop and normalisation.
        device: where the model runs.
        precision: "fp32", "bf16"/"fp16" autocast, or "auto" (`runtime.resolve_precision`).
        hop: frames between window starts (default: one clip span, i.e. non-overlapping windows).
        batch_size: windows per forward pass.
        fast: run the prepared inference copy (`inference.prepare_for_inference`: BatchNorm folded,
            channels-last, compiled where it pays); False runs the model as it is.
    """

    def __init__(self, model, info: dict, *, device: torch.device | str = "cpu", precision: str = "fp32",
                 hop: int | None = None, batch_size: int = 4, fast: bool = True) -> None:
        from actionbert.data.transforms import transforms_for
        from actionbert.inference import prepare_for_inference

        self.device = torch.device(device)
        precision = runtime.resolve_precision(self.device, precision)[0]  # "auto" -> the device's fast one
        self.model = (prepare_for_inference(model, precision=precision, device=self.device) if fast
                      else model.to(self.device).eval())
        self.fast = fast
        self.info = info
        self.classes = list(info["classes"])
        self.preprocessing = pre = Preprocessing.from_info(info)
        self.clip_len = pre.clip_len
        self.stride = pre.frame_stride
        self.span = clip_span(self.clip_len, self.stride)
        self.hop = self.span if hop is None else int(hop)
        if self.hop < 1:
            raise ValueError(f"hop must be >= 1 frame, got {self.hop}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.precision = precision
        self.batch_size = batch_size
        self.transform = transforms_for(pre)["val"]  # centre crop
        self.has_attention = model.config.head == "bert"

    def predict(self, path: str | Path, *, topk: int = 5) -> Prediction:
        """Predict one video; decoding problems are returned in `Prediction.error`, never raised. Caveats (a
        stream that stopped early, a video shorter than one clip, see `caveats.py`) are in `Prediction.warning`.

        Raises:
            ValueError: `topk` < 1.
        """
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        pred = Prediction(video=str(path))
        stream = self.open_stream(path)
        window_logits: list[torch.Tensor] = []
        try:
            for starts, logits, attention in self._windows(stream, pred):
                window_logits.append(logits)
                self._add_segments(pred, starts, logits, attention)
        except VideoDecodeError as e:  # raised only before the first frame: the file cannot be used at all
            pred.error = str(e)
            return pred
        self.finish(pred, stream.info, window_logits, topk)
        return pred

    def open_stream(self, path: str | Path) -> VideoStream:
        return open_stream(path, self.preprocessing.resize)

    def finish(self, pred: Prediction, info, window_logits: list[torch.Tensor], topk: int) -> None:
        """Complete `pred` once its stream has ended: frame count and rate, truncation caveat, window times
        and the video top-k (softmax of the mean of the raw window logits, in window order)."""
        if info is not None:
            pred.num_frames, pred.fps = info.num_frames, info.fps
            _add_warning(pred, truncation_caveat(info))
        self._set_times(pred)
        if window_logits:
            mean = torch.cat(window_logits).mean(dim=0)  # mean of raw logits over windows
            pred.mean_logits = mean
            probs = mean.softmax(dim=0)
            k = min(topk, len(self.classes))
            values, idx = probs.topk(k)
            pred.topk = [(self.classes[i], round(float(v), 6)) for v, i in zip(values, idx.tolist())]
            windows = torch.cat(window_logits).softmax(dim=1)[:, idx]  # (n, k): the video's top-k per window
            for row, p in zip(pred.segments, windows.tolist()):
                row["probabilities"] = {lab: round(v, 4) for (lab, _), v in zip(pred.topk, p)}
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
        """Slide a window over the stream (see `slide_windows`); caveats go to `pred.warning`."""
        yield from slide_windows(stream, span=self.span, stride=self.stride, hop=self.hop, clip_len=self.clip_len,
                                 warn=lambda text: _add_warning(pred, text))

    @torch.inference_mode()
    def _run(self, batch: list[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (n, K) and CLS attention (n, T') or None of clips (3, L, S, S), listed or stacked."""
        x = (batch if isinstance(batch, torch.Tensor) else torch.stack(batch)).to(self.device)  # (n, 3, L, S, S)
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


def _add_warning(pred: Prediction, text: str | None) -> None:
    """Append a caveat to `pred.warning` ("; " between several)."""
    if text:
        pred.warning = f"{pred.warning}; {text}" if pred.warning else text


def open_stream(path: str | Path, resize: Resize) -> VideoStream:
    """The frame stream of a video at the record's resize rule, resized in the decoder's colour conversion (as
    the cache and the dataset do): full-size frames never exist."""
    return VideoStream(path, size=resize)


def slide_windows(stream: Iterable[torch.Tensor], *, span: int, stride: int, hop: int, clip_len: int,
                  warn: Callable[[str], None]) -> Iterable[tuple[int, torch.Tensor]]:
    """Yield (start frame, frames (L, H, W, 3)) of each window, keeping at most one span of frames in memory.
    A decoder error part-way ends the stream there (`warn` is told); the frames before it are used. An error
    before the first frame is raised. A video shorter than one span gives one circularly padded window, and a
    last window flush with the end is added so the timeline covers the whole video."""
    buffer: deque[torch.Tensor] = deque(maxlen=span)
    next_start, last_start, total = 0, None, 0
    try:
        for index, frame in enumerate(stream):
            buffer.append(frame)  # (H, W, 3)
            total = index + 1
            start = index - span + 1
            if start == next_start:
                yield start, torch.stack(list(buffer)[::stride])  # (L, H, W, 3)
                last_start, next_start = start, start + hop
    except VideoDecodeError as e:
        if not total:
            raise
        warn(f"{e}; predicted from the {total} frames before it")
    if last_start is None and total:
        # shorter than one clip span: one circularly padded window (the paper's rule for short videos)
        warn(short_caveat(total, clip_len, stride))
        frames = list(buffer)
        yield 0, torch.stack([frames[i] for i in circular_indices(total, clip_len, 0, stride)])
    elif last_start is not None and last_start + span < total:
        yield total - span, torch.stack(list(buffer)[::stride])


def predict_videos(predictor: Predictor, videos: Iterable[str | Path], *, topk: int = 5,
                   on_done: Callable[[Prediction], None] = lambda p: None) -> list[Prediction]:
    """Predict many videos; one failing video is reported in its Prediction and the run goes on."""
    results = []
    for v in videos:
        p = predictor.predict(v, topk=topk)
        results.append(p)
        on_done(p)
    return results
