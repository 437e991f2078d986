"""Transforms: crop sizes and positions, flips, normalisation values, view order."""

import random

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from actionbert.data.transforms import (CROP_POSITIONS, NORMALIZATION, crop_offsets, crop_size_pairs,
                                        eval_transform, sample_multiscale_crop, ten_crop_transform,
                                        train_transform)

TV_MEAN = torch.tensor([0.43216, 0.394666, 0.37645]).view(3, 1, 1, 1)
TV_STD = torch.tensor([0.22803, 0.22145, 0.216989]).view(3, 1, 1, 1)
HARA_MEAN = torch.tensor([114.7748, 107.7354, 99.4750]).view(3, 1, 1, 1)


def coordinate_clip(t: int, height: int, width: int) -> torch.Tensor:
    """uint8 (T, H, W, 3): R = column, G = row, B = frame index (all < 256)."""
    rows = torch.arange(height).view(1, height, 1).expand(t, height, width)
    cols = torch.arange(width).view(1, 1, width).expand(t, height, width)
    times = torch.arange(t).view(t, 1, 1).expand(t, height, width)
    return torch.stack([cols, rows, times], dim=-1).to(torch.uint8)


def raw(video: torch.Tensor) -> torch.Tensor:
    """Undo the "hara" normalisation: back to 0..255 values, (3, T, H, W)."""
    return video + HARA_MEAN


def test_normalization_presets():
    assert NORMALIZATION["torchvision"].mean == (0.43216, 0.394666, 0.37645)
    assert NORMALIZATION["torchvision"].std == (0.22803, 0.22145, 0.216989)
    assert NORMALIZATION["torchvision"].value_scale == pytest.approx(1 / 255)
    assert NORMALIZATION["hara"].mean == (114.7748, 107.7354, 99.4750)
    assert NORMALIZATION["hara"].std == (1.0, 1.0, 1.0) and NORMALIZATION["hara"].value_scale == 1.0


def test_normalised_values_and_layout():
    frames = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    x = frames.permute(3, 0, 1, 2).float()  # (3, T, H, W)
    tv = eval_transform(resize=(8, 8), crop_size=8, norm="torchvision")(frames)
    assert tv.shape == (3, 4, 8, 8) and tv.dtype == torch.float32
    torch.testing.assert_close(tv, (x / 255 - TV_MEAN) / TV_STD, atol=1e-5, rtol=1e-5)
    hara = eval_transform(resize=(8, 8), crop_size=8, norm="hara")(frames)
    torch.testing.assert_close(hara, x - HARA_MEAN, atol=1e-4, rtol=1e-6)


def test_crop_size_pairs_for_128x170():
    assert crop_size_pairs(128, 170) == [(128, 128), (128, 112), (112, 128), (112, 112), (112, 96), (96, 112),
                                         (96, 96), (96, 84), (84, 96), (84, 84)]
    assert crop_size_pairs(72, 96) == [(72, 72), (72, 63), (63, 72), (63, 63), (63, 54), (54, 63), (54, 54),
                                       (54, 47), (47, 54), (47, 47)]


def test_thirteen_crop_positions():
    # 112 x 112 in 128 x 170: steps (128 - 112) // 4 = 4 rows, (170 - 112) // 4 = 14 columns
    assert crop_offsets(128, 170, 112, 112) == [
        (0, 0), (0, 56), (16, 0), (16, 56), (8, 28), (0, 28), (16, 28), (8, 0), (8, 56),
        (4, 14), (4, 42), (12, 14), (12, 42)]
    assert len(CROP_POSITIONS) == len(set(CROP_POSITIONS)) == 13
    for h, w in crop_size_pairs(128, 170):  # every candidate stays inside the frame
        for top, left in crop_offsets(128, 170, h, w):
            assert 0 <= top and top + h <= 128 and 0 <= left and left + w <= 170


def test_sampled_crops_cover_all_sizes_and_positions():
    rng = random.Random(0)
    boxes = {sample_multiscale_crop(128, 170, rng) for _ in range(3000)}
    sizes = {(h, w) for _, _, h, w in boxes}
    assert sizes == set(crop_size_pairs(128, 170))
    assert {(t, left) for t, left, h, w in boxes if (h, w) == (96, 84)} == set(crop_offsets(128, 170, 96, 84))


