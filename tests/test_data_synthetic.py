"""The synthetic dataset: layout, determinism, and the order classes' event timing."""

import dataclasses

import numpy as np
import pytest

from actionbert.data.decode import probe, read_frames
from actionbert.data.prepare import prepare_dataset
from actionbert.data.synthetic import (EVENT_FRAMES, LOCAL_ORDER_STYLE, SYNTHETIC_CLASSES, EventLayout,
                                       make_synthetic_dataset, render_video)


def event_frames(video: np.ndarray, colour: str) -> list[int]:
    """Frames holding a large saturated red or blue area."""
    r, g, b = (video[..., i].astype(int) for i in range(3))
    mask = (r > 170) & (g < 110) & (b < 110) if colour == "red" else (b > 170) & (r < 110) & (g < 140)
    return [t for t in range(len(video)) if mask[t].sum() > 40]


@pytest.mark.parametrize("num_frames, clip_len, window, min_gap", [
    (48, 32, (16, 31), 5), (40, 32, (8, 31), 9), (32, None, (0, 31), 13)])
def test_order_classes_hold_the_same_two_events_in_opposite_orders(num_frames, clip_len, window, min_gap):
    for seed in range(6):
        a = render_video("red_then_blue", np.random.default_rng(seed), num_frames=num_frames, clip_len=clip_len)
        b = render_video("blue_then_red", np.random.default_rng(seed), num_frames=num_frames, clip_len=clip_len)
        assert a.shape == (num_frames, 72, 96, 3) and a.dtype == np.uint8
        for video, first, second in ((a, "red", "blue"), (b, "blue", "red")):
            one, two = event_frames(video, first), event_frames(video, second)
            assert len(one) == len(two) == EVENT_FRAMES
            assert one == list(range(one[0], one[0] + EVENT_FRAMES)) and two[0] > one[-1]
            assert window[0] <= one[0] and two[-1] <= window[1]  # inside every training clip
            assert two[0] - one[-1] >= min_gap  # as far apart as the shared window allows


def test_every_class_renders_and_differs_per_video():
    for name in SYNTHETIC_CLASSES:
        a = render_video(name, np.random.default_rng(0), num_frames=16, size=(32, 48))
        b = render_video(name, np.random.default_rng(1), num_frames=16, size=(32, 48))
        assert a.shape == (16, 32, 48, 3) and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="unknown synthetic class"):
        render_video("dance", np.random.default_rng(0))


def test_dataset_files_are_deterministic_and_prepare_reads_them(tmp_path):
    kw = dict(num_classes=8, videos_per_class=2, num_frames=24, size=(48, 64), clip_len=16, seed=5)
    first = make_synthetic_dataset(tmp_path / "a", **kw)
    second = make_synthetic_dataset(tmp_path / "b", **kw)
    other = make_synthetic_dataset(tmp_path / "c", **{**kw, "seed": 6, "num_classes": 2})
    files = sorted(p.relative_to(first) for p in first.rglob("*.mp4"))
    assert len(files) == 16 and {f.parts[0] for f in files} == set(list(SYNTHETIC_CLASSES)[:8])
    for f in files:
        assert np.array_equal(read_frames(first / f, [0, 23]), read_frames(second / f, [0, 23]))
    assert not np.array_equal(read_frames(first / files[0], [10]), read_frames(other / files[0], [10]))
    info = probe(first / files[0])
    assert (info.num_frames, info.width, info.height, info.fps) == (24, 64, 48, 25.0)
    report = prepare_dataset(first, tmp_path / "p", val_fraction=0.5)
    assert report.classes == sorted(list(SYNTHETIC_CLASSES)[:8]) and report.counts["train"] == report.counts["val"] == 8
    assert not report.problems


def test_progress_and_bad_arguments(tmp_path):
    calls = []
    make_synthetic_dataset(tmp_path, num_classes=2, videos_per_class=2, num_frames=8, size=(32, 32),
                           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_dataset(tmp_path, num_classes=13)
    for classes in (["red_then_blue"], ["red_then_blue", "dance"], ["ring", "ring"]):
        with pytest.raises(ValueError, match="two or more distinct names"):
            make_synthetic_dataset(tmp_path, classes=classes)
    with pytest.raises(ValueError, match="even"):
        make_synthetic_dataset(tmp_path, size=(33, 32))


def test_local_layout_style_times_the_events_and_twice_classes_repeat_one_event(tmp_path):
    style = dataclasses.replace(LOCAL_ORDER_STYLE, layout=EventLayout(starts=(6, 7), spacing=16))
    for seed in range(4):
        for name, first, second in (("red_then_blue", "red", "blue"), ("red_twice", "red", "red")):
            video = render_video(name, np.random.default_rng(seed), num_frames=32, size=(32, 32), style=style)
            one, two = event_frames(video, first), event_frames(video, second)
            events = sorted(set(one + two))
            assert events[0] in (6, 7) and events == [*range(events[0], events[0] + 4),
                                                       *range(events[0] + 16, events[0] + 20)]
            assert one[0] == events[0] and two[-1] == events[-1]
    with pytest.raises(ValueError, match="does not fit"):
        render_video("red_then_blue", np.random.default_rng(0), num_frames=24, size=(32, 32), style=style)
    out = make_synthetic_dataset(tmp_path, classes=["slide_right", "red_twice"], videos_per_class=1, num_frames=32,
                                 size=(32, 32), style=style)
    assert sorted(p.parent.name for p in out.rglob("*.mp4")) == ["red_twice", "slide_right"]
