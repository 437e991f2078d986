"""Shared test helpers.

Data pipeline: tiny synthetic videos written with PyAV. Each frame carries its own index as 8 black/white
blocks along its top edge (`coded_frames`), so a test can check *which* frame came back (`frame_code`) after
decoding, seeking, resizing or caching, not only its shape. Tests reach the helpers through the `video_tools`
fixture.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: one intra-op thread is as fast, and immune to other jobs on a shared 2-core
    machine (spinning OpenMP workers made small convolutions several times slower there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------- data pipeline
CODE_BITS = 8


def coded_frames(n: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3): a moving textured scene with frame index i written in the top band as bits."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(40, 200, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    texture = texture.repeat(4, 0).repeat(4, 1)[:height, :width]
    band = height // 6
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        img = np.roll(texture, i, axis=1).copy()
        img[:band] = 128
        for bit in range(CODE_BITS):
            x0, x1 = bit * width // CODE_BITS, (bit + 1) * width // CODE_BITS
            img[: band, x0 + 1: x1 - 1] = 255 if (i >> bit) & 1 else 0
        frames[i] = img
    return frames


def frame_code(frame) -> int:
    """The index written by `coded_frames` into a decoded frame (any size, uint8 (H, W, 3))."""
    a = np.asarray(frame)
    h, w = a.shape[:2]
    y = int(h / 12)  # middle of the top band
    code = 0
    for bit in range(CODE_BITS):
        x = int((bit + 0.5) * w / CODE_BITS)
        if a[y, x].mean() > 128:
            code |= 1 << bit
    return code


def write_coded(path, n: int, *, size: tuple[int, int] = (48, 64), codec: str = "libx264", fps: int = 25,
                gop: int | None = None, bframes: bool = False, rotation: int | None = None,
                faststart: bool = False, frames: np.ndarray | None = None) -> Path:
    """Write `coded_frames(n)` (or `frames`) as a video; returns the path.

    Args:
        codec: "libx264", "mpeg4", "mjpeg", "gif".
        gop: keyframe interval in frames.
        bframes: allow B-frames (so decode order differs from file order).
        rotation: display-matrix angle as PyAV reads it back (FFmpeg's counter-clockwise degrees).
        faststart: MP4 header at the front (so a truncated file still opens).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = coded_frames(n, *size) if frames is None else frames
    pix = {"mjpeg": "yuvj420p", "gif": "rgb8"}.get(codec, "yuv420p")
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = pix
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if codec == "libx264":
            opts = {"preset": "veryfast" if bframes else "ultrafast", "crf": "12", "threads": "1"}
            if gop:
                stream.gop_size = gop
                opts.update({"keyint_min": str(gop), "sc_threshold": "0"})
            stream.options = opts
        elif codec == "mpeg4":
            stream.bit_rate = 3_000_000
            stream.options = {"bf": "2"} if bframes else {}
            if gop:
                stream.gop_size = gop
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path) -> Path:
    """An AAC file with no video stream."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_lying_avi(path, n: int = 12, claimed: int = 444) -> Path:
    """An MPEG-4 AVI whose headers claim `claimed` frames while `n` decode."""
    import struct

    path = write_coded(path, n, codec="mpeg4")
    data = bytearray(path.read_bytes())
    avih = data.find(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, claimed)  # dwTotalFrames
    strh = data.find(b"strh")
    struct.pack_into("<I", data, strh + 8 + 32, claimed)  # dwLength of the video stream
    path.write_bytes(bytes(data))
    return path


def write_truncated_mp4(path, n: int = 30) -> Path:
    """A faststart MP4 cut in the middle of its media data: the header lists n frames, fewer decode."""
    path = write_coded(path, n, faststart=True)
    data = path.read_bytes()
    mdat = data.find(b"mdat")
    path.write_bytes(data[: mdat + (len(data) - mdat) // 2])
    return path


def write_frame_folder(folder, n: int, size: tuple[int, int] = (48, 64)) -> Path:
    """A reference-style frame folder img_00001.jpg ... of coded frames."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(coded_frames(n, *size), start=1):
        Image.fromarray(f).save(folder / f"img_{i:05d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="session")
def video_tools() -> SimpleNamespace:
    """The video-writing and frame-code helpers of this file."""
    return SimpleNamespace(coded_frames=coded_frames, frame_code=frame_code, write_coded=write_coded,
                           write_audio_only=write_audio_only, write_lying_avi=write_lying_avi,
                           write_truncated_mp4=write_truncated_mp4, write_frame_folder=write_frame_folder)


@pytest.fixture(scope="session")
def video_files(tmp_path_factory) -> dict[str, Path]:
    """Small coded videos of several codecs and containers, written once per session."""
    d = tmp_path_factory.mktemp("videos")
    return {
        "h264": write_coded(d / "h264.mp4", 40),
        "h264_gop": write_coded(d / "h264_gop.mp4", 60, gop=10, bframes=True),
        "mpeg4_avi": write_coded(d / "mpeg4_b.avi", 30, codec="mpeg4", bframes=True, gop=12),
        "mjpeg": write_coded(d / "mjpeg.avi", 12, codec="mjpeg"),
        "gif": write_coded(d / "anim.gif", 10, codec="gif"),
        "rot90": write_coded(d / "rot90.mp4", 6, rotation=-90),
        "folder": write_frame_folder(d / "frames_clip", 9),
    }


#: The classes of `tiny_model_dir`.
TINY_CLASSES = ["walk", "run", "jump"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny model folder (r2plus1d_tiny + BERT, random weights, `TINY_CLASSES`): 8-frame clips, 32-px crops of
    36 x 48 frames."""
    from actionbert.checkpoint import inference_config, save_pretrained
    from actionbert.models import build_model

    torch.manual_seed(0)
    model = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=len(TINY_CLASSES), clip_len=8,
                        input_size=32).eval()
    info = inference_config(model, classes=TINY_CLASSES, resize=(36, 48), norm="torchvision")
    return save_pretrained(model, tmp_path_factory.mktemp("model") / "m", info=info)