def test_train_crop_equals_drawn_box_resized_and_same_for_every_frame():
    frames = coordinate_clip(5, 128, 170)
    transform = train_transform(resize=(128, 170), crop_size=112, norm="hara")
    for seed in range(6):
        out = transform(frames, random.Random(seed))
        rng = random.Random(seed)
        top, left, h, w = sample_multiscale_crop(128, 170, rng)
        flip = rng.random() < 0.5
        video = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
        expected = F.resized_crop(video, top, left, h, w, [112, 112], antialias=True)
        if flip:
            expected = F.horizontal_flip(expected)
        assert out.shape == (3, 5, 112, 112)
        torch.testing.assert_close(raw(out), expected.permute(1, 0, 2, 3).float(), atol=1e-3, rtol=0)
        # same spatial crop in every frame: only the B channel (frame index) changes over time
        assert torch.equal(out[:2, 0], out[:2, 4])
        torch.testing.assert_close(raw(out)[2, :, 50, 50], torch.arange(5.0), atol=1e-3, rtol=0)


def test_flip_probability_and_exact_flip():
    frames = coordinate_clip(2, 64, 64)
    never = train_transform(resize=(64, 64), crop_size=64, norm="hara", scales=(1.0,), flip_p=0.0)
    always = train_transform(resize=(64, 64), crop_size=64, norm="hara", scales=(1.0,), flip_p=1.0)
    a, b = raw(never(frames, random.Random(0))), raw(always(frames, random.Random(0)))
    torch.testing.assert_close(a[0, 0, 0, :3], torch.tensor([0.0, 1.0, 2.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(b, a.flip(-1), atol=1e-3, rtol=0)
    maybe = train_transform(resize=(64, 64), crop_size=64, scales=(1.0,), norm="hara")
    flips = sum(bool(raw(maybe(frames, random.Random(s)))[0, 0, 0, 0] > 0) for s in range(400))
    assert 150 < flips < 250  # p = 0.5


def test_center_crop_position():
    out = raw(eval_transform(resize=(128, 170), crop_size=112, norm="hara")(coordinate_clip(3, 128, 170)))
    assert out.shape == (3, 3, 112, 112)
    assert out[0, 0, 0, 0].item() == pytest.approx(29, abs=1e-3)  # left = round((170 - 112) / 2)
    assert out[1, 0, 0, 0].item() == pytest.approx(8, abs=1e-3)  # top = round((128 - 112) / 2)


def test_ten_crop_views_in_documented_order():
    out = raw(ten_crop_transform(resize=(128, 170), crop_size=112, norm="hara")(coordinate_clip(2, 128, 170)))
    assert out.shape == (10, 3, 2, 112, 112)
    corners = [(29, 8), (0, 0), (58, 0), (0, 16), (58, 16)]  # (left, top): centre, tl, tr, bl, br
    for v, (left, top) in enumerate(corners):
        assert (out[v, 0, 0, 0, 0].item(), out[v, 1, 0, 0, 0].item()) == pytest.approx((left, top), abs=1e-3)
        torch.testing.assert_close(out[v + 5], out[v].flip(-1))


def test_resize_and_keep_aspect():
    frames = torch.randint(0, 256, (3, 48, 96, 3), dtype=torch.uint8)
    assert eval_transform(resize=(72, 96), crop_size=64)(frames).shape == (3, 3, 64, 64)
    keep = eval_transform(resize=64, crop_size=64)
    assert keep.resize(48, 96) == (64, 128) and keep.resize(96, 48) == (128, 64)
    assert keep(frames).shape == (3, 3, 64, 64)


def test_transform_works_with_numpy_generators_and_is_deterministic():
    frames = torch.randint(0, 256, (4, 72, 96, 3), dtype=torch.uint8)
    t = train_transform(resize=(72, 96), crop_size=64)
    a = t(frames, np.random.default_rng(3))
    b = t(frames, np.random.default_rng(3))
    assert torch.equal(a, b)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="uint8 frames"):
        eval_transform()(torch.zeros(2, 3, 128, 170))
    with pytest.raises(ValueError, match="smaller than crop"):
        eval_transform(resize=(64, 64), crop_size=112)(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown normalisation"):
        eval_transform(norm="imagenet")


def test_eval_transform_in_two_halves_equals_the_whole_bit_for_bit():
    """Decoding processes hand over uint8 crops (a quarter of the bytes) and the model's process normalises a
    stack of them: the same float clips as the whole transform, per clip."""
    from actionbert.data.transforms import EvalTransform

    g = torch.Generator().manual_seed(0)
    clips = [torch.randint(0, 256, (4, 30, 40, 3), dtype=torch.uint8, generator=g) for _ in range(3)]
    t = EvalTransform(resize=(24, 32), crop_size=16, norm="torchvision")
    halves = t.normalized(torch.stack([t.cropped(c) for c in clips]))
    assert halves.dtype == torch.float32 and halves.shape == (3, 3, 4, 16, 16)
    assert torch.equal(halves, torch.stack([t(c) for c in clips]))
