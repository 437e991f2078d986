"""Trust, data side (issue 11 items 5-9): clips cut in several runs keep their sources, symbolic-link loops and
duplicates, labels never invented silently, stale caches detected, and caveats for data used anyway."""

from __future__ import annotations

import csv
import hashlib
import os
import warnings

import numpy as np
import pytest

from actionbert.cli import main
from actionbert.data.cache import StaleCacheWarning, cache_file, cache_status, cache_video, source_file
from actionbert.data.clips import ClipSpecError, cut_clips
from actionbert.data.dataset import VideoClipDataset, load_split
from actionbert.data.decode import probe
from actionbert.data.prepare import prepare_dataset, read_problems


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def split_rows(out) -> list[dict]:
    rows = []
    for split in ("train", "val"):
        rows += [{**r, "split": split} for r in read_csv(out / f"{split}.csv")]
    return rows


def digest(path) -> str:
    return hashlib.sha1(open(path, "rb").read()).hexdigest()


# --------------------------------------------------------------------- item 5: clips twice into one folder
def test_clips_cut_in_two_runs_keep_their_source_and_never_straddle_the_split(tmp_path, video_tools):
    data = tmp_path / "data"
    source_of = {}  # clip path -> source video, from what each run reported
    for cls in ("walk", "run"):
        longs = [video_tools.write_coded(tmp_path / "long" / f"{cls}{k}.mp4", 40) for k in range(3)]
        for run in (longs[:2], longs[2:]):  # two runs of `clips` into the same class folder
            report = cut_clips(run, data / cls, method="fixed", length=0.4)
            source_of.update({str(c.clip): str(c.source) for c in report.clips})
    assert len(source_of) == 24 and len(list(data.rglob("*.mp4"))) == 24
    for cls in ("walk", "run"):
        listed = read_csv(data / cls / "clips.csv")
        assert len(listed) == 12 and {r["source"] for r in listed} == {str(tmp_path / "long" / f"{cls}{k}.mp4")
                                                                     for k in range(3)}
    for seed in range(4):
        out = tmp_path / f"p{seed}"
        report = prepare_dataset(data, out, val_fraction=0.34, seed=seed)
        assert report.groups == 6 and report.counts["val"] == 8  # one whole source per class
        splits_of_source: dict[str, set[str]] = {}
        for r in split_rows(out):
            splits_of_source.setdefault(source_of[r["path"]], set()).add(r["split"])
        assert all(len(s) == 1 for s in splits_of_source.values()), (seed, splits_of_source)


