"""Decoding: frame identity by index across codecs, seeking, rotation, streaming, and every failure."""

import os

import numpy as np
import pytest
import torch

from actionbert.data import decode, seekindex
from actionbert.data.decode import VideoDecodeError, frame_table, iter_frames, probe, read_frames


def codes(frames, video_tools) -> list[int]:
    return [video_tools.frame_code(f) for f in frames]


@pytest.mark.parametrize("name, count, codec", [
    ("h264", 40, "h264"), ("h264_gop", 60, "h264"), ("mpeg4_avi", 30, "mpeg4"), ("mjpeg", 12, "mjpeg"),
    ("gif", 10, "gif"),
])
def test_probe_counts_by_decoding_and_frames_come_back_in_index_order(video_files, video_tools, name, count,
                                                                       codec):
    info = probe(video_files[name])
    assert (info.num_frames, info.codec, info.width, info.height, info.rotation) == (count, codec, 64, 48, 0)
    assert info.fps == pytest.approx(25.0) and info.decode_error is None
    wanted = [3, 0, 3, count - 1, 1]  # any order, repeats allowed
    frames = read_frames(video_files[name], wanted)
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == torch.uint8
    assert codes(frames, video_tools) == wanted


def test_resize_in_the_same_step(video_files, video_tools):
    frames = read_frames(video_files["h264"], [7, 8], size=(24, 40))
    assert frames.shape == (2, 24, 40, 3) and codes(frames, video_tools) == [7, 8]


def test_seek_lands_on_the_right_frames_with_b_frames(video_files, video_tools):
    path = video_files["h264_gop"]  # keyframe every 10 frames, B-frames
    table = seekindex.DEFAULT_INDEX.table(path, 47, 60)
    assert table is not None and table.key_ranks == [0, 10, 20, 30, 40, 50]  # a read of 47.. seeks to 40
    clip = read_frames(path, range(47, 55), num_frames=60)
    assert codes(clip, video_tools) == list(range(47, 55))
    every = torch.stack(list(iter_frames(path)))  # plain sequential decoding from frame 0, counted
    assert torch.equal(clip, every[47:55])  # pixel-exact, although non-reference frames before 47 were skipped
    assert torch.equal(read_frames(path, [5, 6], num_frames=60), every[5:7])  # no seek, skipping only
    # circular padding: the end of the video followed by its start
    assert codes(read_frames(path, [58, 59, 0, 1], num_frames=60), video_tools) == [58, 59, 0, 1]


def test_no_timestamp_indexing_without_a_trusted_count_or_for_avi(video_files, tmp_path, video_tools):
    copy = tmp_path / "unprobed.mp4"
    copy.write_bytes(video_files["h264_gop"].read_bytes())
    decode.probe(copy)
    assert seekindex.DEFAULT_INDEX.table(copy, 47, None) is None  # no count given: not trusted, even after a probe
    assert seekindex.DEFAULT_INDEX.table(copy, 47, 59) is None  # a count that disagrees with the packets
    assert seekindex.DEFAULT_INDEX.table(video_files["mpeg4_avi"], 20, 30) is None  # AVI timestamps are not trusted
    assert codes(read_frames(video_files["mpeg4_avi"], range(20, 30), num_frames=30), video_tools) == \
        list(range(20, 30))


def test_rotation_metadata_is_applied(video_files, video_tools):
    info = probe(video_files["rot90"])  # stored 64 x 48, display matrix -90: turn 90 degrees clockwise
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    assert read_frames(video_files["rot90"], [0], size=(32, 24)).shape == (1, 32, 24, 3)
    upright = read_frames(video_files["rot90"], [5])[0].numpy()
    assert upright.shape == (64, 48, 3)
    stored = np.rot90(upright, k=1)  # undo the clockwise turn
    assert video_tools.frame_code(stored) == 5
    original = video_tools.coded_frames(6)[5].astype(float)
    error = {name: np.abs(img.astype(float) - original).mean() for name, img in [
        ("right", stored), ("upside down", np.rot90(upright, k=-1)), ("mirrored", np.fliplr(stored))]}
    assert error["right"] < 15 and error["right"] + 20 < min(error["upside down"], error["mirrored"])


def test_frame_folder_reads_like_a_video(video_files, video_tools):
    info = probe(video_files["folder"])
    assert (info.num_frames, info.width, info.height, info.codec) == (9, 64, 48, "images")
    assert codes(read_frames(video_files["folder"], [8, 0, 8]), video_tools) == [8, 0, 8]
    assert codes(iter_frames(video_files["folder"], start=6), video_tools) == [6, 7, 8]


def test_iter_frames_streams_a_range(video_files, video_tools):
    frames = list(iter_frames(video_files["h264_gop"], start=25, stop=31, size=(24, 32)))
    assert [f.shape for f in frames] == [(24, 32, 3)] * 6
    assert codes(frames, video_tools) == list(range(25, 31))
    assert len(list(iter_frames(video_files["h264"]))) == 40


def test_frame_table_times_and_keyframes(video_files):
    table = frame_table(video_files["h264_gop"])
    assert table.times == pytest.approx([i / 25 for i in range(60)])
    assert [i for i, k in enumerate(table.keyframes) if k] == [0, 10, 20, 30, 40, 50]
    assert table.pts == sorted(table.pts) and len(table.pts) == 60
    assert frame_table(video_files["mpeg4_avi"]).pts is None  # AVI timestamps are not used for cutting


def test_odd_sizes(tmp_path, video_tools):
    frames = video_tools.coded_frames(4, 50, 66)
    path = video_tools.write_coded(tmp_path / "odd.avi", 4, codec="mjpeg", frames=frames)
    out = read_frames(path, [0, 3], size=(25, 33))
    assert out.shape == (2, 25, 33, 3) and codes(out, video_tools) == [0, 3]


