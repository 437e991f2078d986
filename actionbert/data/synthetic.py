"""A synthetic action dataset whose classes need temporal order, written as real video files.

It is the built-in data of `actionbert demo` and of tests: small videos (default 40 frames of 96 x 72 px) in
the folder-per-class layout (`out/<class>/<class>_0000.mp4`), which `prepare` indexes like any user data.

Why these classes. The study compares temporal global average pooling (TGAP) of a 3D CNN's per-time features
with BERT over the ordered features. Two kinds of classes make that difference visible:

- Order pairs: both classes of a pair contain exactly the same two short events, one early and one late, and
  differ only in which comes first. Each event lasts `EVENT_FRAMES` frames and the two are separated by most
  of the clip, more than the temporal reach of a tiny 3D CNN's features, so a per-time feature sees one event
  at a time; averaging those features over time (TGAP) gives the same result for "A then B" and "B then A",
  while an attention model over ordered tokens with position embeddings can tell them apart.
    - `red_then_blue` / `blue_then_red`: a disc flashes red, later a disc flashes blue (or the reverse).
    - `circle_then_square` / `square_then_circle`: a white circle flashes, later a white square (or reverse).
- Local classes, separable from any short window: `slide_left` / `slide_right` (a disc of random colour
  crosses the frame; direction is local motion), `bounce` (a disc oscillates vertically), `ring` (a static
  ring: appearance only).

Per-video variation makes it a learning problem rather than a lookup: background colour and gradient,
positions and sizes of every shape, colour jitter, speed and phase, event timing (a few frames of jitter),
Gaussian pixel noise, and a grey distractor disc drifting at random in every video.

Event placement. Training samples a random `clip_len`-frame window of each video; both events of an order
class must fall inside every such window. With `clip_len` given, events are placed in the frames every
window shares, `[N - clip_len, clip_len - 1]`, the first starting in the first quarter of the spare room and
the second ending in the last quarter; without it, across the whole video. The shared window shrinks as N
grows past `clip_len`: with clip_len = 32, N = 40 (the default) leaves 24 shared frames and at least 9 frames
between the events, N = 48 only 16 frames and a gap of at least 5. Keep N close to clip_len.

Everything is seeded: the same arguments give the same pixels (the encoder runs single-threaded).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np

#: Frames an order event (a flash) lasts.
EVENT_FRAMES = 4

_RED = np.array([220.0, 40.0, 40.0])
_BLUE = np.array([40.0, 70.0, 225.0])
_WHITE = np.array([235.0, 235.0, 235.0])


class _Canvas:
    """Pixel grids of one video size, for drawing filled shapes into float frames."""

    def __init__(self, height: int, width: int):
        self.h, self.w = height, width
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)  # (H, W) each

    def disc(self, cy, cx, r):
        return (self.yy - cy) ** 2 + (self.xx - cx) ** 2 <= r * r

    def square(self, cy, cx, r):
        return (np.abs(self.yy - cy) <= r) & (np.abs(self.xx - cx) <= r)

    def ring(self, cy, cx, r):
        d2 = (self.yy - cy) ** 2 + (self.xx - cx) ** 2
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)


def _jitter_colour(rng: np.random.Generator, colour: np.ndarray, amount: float = 25.0) -> np.ndarray:
    return np.clip(colour + rng.uniform(-amount, amount, 3), 0, 255)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(60, 240, 3)


def _event_window(num_frames: int, clip_len: int | None) -> tuple[int, int]:
    """First and last frame every training clip contains (both included)."""
    if clip_len is None or clip_len >= num_frames:
        return 0, num_frames - 1
    lo, hi = num_frames - clip_len, clip_len - 1
    if hi - lo + 1 < 2 * EVENT_FRAMES + 2:  # windows share too little: use the centre (validation) clip
        lo = (num_frames - clip_len) // 2
        hi = lo + clip_len - 1
    return lo, hi


@dataclass(frozen=True)
class EventLayout:
    """Explicit timing of the two events of an order class: the first starts at one of `starts` (drawn uniformly),
    the second `spacing` frames later. Built by `local_event_layout`."""

    starts: tuple[int, ...]
    spacing: int


@dataclass(frozen=True)
class Style:
    """How the classes are drawn. The defaults are the original look (tests, benchmarks); the demo draws
    `LOCAL_ORDER_STYLE` with the `EventLayout` its backbone needs.

    Args:
        flash_radius: radius of an event's shape, as a fraction of the frame height (drawn uniformly).
        mover_radius: radius of the sliding disc, same unit.
        slide_speed: frame widths per frame the disc slides, wrapping around; None: it crosses the frame once over
            the whole video.
        distractor: a grey disc drifting at random in every video.
        noise: standard deviation of the pixel noise (0..255 scale).
        layout: event timing of the order classes; None: inside the frames every training clip shares.
    """

    flash_radius: tuple[float, float] = (0.14, 0.22)
    mover_radius: tuple[float, float] = (0.12, 0.2)
    slide_speed: tuple[float, float] | None = None
    distractor: bool = True
    noise: float = 6.0
    layout: EventLayout | None = None


DEFAULT_STYLE = Style()
#: The demo's look: large flashes (the events must be easy to tell apart, see `actionbert.demo`), a large disc
#: sliding about two pixels per frame at the demo's 18 px frames, no distractor. Its `layout` comes from the backbone.
LOCAL_ORDER_STYLE = Style(flash_radius=(0.35, 0.45), mover_radius=(0.28, 0.36), slide_speed=(0.1, 0.15),
                          distractor=False)


def local_event_layout(windows: Sequence[tuple[int, int]], event_frames: int = EVENT_FRAMES) -> EventLayout:
    """Event timing under which averaging a backbone's temporal tokens cannot tell "A then B" from "B then A".

    Args:
        windows: first and last frame each temporal token sees, for the clip length the videos have
            (`actionbert.models.backbones.temporal_windows`); the widest windows are the unpadded tokens.
        event_frames: frames an event lasts.

    Returns:
        The second event starts `spacing` frames after the first: a multiple of the token stride (so each event
        meets the tokens at the same offsets wherever it sits) and wider than a window (no token sees both).
        Every start in `starts` keeps both events in "clean" frames: every token that sees the frame, counted on
        the tokens' endless grid, exists and is unpadded. Then swapping the two events' times maps the tokens that
        see A onto tokens that see A at the same offsets, and the same for B: the mean over tokens is unchanged,
        the order of the tokens is not.

    Raises:
        ValueError: no such timing fits (tokens too wide or too few for the clip).
    """
    width = max(hi - lo + 1 for lo, hi in windows)
    full = [k for k, (lo, hi) in enumerate(windows) if hi - lo + 1 == width]
    if len(full) < 2 or full != list(range(full[0], full[-1] + 1)):
        raise ValueError(f"token windows {list(windows)}: need two or more neighbouring unpadded tokens")
    stride = windows[full[1]][0] - windows[full[0]][0]
    if stride <= 0 or any(windows[k][0] != windows[full[0]][0] + stride * (k - full[0]) for k in full):
        raise ValueError(f"token windows {list(windows)}: not local (each token sees {width} frames, evenly "
                         f"spaced windows are needed); use a backbone whose tokens see part of the clip")
    reach = (width - 1) // 2
    first_centre = windows[full[0]][0] + reach - stride * full[0]  # centre of token 0 on the endless grid

    def clean(frame: int) -> bool:
        near = range(math.ceil((frame - reach - first_centre) / stride),
                     math.floor((frame + reach - first_centre) / stride) + 1)
        return all(k in full for k in near)

    spacing = stride * math.ceil((width + event_frames - 1) / stride)  # > width + event - 2: no token sees both
    last = windows[-1][1]
    starts = tuple(a for a in range(last + 1) if all(clean(f) for f in (*range(a, a + event_frames),
                                                                       *range(a + spacing, a + spacing + event_frames))))
    if not starts:
        raise ValueError(f"tokens seeing {width} frames every {stride} leave no room for two {event_frames}-frame "
                         f"events {spacing} frames apart in these clips; use longer clips or more local tokens")
    return EventLayout(starts=starts, spacing=spacing)


def _order_events(rng, num_frames, clip_len) -> tuple[int, int]:
    """Start frames of the first and second event, jittered inside the shared window."""
    lo, hi = _event_window(num_frames, clip_len)
    room = max(0, (hi - lo + 1 - 2 * EVENT_FRAMES) // 4)
    first = lo + int(rng.integers(0, room + 1))
    second = hi - EVENT_FRAMES + 1 - int(rng.integers(0, room + 1))
    return first, max(second, first + EVENT_FRAMES)


def _random_spot(rng, canvas: _Canvas, r: float) -> tuple[float, float]:
    return rng.uniform(r, canvas.h - r), rng.uniform(r, canvas.w - r)


def _flash_pair(shape_a: str, colour_a, shape_b: str, colour_b):
    """A renderer: event A early, event B late, each a shape at its own random spot."""

    def draw(rng, canvas, frames, num_frames, clip_len, style):
        if style.layout is None:
            first, second = _order_events(rng, num_frames, clip_len)
        else:
            first = int(rng.choice(style.layout.starts))
            second = first + style.layout.spacing
        for start, shape, colour in ((first, shape_a, colour_a), (second, shape_b, colour_b)):
            r = rng.uniform(*style.flash_radius) * canvas.h
            mask = getattr(canvas, shape)(*_random_spot(rng, canvas, r), r)
            c = _jitter_colour(rng, colour)
            frames[start:start + EVENT_FRAMES][:, mask] = c

    return draw


def _slide(direction: int):
    def draw(rng, canvas, frames, num_frames, clip_len, style):
        r = rng.uniform(*style.mover_radius) * canvas.h
        cy = rng.uniform(r, canvas.h - r)
        if style.slide_speed is not None:  # constant speed, leaving one side and coming back on the other
            speed, x0, c = rng.uniform(*style.slide_speed) * canvas.w, rng.uniform(0, canvas.w), _random_colour(rng)
            for t in range(num_frames):
                frames[t][canvas.disc(cy, (x0 + direction * speed * t) % (canvas.w + 2 * r) - r, r)] = c
            return
        travel = rng.uniform(0.5, 0.8) * canvas.w  # pixels covered over the whole video
        middle = rng.uniform(0.4, 0.6) * canvas.w
        c = _random_colour(rng)
        for t in range(num_frames):
            cx = middle + direction * (t / max(1, num_frames - 1) - 0.5) * travel
            frames[t][canvas.disc(cy, cx, r)] = c

    return draw


def _bounce(rng, canvas, frames, num_frames, clip_len, style):
    r = rng.uniform(0.12, 0.2) * canvas.h
    cx = rng.uniform(r, canvas.w - r)
    amp = rng.uniform(0.2, 0.35) * canvas.h
    period = rng.uniform(8, 14)
    phase = rng.uniform(0, 2 * np.pi)
    c = _random_colour(rng)
    for t in range(num_frames):
        cy = canvas.h / 2 + amp * np.sin(2 * np.pi * t / period + phase)
        frames[t][canvas.disc(cy, cx, r)] = c


def _ring(rng, canvas, frames, num_frames, clip_len, style):
    r = rng.uniform(0.18, 0.26) * canvas.h
    mask = canvas.ring(*_random_spot(rng, canvas, r), r)
    frames[:, mask] = _random_colour(rng)


Renderer = Callable[[np.random.Generator, _Canvas, np.ndarray, int, "int | None", Style], None]

#: Class name -> renderer, in label order. `num_classes=k` uses the first k (order pairs first). The "_twice"
#: classes hold the same event twice: appearance controls for the order pairs (see `actionbert.demo`).
SYNTHETIC_CLASSES: dict[str, Renderer] = {
    "red_then_blue": _flash_pair("disc", _RED, "disc", _BLUE),
    "blue_then_red": _flash_pair("disc", _BLUE, "disc", _RED),
    "circle_then_square": _flash_pair("disc", _WHITE, "square", _WHITE),
    "square_then_circle": _flash_pair("square", _WHITE, "disc", _WHITE),
    "slide_left": _slide(-1),
    "slide_right": _slide(+1),
    "bounce": _bounce,
    "ring": _ring,
    "red_twice": _flash_pair("disc", _RED, "disc", _RED),
    "blue_twice": _flash_pair("disc", _BLUE, "disc", _BLUE),
    "circle_twice": _flash_pair("disc", _WHITE, "disc", _WHITE),
    "square_twice": _flash_pair("square", _WHITE, "square", _WHITE),
}

#: The order-pair classes (each differs from its partner only in the order of its two events); the others are
#: the control classes, separable from any short window.
ORDER_CLASSES = ("red_then_blue", "blue_then_red", "circle_then_square", "square_then_circle")


def class_groups(classes: Sequence[str]) -> dict[str, list[str]]:
    """The demo's class groups among `classes`, in their order: "order_only" (`ORDER_CLASSES`), "control" (the
    rest) and "all"."""
    return {"order_only": [c for c in classes if c in ORDER_CLASSES],
            "control": [c for c in classes if c not in ORDER_CLASSES], "all": list(classes)}


def render_video(class_name: str, rng: np.random.Generator, *, num_frames: int = 48,
                 size: tuple[int, int] = (72, 96), clip_len: int | None = None,
                 style: Style = DEFAULT_STYLE) -> np.ndarray:
    """Render one video of a class as pixels (no file).

    Args:
        class_name: a key of `SYNTHETIC_CLASSES`.
        rng: the video's generator; all variation comes from it.
        num_frames: frames in the video.
        size: (height, width) in pixels.
        clip_len: training clip length the events must fit in (see the module docstring); None: whole video.
            Ignored for the order events when `style.layout` times them.
        style: sizes, speeds, nuisances and event timing (`Style`).

    Returns:
        uint8 array (T, H, W, 3), RGB.
    """
    if class_name not in SYNTHETIC_CLASSES:
        raise ValueError(f"unknown synthetic class {class_name!r}; known: {list(SYNTHETIC_CLASSES)}")
    if style.layout is not None and max(style.layout.starts) + style.layout.spacing + EVENT_FRAMES > num_frames:
        raise ValueError(f"event layout {style.layout} does not fit in {num_frames} frames")
    height, width = size
    canvas = _Canvas(height, width)
    base = rng.uniform(20, 110, 3)
    tilt = rng.uniform(-40, 40, 3)
    background = base + tilt * (canvas.xx / width - 0.5)[..., None]  # (H, W, 3)
    frames = np.repeat(background[None].astype(np.float32), num_frames, axis=0)  # (T, H, W, 3)
    if style.distractor:
        _draw_distractor(rng, canvas, frames)
    SYNTHETIC_CLASSES[class_name](rng, canvas, frames, num_frames, clip_len, style)
    if style.noise:
        _add_noise(rng, frames, style.noise)
    return np.clip(frames, 0, 255).astype(np.uint8)


def _draw_distractor(rng, canvas: _Canvas, frames: np.ndarray) -> None:
    """A grey disc drifting at random (a random walk of 1 px steps)."""
    r = rng.uniform(0.08, 0.14) * canvas.h
    pos = np.array(_random_spot(rng, canvas, r))
    grey = rng.uniform(110, 170)
    for t in range(len(frames)):
        pos = np.clip(pos + rng.normal(0, 1.0, 2), [r, r], [canvas.h - r, canvas.w - r])
        frames[t][canvas.disc(pos[0], pos[1], r)] = grey


def _add_noise(rng, frames: np.ndarray, std: float) -> None:
    """Pixel noise: one field per video, a randomly shifted window of it per frame (cheap, still varies)."""
    height, width = frames.shape[1:3]
    field = rng.normal(0.0, std, (height + 16, width + 16, 3)).astype(np.float32)
    for t in range(len(frames)):
        dy, dx = rng.integers(0, 17, 2)
        frames[t] += field[dy:dy + height, dx:dx + width]


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: int = 25, codec: str | None = None,
                gop: int | None = None, options: dict[str, str] | None = None) -> Path:
    """Encode uint8 RGB frames (T, H, W, 3) to a video file with PyAV.

    Args:
        path: output file; the extension picks the container (.mp4, .avi, .mkv, ...).
        frames: the pixels; H and W must be even for yuv420p.
        fps: frames per second.
        codec: "libx264" (default when available, else "mpeg4"), or any PyAV encoder name.
        gop: keyframe interval in frames; None keeps the encoder's default.
        options: extra encoder options (for libx264 they override the defaults: preset "ultrafast" (no
            B-frames), crf 18, one thread).
    """
    codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.gop_size = gop
        if codec == "libx264":
            settings = {"preset": "ultrafast", "crf": "18", "threads": "1"}
            if gop is not None:
                settings.update({"keyint_min": str(gop), "sc_threshold": "0"})  # keyframes exactly every gop
            stream.options = {**settings, **(options or {})}
        else:
            stream.codec_context.thread_count = 1
            stream.bit_rate = 2_000_000
            if options:
                stream.options = dict(options)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_synthetic_dataset(out: str | os.PathLike, *, num_classes: int = 8, classes: Sequence[str] | None = None,
                           videos_per_class: int = 25, num_frames: int = 40, size: tuple[int, int] = (72, 96),
                           fps: int = 25, clip_len: int | None = 32, seed: int = 0, codec: str | None = None,
                           style: Style = DEFAULT_STYLE, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the synthetic dataset in the folder-per-class layout.

    Args:
        out: output folder; `out/<class>/<class>_<k>.mp4` files are written (existing files are replaced).
        num_classes: how many classes of `SYNTHETIC_CLASSES` to use, in order (2..12; the first 8 are the
            original set); ignored when `classes` is given.
        classes: the class names to write, in label order (two or more keys of `SYNTHETIC_CLASSES`).
        videos_per_class: videos written per class.
        num_frames: frames per video.
        size: (height, width) of the frames in pixels (even numbers).
        fps: frame rate written in the files.
        clip_len: training clip length; order events are placed inside every clip of this length.
        seed: base seed; video k of the c-th class uses `numpy.random.default_rng([seed, c, k])`.
        codec: encoder; default libx264, or mpeg4 when libx264 is missing.
        style: how the classes are drawn (`Style`; `LOCAL_ORDER_STYLE` with a layout for the demo).
        progress: called as `progress(done, total)` after each video.

    Returns:
        `out` as a Path.
    """
    if classes is None:
        if not 2 <= num_classes <= len(SYNTHETIC_CLASSES):
            raise ValueError(f"num_classes must be in 2..{len(SYNTHETIC_CLASSES)}, got {num_classes}")
        classes = list(SYNTHETIC_CLASSES)[:num_classes]
    unknown = [c for c in classes if c not in SYNTHETIC_CLASSES]
    if unknown or len(set(classes)) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be two or more distinct names of {list(SYNTHETIC_CLASSES)}, got {list(classes)}")
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"size must be even for yuv420p video, got {size}")
    out = Path(out)
    total, done = len(classes) * videos_per_class, 0
    for c, name in enumerate(classes):
        for k in range(videos_per_class):
            rng = np.random.default_rng([seed, c, k])
            frames = render_video(name, rng, num_frames=num_frames, size=size, clip_len=clip_len, style=style)
            write_video(out / name / f"{name}_{k:04d}.mp4", frames, fps=fps, codec=codec)
            done += 1
            if progress is not None:
                progress(done, total)
    return out