def test_cutting_a_video_again_into_the_same_folder_is_refused_or_replaces_its_clips(tmp_path, video_tools, capsys):
    a = video_tools.write_coded(tmp_path / "a" / "demo.mp4", 40)
    b = video_tools.write_coded(tmp_path / "b" / "demo.mp4", 40)  # same stem, other video
    out = tmp_path / "clips"
    first = cut_clips([a], out, method="fixed", length=0.8)
    kept = {f.name: digest(f) for f in out.glob("*.mp4")}
    second = cut_clips([b], out, method="fixed", length=0.8)  # other source: added, nothing overwritten
    assert [c.clip.name for c in second.clips] == ["demo_0001-2.mp4", "demo_0002-2.mp4"]
    assert all(digest(out / name) == d for name, d in kept.items())
    assert len(read_csv(out / "clips.csv")) == 4

    with pytest.raises(ClipSpecError, match=r"clips\.csv already lists 2 clip\(s\) cut from demo\.mp4.*--overwrite"):
        cut_clips([a], out, method="fixed", length=0.4)
    assert {f.name: digest(f) for f in out.glob("*.mp4") if f.name in kept} == kept  # nothing cut or deleted
    assert main(["clips", str(a), "--out", str(out), "--method", "fixed", "--length", "0.4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--overwrite" in err[0]

    again = cut_clips([a], out, method="fixed", length=0.4, overwrite=True)
    assert len(again.clips) == 4 and all(digest(out / name) != d for name, d in kept.items())  # old clips: gone
    rows = read_csv(out / "clips.csv")
    assert sorted(r["source"] for r in rows) == sorted([str(a)] * 4 + [str(b)] * 2)
    assert {r["clip"] for r in rows} == {f.name for f in out.glob("*.mp4")}
    assert len(first.clips) == 2


def test_a_foreign_clips_csv_is_not_replaced(tmp_path, video_tools):
    out = tmp_path / "clips"
    out.mkdir()
    (out / "clips.csv").write_text("name,notes\nmine,keep me\n")
    with pytest.raises(ClipSpecError, match="not a record of `actionbert clips`"):
        cut_clips([video_tools.write_coded(tmp_path / "v.mp4", 20)], out, method="fixed", length=0.4)
    assert (out / "clips.csv").read_text() == "name,notes\nmine,keep me\n" and len(list(out.iterdir())) == 1


# ------------------------------------------------------------------------ item 6: links, loops, duplicates
def test_a_symlink_loop_is_not_followed_and_each_video_is_listed_once(tmp_path, video_tools):
    data = tmp_path / "data"
    for rel in ("classA/a1.mp4", "classA/a2.mp4", "classB/b1.mp4", "classB/b2.mp4"):
        video_tools.write_coded(data / rel, 6)
    (data / "classA" / "up").symlink_to("..")  # a loop: data/classA/up/classA/up/...
    out = tmp_path / "p"
    report = prepare_dataset(data, out, val_fraction=0.0)
    rows = split_rows(out)
    assert sorted((r["video_id"], r["class_name"]) for r in rows) == [
        ("classA/a1.mp4", "classA"), ("classA/a2.mp4", "classA"), ("classB/b1.mp4", "classB"),
        ("classB/b2.mp4", "classB")]
    skipped = [p for p in report.problems if p.kind == "symlink_skipped"]
    assert len(skipped) == 1 and skipped[0].path == str(data / "classA" / "up")
    assert "a folder above it: following it would loop" in skipped[0].reason


def test_links_inside_outside_and_duplicate_files(tmp_path, video_tools):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    for rel in ("walk/w1.mp4", "walk/w2.mp4", "run/r1.mp4"):
        video_tools.write_coded(data / rel, 6)
    video_tools.write_coded(elsewhere / "more" / "r2.mp4", 6)
    (data / "run" / "more").symlink_to(elsewhere / "more")  # outside the dataset: followed, label "run"
    (data / "run" / "once_more").symlink_to(elsewhere / "more")  # the same folder again: not followed
    (data / "run" / "walks").symlink_to(data / "walk")  # inside the dataset: listed under walk/ only
    (data / "run" / "w1_link.mp4").symlink_to(data / "walk" / "w1.mp4")  # one file, two paths
    os.link(data / "run" / "r1.mp4", data / "walk" / "hard_r1.mp4")  # a hard link: one file too
    report = prepare_dataset(data, tmp_path / "p", val_fraction=0.0)
    rows = {r["video_id"]: r["class_name"] for r in split_rows(tmp_path / "p")}
    assert rows == {"run/more/r2.mp4": "run", "run/r1.mp4": "run", "walk/w1.mp4": "walk", "walk/w2.mp4": "walk"}
    problems = {p.path.split("/data/")[-1]: p for p in report.problems}
    assert set(problems) == {"run/once_more", "run/walks", "run/w1_link.mp4", "walk/hard_r1.mp4"}
    assert problems["run/once_more"].kind == "symlink_skipped"
    assert f"already listed as {data / 'run' / 'more'}" in problems["run/once_more"].reason
    assert problems["run/walks"].kind == "symlink_skipped" and "inside the dataset" in problems["run/walks"].reason
    assert problems["run/w1_link.mp4"].kind == "duplicate" and "walk/w1.mp4" in problems["run/w1_link.mp4"].reason
    assert problems["walk/hard_r1.mp4"].kind == "duplicate" and "run/r1.mp4" in problems["walk/hard_r1.mp4"].reason


# ------------------------------------------------------------------------- item 7: lists and their labels
CLASSES = ("walking", "running", "jumping", "sitting")


@pytest.fixture
def list_videos(tmp_path, video_tools):
    for cls in CLASSES:
        for k in range(3):
            video_tools.write_coded(tmp_path / "v" / f"{cls}{k}.mp4", 4)
    return tmp_path / "v"


def _list(folder, lines: list[bytes]):
    path = folder / "list.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_list_mixing_names_and_indices_is_refused_and_nothing_is_written(list_videos, tmp_path, capsys):
    lines = [f"{c}{k}.mp4 {c}".encode() for c in CLASSES for k in range(3)]
    lines[4] = b"running1.mp4 1"
    lst = _list(list_videos, lines)
    with pytest.raises(ValueError, match=r"mix names and indices, e\.g\. 'walking' \(list\.txt line 1\) and '1' "
                                         r"\(list\.txt line 5\).*--classes"):
        prepare_dataset(lst, tmp_path / "p")
    assert main(["prepare", str(lst), "--out", str(tmp_path / "q"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: class labels mix names and indices")
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()


def test_a_likely_typo_is_reported_by_line_and_invents_no_class(list_videos, tmp_path):
    lines = [f"{c}{k}.mp4 {c}".encode() for c in CLASSES for k in range(3)]
    lines[2] = b"walking2.mp4 walkng"  # line 3
    lines[7] = b"jumping1.mp4 Jumping"  # line 8: case only
    report = prepare_dataset(_list(list_videos, lines), tmp_path / "p", val_fraction=0.0)
    assert report.classes == ["jumping", "running", "sitting", "walking"]
    typos = {p.path.rsplit("/", 1)[-1]: p.reason for p in report.problems if p.kind == "suspicious_label"}
    assert set(typos) == {"walking2.mp4", "jumping1.mp4"}
    assert "'walkng' (list.txt line 3) looks like a typo of 'walking'" in typos["walking2.mp4"]
    assert "'Jumping' (list.txt line 8) looks like a typo of 'jumping'" in typos["jumping1.mp4"]
    assert report.counts["train"] == 10


def test_a_non_utf8_line_is_reported_and_the_rest_is_used(list_videos, tmp_path):
    lines = [f"{c}{k}.mp4 {c}".encode() for c in CLASSES[:2] for k in range(3)]
    lines[2] = b"walking2.mp4 w\xe4lk"  # latin-1, line 3
    report = prepare_dataset(_list(list_videos, lines), tmp_path / "p", val_fraction=0.0)
    assert report.counts["train"] == 5 and report.classes == ["running", "walking"]
    bad = [p for p in report.problems if p.kind == "not_utf8"]
    assert len(bad) == 1 and bad[0].path == str(list_videos / "list.txt")
    assert bad[0].reason.startswith("list.txt line 3: not UTF-8 text (byte 0xe4 at column 15)")


def test_a_kinetics_csv_with_a_bad_byte_names_the_file_and_line(list_videos, tmp_path):
    rows = [b"path,label"] + [f"{c}{k}.mp4,{c}".encode() for c in CLASSES[:2] for k in range(3)]
    rows[4] = b"running0.mp4,r\xfcnning"  # line 5
    csv_file = list_videos / "kinetics.csv"
    csv_file.write_bytes(b"\n".join(rows) + b"\n")
    report = prepare_dataset(csv_file, tmp_path / "p", val_fraction=0.0)
    assert report.layout == "kinetics" and report.counts["train"] == 5
    bad = [p for p in report.problems if p.kind == "not_utf8"]
    assert [(p.path, p.reason.split(":")[0]) for p in bad] == [(str(csv_file), "kinetics.csv line 5")]


def test_gaps_in_integer_labels_and_bad_class_lists_are_reported(list_videos, tmp_path):
    lst = _list(list_videos, [b"walking0.mp4 0", b"walking1.mp4 0", b"running0.mp4 3"])
    report = prepare_dataset(lst, tmp_path / "p", val_fraction=0.0)
    assert report.classes == ["0", "1", "2", "3"]
    empty = [p for p in report.problems if p.kind == "empty_class"]
    assert len(empty) == 1 and "2 of them have no video (1, 2)" in empty[0].reason
    classes = tmp_path / "classes.txt"
    classes.write_bytes(b"walk\nr\xfcn\n")
    with pytest.raises(ValueError, match=r"classes\.txt: line 2: not UTF-8"):
        prepare_dataset(lst, tmp_path / "q", classes=classes)


# ------------------------------------------------------------------------------------ item 8: stale cache
def test_a_replaced_or_deleted_video_is_never_read_from_its_old_cache(tmp_path, video_tools):
    data = tmp_path / "data"
    for rel in ("walk/a.mp4", "walk/b.mp4", "run/c.mp4", "run/d.mp4"):
        video_tools.write_coded(data / rel, 12)
    out = tmp_path / "p"
    prepare_dataset(data, out, val_fraction=0.0, cache=True, cache_short_side=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing stale yet: no warning
        samples, _ = load_split(out, "train")
    assert all(s.cache for s in samples)

    reversed_frames = video_tools.coded_frames(12)[::-1].copy()
    video_tools.write_coded(data / "walk" / "a.mp4", 12, frames=reversed_frames)  # replaced by another video
    (data / "run" / "c.mp4").unlink()  # deleted
    with pytest.warns(StaleCacheWarning) as caught:
        samples, _ = load_split(out, "train")
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert messages[0].startswith(f"{data / 'run' / 'c.mp4'}: its decoded-frame cache") and \
        "cannot be read any more" in messages[0]
    assert messages[1].startswith(f"{data / 'walk' / 'a.mp4'}: its decoded-frame cache") and \
        "changed since the cache was written" in messages[1]
    by_id = {s.video_id: s for s in samples}
    assert by_id["walk/a.mp4"].cache == "" and by_id["run/c.mp4"].cache == "" and by_id["walk/b.mp4"].cache
    dataset = VideoClipDataset(samples, clip_len=12, mode="val", transform=lambda frames, rng: frames)
    items = {dataset[i]["video_id"]: dataset[i] for i in range(len(dataset))}
    assert [video_tools.frame_code(f) for f in items["walk/a.mp4"]["video"]] == list(range(11, -1, -1))  # new
    assert "c.mp4" in items["run/c.mp4"]["error"]  # a failure naming the video, not the old frames


def test_the_dataset_checks_caches_under_cache_dir_once_per_video(tmp_path, video_tools):
    data = tmp_path / "data"
    for rel in ("walk/a.mp4", "run/c.mp4"):
        video_tools.write_coded(data / rel, 12)
    out = tmp_path / "p"
    prepare_dataset(data, out, val_fraction=0.0, cache=True, cache_short_side=32)
    samples, _ = load_split(out, "train")
    video_tools.write_coded(data / "walk" / "a.mp4", 12, frames=video_tools.coded_frames(12)[::-1].copy())
    dataset = VideoClipDataset(samples, clip_len=12, mode="val", cache_dir=out / "cache",
                               transform=lambda frames, rng: frames)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            items = {dataset[i]["video_id"]: dataset[i] for i in range(len(dataset))}
    assert [str(w.message).split(":")[0] for w in caught] == [str(data / "walk" / "a.mp4")]  # once
    assert video_tools.frame_code(items["walk/a.mp4"]["video"][0]) == 11
    assert video_tools.frame_code(items["run/c.mp4"]["video"][0]) == 0


def test_cache_status_rules(tmp_path, video_tools):
    video = video_tools.write_coded(tmp_path / "v.mp4", 8)
    cache = tmp_path / "c" / "v.npy"
    cache_video(video, cache, resize=16)
    assert cache_status(cache, video) is None
    content = video.read_bytes()
    video.unlink()
    video.write_bytes(content)  # a copy that did not keep the time: same content, still current
    os.utime(video, ns=(1, 1))
    assert cache_status(cache, video) is None
    video.write_bytes(content[:-1] + bytes([content[-1] ^ 0xFF]))  # same size, other bytes, other time
    assert "same size, other content" in cache_status(cache, video)
    source_file(cache).unlink()  # a cache of an older version, without a record
    assert "no valid record" in cache_status(cache, video)
    assert cache_file(tmp_path, "x").suffix == ".npy"


# ------------------------------------------------------------------------- item 9: data used with caveats
def write_with_long_audio(path, video_tools, frames: int = 16, audio_seconds: float = 2.0):
    """A Matroska file whose audio track lasts longer than its video (the file's duration is the audio's)."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as c:
        video = c.add_stream("libx264", rate=Fraction(25))
        video.height, video.width, video.pix_fmt = 48, 64, "yuv420p"
        audio = c.add_stream("aac", rate=16000)
        for f in video_tools.coded_frames(frames):
            c.mux(video.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(video.encode())
        for k in range(int(audio_seconds * 16000 / 1024)):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            c.mux(audio.encode(frame))
        c.mux(audio.encode())
    return path


def test_corrupt_frame_image_truncated_mkv_and_short_videos_get_caveats(tmp_path, video_tools, capsys):
    data = tmp_path / "data"
    folder = video_tools.write_frame_folder(data / "walk" / "frames_a", 40)
    (folder / "img_00031.jpg").write_bytes((folder / "img_00031.jpg").read_bytes()[:300])  # cut short
    first_bad = video_tools.write_frame_folder(data / "walk" / "frames_b", 40)
    (first_bad / "img_00001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    full = video_tools.write_coded(data / "run" / "full.mkv", 40)
    (data / "run" / "cut.mkv").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    video_tools.write_coded(data / "run" / "few.mp4", 5)
    video_tools.write_coded(data / "walk" / "ok.mp4", 40)
    write_with_long_audio(data / "walk" / "audio.mkv", video_tools, frames=40, audio_seconds=3.0)

    info = probe(folder)
    assert info.num_frames == 30 and "img_00031.jpg cannot be read" in info.decode_error
    out = tmp_path / "p"
    report = prepare_dataset(data, out, val_fraction=0.0, clip_len=32)
    caveat = {r["video_id"]: r["caveat"] for r in split_rows(out)}
    cut_frames = probe(data / "run" / "cut.mkv").num_frames
    assert caveat == {
        "walk/frames_a": "corrupt: 30 frames decode before a decoder error; short: 30 frames looped to fill a "
                         "32-frame clip",
        "run/cut.mkv": f"truncated: decoded {cut_frames} of 40 frames; short: {cut_frames} frames looped to fill "
                       f"a 32-frame clip",
        "run/few.mp4": "short: 5 frames looped to fill a 32-frame clip",
        "run/full.mkv": "", "walk/ok.mp4": "", "walk/audio.mkv": "",  # its longer audio is no truncation
    }
    problems = {p.path.split("/data/")[-1]: p for p in read_problems(out / "problems.csv")}
    assert set(problems) == {"walk/frames_a", "walk/frames_b", "run/cut.mkv"}
    assert problems["walk/frames_a"].action == "kept" and "img_00031.jpg" in problems["walk/frames_a"].reason
    assert problems["walk/frames_b"].action == "skipped" and "img_00001.jpg" in problems["walk/frames_b"].reason
    assert (problems["run/cut.mkv"].kind, problems["run/cut.mkv"].action) == ("truncated", "kept")
    assert (report.short, report.with_caveats) == (3, 3)
    samples, _ = load_split(out, "train")  # the training data never reaches the damaged image
    frames_a = next(s for s in samples if s.video_id == "walk/frames_a")
    dataset = VideoClipDataset([frames_a], clip_len=32, mode="train", seed=0, transform=lambda f, rng: f)
    assert "error" not in dataset[0] and np.asarray(dataset[0]["video"]).shape[0] == 32

    assert main(["prepare", str(data), "--out", str(tmp_path / "q"), "--val-fraction", "0", "--quiet"]) == 0
    assert "3 video(s) shorter than a 32-frame clip" in capsys.readouterr().out
