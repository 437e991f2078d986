"""Prediction at scale: decoding in DataLoader worker processes, windows of several videos in one model batch,
results per video as soon as each is complete, shards over torchrun processes, resumable JSON-lines output.

```
inputs (index, path) --rank r takes r, r+K, ...--> DataLoader workers (worker w: every W-th of those videos)
  each worker: VideoStream -> slide_windows -> transform -> chunks of <= batch_size windows of one video
  main process: chunks --FIFO of windows--> model batches of exactly batch_size windows (zero-padded at the end)
     --> per-video accumulators (window logits, timeline rows) --> Prediction when its last window is scored
     --> on_video(index, prediction) (a JSON line appended, flushed, fsync'ed: `results.Appender`)
```

Memory: a worker holds one span of frames and one chunk; the DataLoader holds at most `workers x prefetch`
chunks; the main process holds fewer than batch_size + chunk windows, plus the per-window scores of the videos
in flight. A long video is never held whole, and the workers return chunks as they are ready (`in_order=False`),
so a slow video delays only its own chunks.

Same scores whatever the number of workers or processes: every model call has the same batch shape (batch_size
windows; the last batch is padded with zero clips), and a window's logits in a fixed-shape batch do not depend on
its neighbours or its position (measured on CPU, eager and prepared paths). The prepared path's "auto" compile
switches a shape from eager to compiled after its first call; a warm-up call on zeros settles that before the
first real batch, so every real batch of a process runs the same code (compiled and eager differ by ~3e-7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from actionbert import runtime
from actionbert.data.decode import VideoDecodeError
from actionbert.predict import Prediction, Predictor, _add_warning, open_stream, slide_windows


@dataclass
class Chunk:
    """Consecutive windows of one video; the last chunk of a video has `final` set (and its stream's info)."""

    index: int
    video: str
    starts: list[int]
    clips: torch.Tensor | None  # uint8 (n, L, 3, S, S): centre-cropped, normalised by the model's process
    final: bool = False
    warnings: list[str] = field(default_factory=list)
    info: object = None  # VideoInfo once the stream ended
    error: str | None = None


class VideoWindows(IterableDataset):
    """The windows of a list of (index, path) videos as `Chunk`s; DataLoader worker w takes every W-th video."""

    def __init__(self, videos: list[tuple[int, str]], predictor: Predictor, chunk: int) -> None:
        super().__init__()
        self.videos, self.chunk = list(videos), chunk
        # only what decoding needs (not the model): read through the Predictor's attributes
        self.transform, self.resize = predictor.transform, predictor.preprocessing.resize
        self.window = dict(span=predictor.span, stride=predictor.stride, hop=predictor.hop,
                           clip_len=predictor.clip_len)

    def __iter__(self):
        worker = get_worker_info()
        mine = self.videos if worker is None else self.videos[worker.id::worker.num_workers]
        for index, path in mine:
            yield from self.chunks(index, str(path))

    def chunks(self, index: int, path: str):
        stream = open_stream(path, self.resize)
        warnings: list[str] = []
        starts, clips = [], []
        try:
            for start, frames in slide_windows(stream, warn=warnings.append, **self.window):
                starts.append(start)
                clips.append(self.transform.cropped(frames))  # uint8 (L, 3, S, S)
                if len(clips) == self.chunk:
                    yield Chunk(index, path, starts, torch.stack(clips))
                    starts, clips = [], []
        except VideoDecodeError as e:  # before the first frame: the file cannot be used at all
            yield Chunk(index, path, [], None, final=True, error=str(e))
            return
        yield Chunk(index, path, starts, torch.stack(clips) if clips else None, final=True, warnings=warnings,
                    info=stream.info)


@dataclass
class _Open:
    """A video in flight: its Prediction so far, window logits in order, windows not yet scored."""

    pred: Prediction
    logits: list[torch.Tensor] = field(default_factory=list)
    pending: int = 0
    last: Chunk | None = None  # the final chunk once it arrived


@dataclass
class BatchStats:
    """What the main process held (for tests and the benchmark): windows waiting for the model at most,
    videos in flight at most, chunks and windows seen, model calls."""

    max_windows_held: int = 0
    max_open_videos: int = 0
    chunks: int = 0
    windows: int = 0
    model_calls: int = 0


def predict_many(predictor: Predictor, videos: list[tuple[int, str]], *, topk: int = 5, workers: int = 0,
                 on_video: Callable[[int, Prediction], None] = lambda i, p: None,
                 stats: BatchStats | None = None) -> BatchStats:
    """Predict (index, path) videos with `workers` decoding processes (0: in this process), calling
    `on_video(index, prediction)` as each video completes (completion order). Failed videos come back with
    `error` set; the run goes on."""
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    stats = stats if stats is not None else BatchStats()
    batch = predictor.batch_size
    dataset = VideoWindows(videos, predictor, chunk=batch)
    extra = dict(prefetch_factor=2, in_order=False) if workers else {}
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, **extra)
    with runtime.intra_op_threads(runtime.threads_beside_workers(predictor.device, workers)):
        _warm_up(predictor)
        queue: list[tuple[_Open, int, torch.Tensor]] = []
        open_: dict[int, _Open] = {}
        for chunk in loader:
            video = open_.setdefault(chunk.index, _Open(Prediction(video=chunk.video)))
            stats.chunks += 1
            if chunk.clips is not None:
                queue.extend((video, s, clip) for s, clip in zip(chunk.starts, chunk.clips))
                video.pending += len(chunk.starts)
                stats.windows += len(chunk.starts)
            if chunk.final:
                video.last = chunk
            stats.max_windows_held = max(stats.max_windows_held, len(queue))
            stats.max_open_videos = max(stats.max_open_videos, len(open_))
            while len(queue) >= batch:
                _score(predictor, queue[:batch], stats)
                del queue[:batch]
            _finish_ready(predictor, open_, topk, on_video)
        if queue:
            _score(predictor, queue, stats)
        _finish_ready(predictor, open_, topk, on_video)
    return stats