# --------------------------------------------------------------------------------------------- failures
def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(VideoDecodeError, match="file not found") as e:
        probe(tmp_path / "nope.mp4")
    assert e.value.kind == "missing" and str(tmp_path / "nope.mp4") in str(e.value)
    link = tmp_path / "dangling.mp4"
    link.symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(VideoDecodeError, match="broken symbolic link"):
        probe(link)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    with pytest.raises(VideoDecodeError, match="cannot read") as e:
        probe(loop)
    assert e.value.kind == "unreadable"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission")
def test_permission_denied(tmp_path, video_files):
    path = tmp_path / "locked.mp4"
    path.write_bytes(video_files["h264"].read_bytes())
    path.chmod(0)
    with pytest.raises(VideoDecodeError, match="permission denied"):
        probe(path)


def test_empty_text_audio_and_image_files(tmp_path, video_tools):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    text = tmp_path / "notes.txt"
    text.write_text("this is not a video\n" * 20)
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video either\n" * 20)
    audio = video_tools.write_audio_only(tmp_path / "sound.m4a")
    still = tmp_path / "still.jpg"
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(still)
    expected = [(empty, "empty", "zero-byte"), (text, "not_video", "not a video"), (fake, "corrupt", "corrupt"),
                (audio, "audio_only", "audio only"), (still, "not_video", "still image")]
    for path, kind, words in expected:
        with pytest.raises(VideoDecodeError) as e:
            probe(path)
        assert e.value.kind == kind and words in e.value.problem and str(path) in str(e.value)


def test_truncated_file_keeps_the_frames_before_the_error(tmp_path, video_tools):
    path = video_tools.write_truncated_mp4(tmp_path / "cut.mp4", 30)
    info = probe(path)
    assert info.header_frames == 30 and 5 < info.num_frames < 30
    assert "decoder error" in info.decode_error
    n = info.num_frames
    assert codes(read_frames(path, [0, n - 1]), video_tools) == [0, n - 1]
    with pytest.raises(VideoDecodeError, match=f"frame {n} requested") as e:
        read_frames(path, [n])
    assert e.value.kind == "short_read"
    with pytest.raises(VideoDecodeError, match="decoder error"):
        list(iter_frames(path))


def test_lying_header_is_not_trusted(tmp_path, video_tools):
    path = video_tools.write_lying_avi(tmp_path / "liar.avi", n=12, claimed=444)
    info = probe(path)
    assert (info.header_frames, info.num_frames) == (444, 12)
    with pytest.raises(VideoDecodeError, match="frame 100 requested but only 12 frames decode"):
        read_frames(path, [100])


def test_non_ascii_path(tmp_path, video_tools):
    path = video_tools.write_coded(tmp_path / "vidéos" / "clip_ü_日本.mp4", 5)
    assert probe(path).num_frames == 5
    assert codes(read_frames(path, [4]), video_tools) == [4]


def test_decode_error_pickles_with_its_kind():
    import pickle

    e = pickle.loads(pickle.dumps(VideoDecodeError("a.mp4", "zero-byte file", "empty")))
    assert (e.path, e.problem, e.kind, str(e)) == ("a.mp4", "zero-byte file", "empty", "a.mp4: zero-byte file")


# ------------------------------------------------------------------------------------------ VideoStream
@pytest.mark.parametrize("name", ["h264", "h264_gop", "mpeg4_avi", "gif", "rot90", "folder"])
def test_video_stream_is_one_pass_that_also_probes(video_files, video_tools, name, monkeypatch):
    path = video_files[name]
    expected_info = probe(path)
    expected_frames = list(iter_frames(path, size=(24, 32)))
    opens = []
    original_open = decode._open
    monkeypatch.setattr(decode, "_open", lambda *a, **k: opens.append(a) or original_open(*a, **k))
    stream = decode.VideoStream(path, size=(24, 32))
    assert stream.info is None  # known only once the stream has ended
    frames = list(stream)
    assert len(opens) == (0 if name == "folder" else 1)  # one decoding pass, no probe before it
    assert stream.info == expected_info
    assert len(frames) == expected_info.num_frames
    assert all(torch.equal(a, b) for a, b in zip(frames, expected_frames))


def test_video_stream_short_side_follows_the_upright_frame(video_files, video_tools):
    upright = list(decode.VideoStream(video_files["rot90"], short_side=24))  # upright 48 wide x 64 high
    assert upright[0].shape == (32, 24, 3)
    assert torch.equal(torch.stack(upright), read_frames(video_files["rot90"], range(6), size=(32, 24)))
    assert list(decode.VideoStream(video_files["h264"], short_side=24))[0].shape == (24, 32, 3)
    with pytest.raises(ValueError, match="size or short_side"):
        decode.VideoStream(video_files["h264"], size=(24, 32), short_side=24)


def test_video_stream_errors(tmp_path, video_tools):
    path = video_tools.write_truncated_mp4(tmp_path / "cut.mp4", 30)
    stream = decode.VideoStream(path)
    got = []
    with pytest.raises(VideoDecodeError, match="decoder error"):
        for frame in stream:
            got.append(frame)
    assert stream.info == probe(path) and len(got) == stream.info.num_frames  # good frames first, then the error
    assert "decoder error" in stream.info.decode_error
    with pytest.raises(VideoDecodeError, match="file not found"):
        list(decode.VideoStream(tmp_path / "missing.mp4"))
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoDecodeError):
        next(iter(decode.VideoStream(tmp_path / "notes.mp4")))
