"""`clips`: scene, fixed and cut-list cutting; stream copy vs re-encode; clips.csv."""

import csv

import numpy as np
import pytest

from actionbert.data.clips import ClipSpecError, cut_clips, parse_time
from actionbert.data.decode import probe, read_frames


def three_scenes(video_tools, n_per_scene: int = 30) -> np.ndarray:
    """Coded frames in three visually different, static scenes (code band untouched)."""
    frames = video_tools.coded_frames(3 * n_per_scene)
    body = slice(8, None)  # below the 8-pixel code band
    frames[:, body] = frames[0, body]
    frames[n_per_scene:2 * n_per_scene, body] = 255 - frames[n_per_scene:2 * n_per_scene, body]
    frames[2 * n_per_scene:, body] = frames[2 * n_per_scene:, body][..., ::-1] // 3
    return frames


def clip_codes(path, video_tools) -> list[int]:
    n = probe(path).num_frames
    return [video_tools.frame_code(f) for f in read_frames(path, range(n))]


def rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_scene_cuts_on_keyframes_are_stream_copied(tmp_path, video_tools):
    src = video_tools.write_coded(tmp_path / "long.mp4", 90, gop=30, frames=three_scenes(video_tools))
    report = cut_clips([src], tmp_path / "out", method="scenes")
    assert [(c.start_frame, c.end_frame, c.mode) for c in report.clips] == [(0, 30, "copy"), (30, 60, "copy"),
                                                                            (60, 90, "copy")]
    assert [c.clip.name for c in report.clips] == ["long_0001.mp4", "long_0002.mp4", "long_0003.mp4"]
    assert clip_codes(report.clips[1].clip, video_tools) == list(range(30, 60))
    assert (report.clips[1].start, report.clips[1].end) == pytest.approx((1.2, 2.4))
    listed = rows(tmp_path / "out" / "clips.csv")
    assert [r["clip"] for r in listed] == ["long_0001.mp4", "long_0002.mp4", "long_0003.mp4"]
    assert listed[2] == {"clip": "long_0003.mp4", "source": str(src), "start": "2.400", "end": "3.600",
                         "start_frame": "60", "end_frame": "90", "label": "", "mode": "copy"}


def test_cuts_between_keyframes_are_reencoded_frame_exactly(tmp_path, video_tools):
    src = video_tools.write_coded(tmp_path / "long.mp4", 90, gop=25, frames=three_scenes(video_tools))
    report = cut_clips([src], tmp_path / "out", method="scenes")
    assert [(c.start_frame, c.end_frame, c.mode) for c in report.clips] == [(0, 30, "reencode"),
                                                                            (30, 60, "reencode"),
                                                                            (60, 90, "reencode")]
    assert clip_codes(report.clips[2].clip, video_tools) == list(range(60, 90))
    assert probe(report.clips[2].clip).fps == pytest.approx(25.0)
    forced = cut_clips([src], tmp_path / "out2", method="fixed", length=1.0, copy=False)
    assert {c.mode for c in forced.clips} == {"reencode"}


def test_fixed_windows(tmp_path, video_tools):
    src = video_tools.write_coded(tmp_path / "v.mp4", 90)  # 3.6 s at 25 fps
    report = cut_clips([src], tmp_path / "out", method="fixed", length=1.0, stride=0.8)
    assert [(c.start_frame, c.end_frame) for c in report.clips] == [(0, 25), (20, 45), (40, 65), (60, 85)]
    assert clip_codes(report.clips[1].clip, video_tools) == list(range(20, 45))
    last = cut_clips([src], tmp_path / "out2", method="fixed", length=1.0, stride=0.8, keep_last=True)
    assert (last.clips[-1].start_frame, last.clips[-1].end_frame) == (80, 90)
    short = cut_clips([src], tmp_path / "out3", method="fixed", length=1.0, min_duration=1.0, keep_last=True)
    assert [(c.start_frame, c.end_frame) for c in short.clips] == [(0, 25), (25, 50), (50, 75)]  # 0.6 s dropped


def test_cut_list_with_labels_and_timecodes(tmp_path, video_tools):
    src = video_tools.write_coded(tmp_path / "match.mp4", 90, gop=30)
    cuts = tmp_path / "cuts.csv"
    cuts.write_text("video,start,end,label\n"
                    "match.mp4,0,1.2,serve\n"
                    "match.mp4,00:01.2,2.4s,smash\n"
                    "match.mp4,0:00:02.0,00:00:03.0,serve\n")
    report = cut_clips([], tmp_path / "out", method="csv", csv_file=cuts)
    got = [(c.clip.relative_to(tmp_path / "out").as_posix(), c.start_frame, c.end_frame, c.label, c.mode)
           for c in report.clips]
    assert got == [("serve/match_0001.mp4", 0, 30, "serve", "copy"), ("smash/match_0002.mp4", 30, 60, "smash", "copy"),
                   ("serve/match_0003.mp4", 50, 75, "serve", "reencode")]
    assert clip_codes(report.clips[2].clip, video_tools) == list(range(50, 75))
    assert [r["label"] for r in rows(tmp_path / "out" / "clips.csv")] == ["serve", "smash", "serve"]
    assert src.exists()


def test_bad_cut_list_names_every_bad_line(tmp_path, video_tools):
    video_tools.write_coded(tmp_path / "v.mp4", 10)
    cuts = tmp_path / "cuts.csv"
    cuts.write_text("v.mp4,0,0.2\nv.mp4,abc,1\nnothere.mp4,0,1\nv.mp4,0.3,0.1\nv.mp4,1\n")
    with pytest.raises(ClipSpecError) as e:
        cut_clips([], tmp_path / "out", method="csv", csv_file=cuts)
    message = str(e.value)
    for line in (2, 3, 4, 5):
        assert f"cuts.csv: line {line}:" in message
    assert "line 1:" not in message and "'abc' is not a time" in message and "nothere.mp4" in message
    assert not (tmp_path / "out").exists()  # nothing cut


def test_rotated_source_is_reencoded_upright(tmp_path, video_tools):
    src = video_tools.write_coded(tmp_path / "phone.mp4", 20, rotation=-90, gop=10)
    report = cut_clips([src], tmp_path / "out", method="fixed", length=0.4)
    assert report.clips[0].mode == "reencode"
    info = probe(report.clips[0].clip)
    assert (info.rotation, info.width, info.height) == (0, 48, 64)


def test_unusable_sources_are_reported_and_skipped(tmp_path, video_tools):
    bad = tmp_path / "bad.mp4"
    bad.write_text("no video here")
    good = video_tools.write_coded(tmp_path / "good.mp4", 25)
    report = cut_clips([bad, good], tmp_path / "out", method="fixed", length=0.5)
    assert len(report.clips) == 2 and report.problems[0][0] == str(bad)
    assert "FFmpeg cannot open" in report.problems[0][1]


@pytest.mark.parametrize("text, seconds", [("12.5", 12.5), ("3s", 3.0), ("01:02.5", 62.5), ("1:00:00", 3600.0),
                                           ("00:00:01.250", 1.25)])
def test_parse_time(text, seconds):
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "1:75", "-3"])
def test_parse_time_rejects(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_bad_options():
    with pytest.raises(ClipSpecError, match="unknown method"):
        cut_clips([], "x", method="shots")
    with pytest.raises(ClipSpecError, match="cut list"):
        cut_clips([], "x", method="csv")
    with pytest.raises(ClipSpecError, match="length > 0"):
        cut_clips([], "x", method="fixed", length=0)