def _warm_up(predictor: Predictor) -> None:
    """One call on a zero batch of the fixed shape, so that the prepared model's compile decision for that shape
    is taken before the first real batch."""
    size = int(predictor.info["input_size"])
    zeros = torch.zeros(3, predictor.clip_len, size, size)
    for _ in range(2 if predictor.fast else 1):
        predictor._run([zeros] * predictor.batch_size)


def _score(predictor: Predictor, items: list[tuple[_Open, int, torch.Tensor]], stats: BatchStats) -> None:
    """Run one model batch of exactly `batch_size` windows (zero clips fill a short last batch) and hand each
    window's logits and timeline row to its video."""
    x = predictor.transform.normalized(torch.stack([clip for _, _, clip in items]))  # (n, 3, L, S, S) float
    if len(items) < predictor.batch_size:
        x = torch.cat([x, x.new_zeros(predictor.batch_size - len(items), *x.shape[1:])])
    logits, attention = predictor._run(x)
    stats.model_calls += 1
    for i, (video, start, _) in enumerate(items):
        row = logits[i:i + 1]
        video.logits.append(row)
        predictor._add_segments(video.pred, [start], row, None if attention is None else attention[i:i + 1])
        video.pending -= 1


def _finish_ready(predictor: Predictor, open_: dict[int, _Open], topk: int,
                  on_video: Callable[[int, Prediction], None]) -> None:
    for index in [i for i, v in open_.items() if v.last is not None and v.pending == 0]:
        video = open_.pop(index)
        pred, last = video.pred, video.last
        if last.error is not None:
            pred.error = last.error
        else:
            for text in last.warnings:
                _add_warning(pred, text)
            predictor.finish(pred, last.info, video.logits, topk)
        on_video(index, pred)


def settings_of(model_path: str | Path, predictor: Predictor, videos: list[str], *, topk: int) -> dict:
    """What a results file's scores depend on (a resumed run must match): the model, the inputs, the options."""
    from actionbert.results import inputs_digest

    return {"model": str(Path(model_path).resolve()), "inputs": len(videos), "inputs_sha256": inputs_digest(videos),
            "topk": topk, "hop": predictor.hop, "precision": predictor.precision, "fast": predictor.fast}


@dataclass
class RunSummary:
    """The outcome of `predict_to_file` on this process: inputs found already done (all ranks' shares), videos
    predicted here, and (rank 0) the merged records of the whole file in input order."""

    skipped: int = 0
    predicted: int = 0
    records: list[dict] = field(default_factory=list)


def predict_to_file(predictor: Predictor, videos: list[str], out: str | Path, settings: dict, *, topk: int = 5,
                    workers: int = 0, overwrite: bool = False, dist_info=None,
                    on_video: Callable[[int, Prediction], None] = lambda i, p: None,
                    on_start: Callable[[int, int], None] = lambda skipped, todo: None) -> RunSummary:
    """Predict `videos` into the JSON-lines file `out` (see `results`), continuing what it already holds.

    Under torchrun (`dist_info.world_size` K > 1) rank r predicts the inputs r, r+K, ... into its part file and
    rank 0 merges the parts into `out` after a barrier. `on_start(skipped, todo)` is called once the work of this
    process is known (skipped: inputs already in `out`; todo: videos this process will predict).

    Raises:
        ResultsError: `out` is not a results file, holds other settings, or is damaged (on every rank).
    """
    from actionbert import results
    from actionbert.runtime import DistInfo, barrier

    info = dist_info or DistInfo()
    out = Path(out)
    error = None
    if info.is_main:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if overwrite:
                results.remove(out)
            elif out.exists() or results.part_files(out):
                results.merge(out, settings)  # folds parts of a killed run in, drops a torn last line
        except results.ResultsError as e:
            error = str(e)
    error = _from_rank0(error, info)
    if error:
        raise results.ResultsError(error)
    done = {(r["index"], r["video"]) for r in results.collect(out, settings)} if out.exists() else set()
    share = [(i, v) for i, v in enumerate(videos) if i % info.world_size == info.rank]
    todo = [(i, v) for i, v in share if (i, v) not in done]
    summary = RunSummary(skipped=sum((i, v) in done for i, v in enumerate(videos)))
    on_start(summary.skipped, len(todo))
    if todo:
        appender = results.Appender(out if not info.enabled else results.part_path(out, info.rank), settings)

        def write(index: int, pred: Prediction) -> None:
            appender.write(record(index, pred))
            summary.predicted += 1
            on_video(index, pred)

        try:
            predict_many(predictor, todo, topk=topk, workers=workers, on_video=write)
        finally:
            appender.close()
    barrier(info)
    if info.is_main:
        summary.records = results.merge(out, settings)
    return summary


def _from_rank0(message: str | None, info) -> str | None:
    """Rank 0's message on every rank (so that all stop together on a refused file)."""
    if not info.enabled:
        return message
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def record(index: int, pred: Prediction) -> dict:
    """A results-file line: the input index, `Prediction.to_dict()` and the mean window logits at full precision
    (float32 values written exactly, so runs can be compared bit for bit)."""
    logits = None if pred.mean_logits is None else [float(v) for v in pred.mean_logits]
    return {"index": index, **pred.to_dict(), "mean_logits": logits}
