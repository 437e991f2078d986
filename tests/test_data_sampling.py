"""Sampling rules (METHOD.md §7) as closed-form index lists."""

import random

import numpy as np
import pytest

from actionbert.data.sampling import (center_clip_indices, circular_indices, clip_span, test_window_indices,
                                      test_window_starts, train_clip_indices, uniform_clip_indices)


def reference_padded_clip(num_frames: int, clip_len: int, offset: int) -> list[int]:
    """The reference loader's rule, 1-based: frame k = (offset + j) % (N) with 0 -> N, j = 1..L; as 0-based."""
    out = []
    for j in range(1, clip_len + 1):
        k = (offset + j) % num_frames
        out.append((num_frames if k == 0 else k) - 1)
    return out


# --------------------------------------------------------------------------------------------- circular
def test_circular_padding_wraps_one_to_n():
    assert circular_indices(3, 8) == [0, 1, 2, 0, 1, 2, 0, 1]
    assert circular_indices(1, 4) == [0, 0, 0, 0]
    assert circular_indices(5, 5) == [0, 1, 2, 3, 4]
    assert circular_indices(5, 3, start=4) == [4, 0, 1]
    assert circular_indices(5, 4, start=0, stride=2) == [0, 2, 4, 1]


@pytest.mark.parametrize("num_frames", [1, 2, 3, 7, 31, 32, 33, 64])
@pytest.mark.parametrize("clip_len", [1, 8, 32])
def test_circular_padding_matches_reference_rule(num_frames, clip_len):
    for offset in range(num_frames):
        assert circular_indices(num_frames, clip_len, offset) == reference_padded_clip(num_frames, clip_len, offset)


def test_span():
    assert clip_span(32) == 32
    assert clip_span(32, 2) == 63
    assert clip_span(1, 5) == 1


# --------------------------------------------------------------------------------------------- train
@pytest.mark.parametrize("rng", [random.Random(0), np.random.default_rng(0)])
def test_train_start_uniform_over_all_valid_starts(rng):
    n, length = 40, 32  # valid starts 0..8
    starts = [train_clip_indices(n, length, rng=rng)[0] for _ in range(2000)]
    counts = np.bincount(starts, minlength=9)
    assert len(counts) == 9 and counts.min() > 150  # every start 0..8 drawn, roughly uniformly (mean 222)
    clip = train_clip_indices(n, length, rng=rng)
    assert clip == list(range(clip[0], clip[0] + length))


def test_train_clip_with_stride_stays_inside():
    rng = random.Random(1)
    for _ in range(200):
        clip = train_clip_indices(100, 16, stride=2, rng=rng)
        assert 0 <= clip[0] <= 100 - 31 and clip == [clip[0] + 2 * i for i in range(16)]


def test_train_short_or_exact_video_starts_at_zero():
    rng = random.Random(0)
    assert train_clip_indices(32, 32, rng=rng) == list(range(32))
    for _ in range(10):
        assert train_clip_indices(10, 32, rng=rng) == [i % 10 for i in range(32)]
        assert train_clip_indices(1, 4, rng=rng) == [0, 0, 0, 0]


def test_train_is_reproducible_with_seeded_generators():
    a = [train_clip_indices(300, 32, rng=np.random.default_rng([7, 0, i]))[0] for i in range(20)]
    b = [train_clip_indices(300, 32, rng=np.random.default_rng([7, 0, i]))[0] for i in range(20)]
    assert a == b and len(set(a)) > 1


# --------------------------------------------------------------------------------------------- centre
@pytest.mark.parametrize("num_frames, start", [(32, 0), (33, 0), (34, 1), (70, 19), (71, 19), (72, 20), (300, 134)])
def test_center_clip_start(num_frames, start):
    assert center_clip_indices(num_frames, 32) == list(range(start, start + 32))
    # the reference's validation offset int((D - L + 1) / 2) with D = N - 1
    assert start == int((num_frames - 1 - 32 + 1) / 2)


def test_center_clip_short_video_is_padded_from_zero():
    assert center_clip_indices(5, 12) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_center_clip_with_stride():
    # span 63 in 100 frames: start (100 - 63) // 2 = 18
    assert center_clip_indices(100, 32, stride=2) == [18 + 2 * i for i in range(32)]


# --------------------------------------------------------------------------------------------- test windows
@pytest.mark.parametrize("num_frames, starts", [
    (32, [0]), (63, [15]), (64, [0, 32]), (70, [3, 35]), (100, [2, 34, 66]), (128, [0, 32, 64, 96]),
])
def test_test_windows_are_non_overlapping_and_centred(num_frames, starts):
    windows = test_window_indices(num_frames, 32)
    assert [w[0] for w in windows] == starts
    for w in windows:
        assert w == list(range(w[0], w[0] + 32))
    used = [i for w in windows for i in w]
    assert len(used) == len(set(used))  # no frame in two windows
    left, right = used[0], num_frames - 1 - used[-1]
    assert left == (num_frames - 32 * len(windows)) // 2 and right - left in (0, 1)


def test_single_test_window_equals_centre_clip():
    for n in range(32, 64):
        assert test_window_indices(n, 32) == [center_clip_indices(n, 32)]


def test_short_video_gives_one_padded_window():
    assert test_window_indices(20, 32) == [[i % 20 for i in range(32)]]
    assert test_window_indices(1, 3) == [[0, 0, 0]]


def test_test_windows_with_stride():
    # span 22, windows 24 apart: 4 windows use 3 * 24 + 22 = 94 of 100 frames, offset 3
    assert test_window_starts(100, 8, stride=3) == [3, 27, 51, 75]
    windows = test_window_indices(100, 8, stride=3)
    assert windows[1] == [27 + 3 * i for i in range(8)]
    assert max(max(w) for w in windows) < 100


# --------------------------------------------------------------------------------------------- uniform
def test_uniform_clips():
    clips = uniform_clip_indices(100, 32, 3)
    assert [c[0] for c in clips] == [0, 34, 68]
    assert uniform_clip_indices(100, 32, 1) == [center_clip_indices(100, 32)]
    assert uniform_clip_indices(10, 32, 2) == [circular_indices(10, 32)] * 2
    assert [c[0] for c in uniform_clip_indices(37, 32, 4)] == [0, 2, 3, 5]  # 5/3 = 1.67 -> 2, 3.33 -> 3


@pytest.mark.parametrize("call", [
    lambda: circular_indices(0, 4), lambda: circular_indices(4, 0), lambda: center_clip_indices(4, 2, stride=0),
    lambda: uniform_clip_indices(10, 4, 0),
])
def test_invalid_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
