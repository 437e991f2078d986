"""The demo's design: local temporal tokens and an event layout under which averaging the tokens (TGAP) cannot
tell "A then B" from "B then A" while the ordered tokens (what BERT reads) can. Checked in closed form on the
untrained backbone, so it needs no training: seconds."""

import dataclasses

import numpy as np
import pytest
import torch

from actionbert.data.synthetic import (LOCAL_ORDER_STYLE, EventLayout, class_groups, local_event_layout,
                                       render_video)
from actionbert.models.backbones import get_backbone_spec, temporal_windows

LOCAL = "r2plus1d_local_tiny"


def test_local_variant_tokens_see_eleven_frames_the_tiny_r2plus1d_the_whole_clip():
    assert temporal_windows(LOCAL, 32, size=16) == [(0, 5), (3, 13), (11, 21), (19, 29)]
    assert temporal_windows("r2plus1d_tiny", 32, size=16)[1:] == [(0, 31)] * 3


def test_event_layout_in_closed_form():
    assert local_event_layout(temporal_windows(LOCAL, 32, size=16)) == EventLayout(starts=(6, 7), spacing=16)
    # tokens every frame seeing 7 frames (an MC3-like layout): clean frames 6..25, events 10 frames apart
    grid = [(max(0, k - 3), min(31, k + 3)) for k in range(32)]
    assert local_event_layout(grid) == EventLayout(starts=tuple(range(6, 13)), spacing=10)
    with pytest.raises(ValueError, match="not local"):
        local_event_layout(temporal_windows("r2plus1d_tiny", 32, size=16))
    with pytest.raises(ValueError, match="neighbouring unpadded tokens"):
        local_event_layout(temporal_windows(LOCAL, 16, size=16))


def _pieces(seed: int, layout: EventLayout):
    """Background frame, the first and the second event's frames of a noise-free red_then_blue video, its start."""
    style = dataclasses.replace(LOCAL_ORDER_STYLE, layout=layout, noise=0.0)
    video = render_video("red_then_blue", np.random.default_rng(seed), num_frames=32, size=(32, 32), style=style)
    changed = [t for t in range(32) if not np.array_equal(video[t], video[0])]
    start = changed[0]
    assert start in layout.starts and changed == [*range(start, start + 4), *range(start + 16, start + 20)]
    return video[0], video[start:start + 4], video[start + 16:start + 20], start


def _video(background, first, second, start: int) -> torch.Tensor:
    frames = np.repeat(background[None], 32, axis=0)
    frames[start:start + 4], frames[start + 16:start + 20] = first, second
    return torch.from_numpy(frames).permute(3, 0, 1, 2).double() / 255  # (3, T, H, W)


def _tokens(backbone: str, videos: list[torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(0)
    net = get_backbone_spec(backbone).build().double().eval()
    with torch.no_grad():
        return net(torch.stack(videos)).mean(dim=(3, 4))  # (N, C, T'): one token per temporal position


def _mean_and_order_gaps(backbone: str, seed: int, start: int | None = None) -> tuple[float, float]:
    """Relative difference between A-then-B and B-then-A of the token mean, and of the position-weighted sum."""
    background, red, blue, drawn = _pieces(seed, EventLayout(starts=(6, 7), spacing=16))
    start = drawn if start is None else start
    tokens = _tokens(backbone, [_video(background, red, blue, start), _video(background, blue, red, start)])
    scale = tokens.abs().mean()
    mean_gap = (tokens[0].mean(-1) - tokens[1].mean(-1)).abs().max() / scale
    position = torch.arange(tokens.shape[-1], dtype=tokens.dtype)
    order_gap = ((tokens[0] - tokens[1]) * position).sum(-1).abs().max() / scale
    return float(mean_gap), float(order_gap)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_designed_order_pair_is_inseparable_by_the_token_mean_and_separable_by_position(seed):
    mean_gap, order_gap = _mean_and_order_gaps(LOCAL, seed)
    assert mean_gap < 1e-9  # TGAP sees the same vector for both orders, up to float64 rounding
    assert order_gap > 0.1  # a readout that weighs tokens by position tells them apart


@pytest.mark.parametrize(("backbone", "start"), [("r2plus1d_tiny", None), (LOCAL, 5), (LOCAL, 8)])
def test_the_mean_leaks_the_order_with_global_tokens_or_events_outside_the_layout(backbone, start):
    """The same check fails where the design says it must: tokens that see the whole clip (the tiny R(2+1)D), an
    event seen by the zero-padded first token (start 5), or one reaching frames past the last token (start 8)."""
    mean_gap, _ = _mean_and_order_gaps(backbone, 0, start)
    assert mean_gap > 1e-3


def test_class_groups():
    classes = ["slide_left", "red_then_blue", "red_twice", "blue_then_red"]
    assert class_groups(classes) == {"order_only": ["red_then_blue", "blue_then_red"],
                                     "control": ["slide_left", "red_twice"], "all": classes}
