"""`prepare`: every layout, every bad-input case, the split, the cache and the frame export."""

import csv
import json

import numpy as np
import pytest
import torch

from actionbert.cli import main
from actionbert.data.cache import cache_file, read_cached, source_file
from actionbert.data.clips import cut_clips
from actionbert.data.dataset import load_split
from actionbert.data.decode import iter_frames, probe, short_side_size
from actionbert.data.prepare import detect_layout, prepare_dataset, read_problems, stratified_split
from actionbert.preprocessing import Resize


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def data_messy(tmp_path, video_tools):
    """Folder-per-class data with one file of every bad kind beside good videos."""
    d = tmp_path / "data"
    w = video_tools.write_coded
    for cls in ("walk", "run"):
        for name in "abcd":
            w(d / cls / f"{name}.mp4", 12)
    w(d / "sauté" / "vidéo_ü.mp4", 12)
    w(d / "sauté" / "vidéo_2.mp4", 12)
    video_tools.write_frame_folder(d / "walk" / "frames_clip", 9)
    (d / "run" / "empty.mp4").touch()
    (d / "walk" / "notes.txt").write_text("not a video\n" * 10)
    (d / "walk" / "fake.mp4").write_text("not a video either\n" * 10)
    video_tools.write_audio_only(d / "run" / "sound.m4a")
    w(d / "walk" / "one_frame.mp4", 1)
    video_tools.write_truncated_mp4(d / "run" / "truncated.mp4", 30)
    video_tools.write_lying_avi(d / "walk" / "liar.avi", n=12, claimed=444)
    (d / "run" / "dangling.mp4").symlink_to(d / "run" / "gone.mp4")
    (d / "walk" / "loop.mp4").symlink_to(d / "walk" / "loop.mp4")
    w(d / "stray.mp4", 4)
    (d / ".hidden").mkdir()
    return d


def test_folder_layout_reports_every_bad_file_and_keeps_going(data_messy, tmp_path):
    out = tmp_path / "prepared"
    report = prepare_dataset(data_messy, out, val_fraction=0.25, seed=0)
    assert report.layout == "folder"
    assert report.classes == ["run", "sauté", "walk"]
    assert (out / "classes.txt").read_text(encoding="utf-8") == "run\nsauté\nwalk\n"
    problems = {p.path.split("/data/")[-1]: p for p in read_problems(out / "problems.csv")}
    expected = {
        "run/empty.mp4": ("empty", "skipped", "zero-byte"),
        "walk/notes.txt": ("not_video", "skipped", "not a video"),
        "walk/fake.mp4": ("corrupt", "skipped", "FFmpeg cannot open"),
        "run/sound.m4a": ("audio_only", "skipped", "no video stream"),
        "walk/one_frame.mp4": ("too_short", "skipped", "only 1 decodable frame"),
        "run/truncated.mp4": ("corrupt", "kept", "truncated or corrupt"),
        "walk/liar.avi": ("frame_count_mismatch", "kept", "header claims 444 frames but 12 decode"),
        "run/dangling.mp4": ("missing", "skipped", "broken symbolic link"),
        "walk/loop.mp4": ("unreadable", "skipped", "cannot read"),
        "stray.mp4": ("no_class", "skipped", "outside any class folder"),
    }
    assert set(problems) == set(expected)
    for name, (kind, action, words) in expected.items():
        p = problems[name]
        assert (p.kind, p.action) == (kind, action) and words in p.reason, (name, p)
    assert report.skipped == 8

    train, val = read_csv(out / "train.csv"), read_csv(out / "val.csv")
    assert not (out / "test.csv").exists()
    ids = {r["video_id"] for r in train + val}
    assert ids == {"walk/a.mp4", "walk/b.mp4", "walk/c.mp4", "walk/d.mp4", "walk/liar.avi", "walk/frames_clip",
                   "run/a.mp4", "run/b.mp4", "run/c.mp4", "run/d.mp4", "run/truncated.mp4",
                   "sauté/vidéo_ü.mp4", "sauté/vidéo_2.mp4"}
    per_class_val = {c: sum(r["class_name"] == c for r in val) for c in report.classes}
    assert per_class_val == {"walk": 2, "run": 1, "sauté": 1}  # round(6/4), round(5/4), at least one of 2
    assert report.counts == {"train": 9, "val": 4, "test": 0}
    rows = {r["video_id"]: r for r in train + val}
    assert rows["run/truncated.mp4"]["num_frames"] != "30" and int(rows["run/truncated.mp4"]["num_frames"]) > 5
    assert rows["walk/liar.avi"]["num_frames"] == "12"
    assert rows["walk/frames_clip"]["num_frames"] == "9"
    assert rows["sauté/vidéo_ü.mp4"]["label"] == "1" and rows["walk/a.mp4"]["label"] == "2"
    assert (rows["run/a.mp4"]["width"], rows["run/a.mp4"]["height"], rows["run/a.mp4"]["fps"]) == ("64", "48",
                                                                                                "25.0")
    meta = json.loads((out / "prepare.json").read_text(encoding="utf-8"))
    assert meta["counts"] == report.counts and meta["layout"] == "folder"

    samples, classes = load_split(out, "val")
    assert classes == report.classes and len(samples) == 4 and all(s.cache == "" for s in samples)


def test_one_frame_video_is_usable_with_min_frames_1(data_messy, tmp_path):
    report = prepare_dataset(data_messy, tmp_path / "p", min_frames=1)
    assert not any(p.kind == "too_short" for p in report.problems)
    assert sum(report.counts.values()) == 14


def test_split_is_seeded_and_independent_of_listing_order():
    classes = ["a"] * 10 + ["b"] * 3 + ["c"]
    keys = [f"v{i:02d}" for i in range(len(classes))]
    split = stratified_split(classes, 0.2, seed=1, keys=keys)
    assert [sum(s == "val" and c == k for s, c in zip(split, classes)) for k in "abc"] == [2, 1, 0]
    order = list(reversed(range(len(classes))))
    again = stratified_split([classes[i] for i in order], 0.2, seed=1, keys=[keys[i] for i in order])
    assert [again[order.index(i)] for i in range(len(classes))] == split
    assert stratified_split(classes, 0.2, seed=2, keys=keys) != split
    assert stratified_split(classes, 0.0, seed=1) == ["train"] * len(classes)
    with pytest.raises(ValueError):
        stratified_split(classes, 1.0, seed=0)


def test_list_layout_names_malformed_lines_and_unknown_classes(tmp_path, video_tools):
    root = tmp_path / "videos"
    for rel in ("walk/a.mp4", "walk/b.mp4", "walk/c.mp4", "run/a.mp4", "run/b mp4 with space.mp4"):
        video_tools.write_coded(root / rel, 8)
    (tmp_path / "classes.txt").write_text("run\nwalk\n")
    lst = root / "list.txt"
    lst.write_text("# path label\n"
                   "walk/a.mp4 1\n"
                   "run/a.mp4 0\n"
                   "walk/b.mp4\n"  # line 4: no label
                   "run/missing.mp4 0\n"
                   "walk/c.mp4 7\n"  # line 6: class index out of range
                   "run/b mp4 with space.mp4 run\n"
                   "walk/a.mp4 1\n"  # line 8: duplicate
                   "\n")
    assert detect_layout(lst) == "list"
    out = tmp_path / "p"
    report = prepare_dataset(lst, out, classes=tmp_path / "classes.txt", val_fraction=0.0)
    problems = read_problems(out / "problems.csv")
    kinds = {(p.kind, p.path.split("/")[-1]) for p in problems}
    assert kinds == {("malformed_line", "list.txt"), ("missing", "missing.mp4"), ("unknown_class", "c.mp4"),
                     ("duplicate", "a.mp4")}
    malformed = next(p for p in problems if p.kind == "malformed_line")
    assert "list.txt line 4" in malformed.reason and "walk/b.mp4" in malformed.reason
    unknown = next(p for p in problems if p.kind == "unknown_class")
    assert "out of range" in unknown.reason and "line 6" in unknown.reason
    rows = read_csv(out / "train.csv")
    assert {(r["video_id"], r["label"]) for r in rows} == {("walk/a.mp4", "1"), ("run/a.mp4", "0"),
                                                          ("run/b mp4 with space.mp4", "0")}
    assert report.classes == ["run", "walk"]


def test_integer_labels_without_class_names_keep_their_values(tmp_path, video_tools):
    for rel in ("x.mp4", "y.mp4"):
        video_tools.write_coded(tmp_path / rel, 6)
    lst = tmp_path / "train.txt"
    lst.write_text("x.mp4 0\ny.mp4 3\n")
    report = prepare_dataset(lst, tmp_path / "p", val_fraction=0.0)
    assert report.classes == ["0", "1", "2", "3"]
    assert {r["label"] for r in read_csv(tmp_path / "p" / "train.csv")} == {"0", "3"}


def test_frame_list_layout(tmp_path, video_tools):
    root = tmp_path / "frames"
    video_tools.write_frame_folder(root / "clipA", 9)
    video_tools.write_frame_folder(root / "clipB", 9)
    lst = root / "train_rgb_split1.txt"
    lst.write_text("clipA 9 0\nclipB 20 1\nclipC x 1\n")
    assert detect_layout(lst) == "frame_list"
    report = prepare_dataset(lst, tmp_path / "p", val_fraction=0.0)
    problems = {p.kind: p for p in report.problems}
    assert problems["frame_count_mismatch"].action == "kept"
    assert "list claims 20 frames but 9 decode" in problems["frame_count_mismatch"].reason
    assert "line 3" in problems["malformed_line"].reason
    assert report.counts["train"] == 2


def test_ucf101_layout(tmp_path, video_tools):
    data = tmp_path / "UCF-101"
    for cls in ("ApplyEyeMakeup", "Archery"):
        for g in (1, 2, 3):
            video_tools.write_coded(data / cls / f"v_{cls}_g0{g}_c01.avi", 6, codec="mjpeg")
    ann = data / "ucfTrainTestlist"
    ann.mkdir()
    (ann / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (ann / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 1\n"
                                         "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi 1\n"
                                         "Archery/v_Archery_g02_c01.avi 2\nArchery/v_Archery_g03_c01.avi 2\n"
                                         "Archery/v_Archery_g03_c01.avi 9\n")
    (ann / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
                                        "Archery/v_Archery_g01_c01.avi\n")
    assert detect_layout(data) == "ucf101"
    report = prepare_dataset(data, tmp_path / "p")
    assert report.classes == ["ApplyEyeMakeup", "Archery"] and report.counts == {"train": 4, "val": 2, "test": 0}
    val = read_csv(tmp_path / "p" / "val.csv")
    assert {(r["video_id"], r["label"]) for r in val} == {("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "0"),
                                                         ("Archery/v_Archery_g01_c01.avi", "1")}
    assert [p.kind for p in report.problems] == ["unknown_class"]  # class index 9
    with pytest.raises(FileNotFoundError, match="no test split"):  # the official test list is val.csv
        load_split(tmp_path / "p", "test")


def test_hmdb51_layout(tmp_path, video_tools):
    data = tmp_path / "hmdb51"
    for cls in ("brush_hair", "cartwheel"):
        for k in range(3):
            video_tools.write_coded(data / cls / f"{cls}_{k}.avi", 6, codec="mjpeg")
        (data / f"{cls}_test_split1.txt").write_text(f"{cls}_0.avi 1 \n{cls}_1.avi 2 \n{cls}_2.avi 0 \n")
    assert detect_layout(data) == "hmdb51"
    report = prepare_dataset(data, tmp_path / "p")
    assert report.classes == ["brush_hair", "cartwheel"] and report.counts == {"train": 2, "val": 2, "test": 0}
    assert {r["video_id"] for r in read_csv(tmp_path / "p" / "train.csv")} == {"brush_hair/brush_hair_0.avi",
                                                                              "cartwheel/cartwheel_0.avi"}


def test_kinetics_csv_layout(tmp_path, video_tools):
    root = tmp_path / "kinetics"
    video_tools.write_coded(root / "abseiling" / "aaa_000010_000020.mp4", 6)
    video_tools.write_coded(root / "abseiling" / "bbb_000000_000010.mp4", 6)
    video_tools.write_coded(root / "zumba" / "ccc_000005_000015.mp4", 6)
    video_tools.write_coded(root / "zumba" / "ddd_000001_000011.mp4", 6)
    table = root / "kinetics.csv"
    table.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                     "abseiling,aaa,10,20,train,0\nabseiling,bbb,0,10,val,0\nzumba,ccc,5,15,train,0\n"
                     "zumba,ddd,1,11,validate,0\nzumba,eee,3,13,train,0\n")
    assert detect_layout(table) == "kinetics"
    report = prepare_dataset(table, tmp_path / "p")
    assert report.counts == {"train": 2, "val": 2, "test": 0} and report.classes == ["abseiling", "zumba"]
    missing = [p for p in report.problems if p.kind == "missing"]
    assert len(missing) == 1 and "eee_000003_000013" in missing[0].reason and "line 6" in missing[0].reason


def test_user_split_files_for_a_folder_layout(tmp_path, video_tools):
    data = tmp_path / "data"
    for cls in ("a", "b"):
        for k in range(3):
            video_tools.write_coded(data / cls / f"{k}.mp4", 6)
    (tmp_path / "train.txt").write_text("a/0.mp4 0\na/1.mp4 0\nb/0.mp4 1\n")
    (tmp_path / "val.txt").write_text("a/2.mp4\nb/1.mp4\nb/9.mp4\n")
    report = prepare_dataset(data, tmp_path / "p", split_files={"train": tmp_path / "train.txt",
                                                               "val": tmp_path / "val.txt"})
    assert report.counts == {"train": 3, "val": 2, "test": 0}  # b/2.mp4 is in no list: left out
    assert [(p.kind, p.path.split("/data/")[-1]) for p in report.problems] == [("missing", "b/9.mp4")]


def test_split_folders_train_and_test(tmp_path, video_tools):
    data = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            for k in range(3):
                video_tools.write_coded(data / split / cls / f"{k}.mp4", 6)
    report = prepare_dataset(data, tmp_path / "p", val_fraction=0.34)
    assert report.classes == ["a", "b"] and report.counts == {"train": 4, "val": 2, "test": 6}
    samples, _ = load_split(tmp_path / "p", "test")
    assert len(samples) == 6 and {s.video_id.split("/")[0] for s in samples} == {"test"}


def test_cache_and_frame_export(tmp_path, video_tools):
    data = tmp_path / "data"
    for cls in ("a", "b"):
        for k in range(2):
            video_tools.write_coded(data / cls / f"{k}.mp4", 10, size=(160, 192))
    out = tmp_path / "p"
    report = prepare_dataset(data, out, cache=True, frames=True, cache_short_side=64, cache_resize=Resize.parse(64),
                             workers=2)
    assert report.cache_bytes == 4 * (10 * 64 * 77 * 3 + 128)  # frames at short side 64 plus the .npy header
    samples, _ = load_split(out, "train")
    s = samples[0]
    assert s.cache == str(cache_file(out / "cache", s.video_id))
    size = short_side_size(160, 192, 64)
    cached = read_cached(s.cache, [9, 0, 9])
    decoded = np.stack([f.numpy() for f in iter_frames(s.path, size=size)])
    assert cached.shape == (3, *size, 3) and np.array_equal(cached.numpy(), decoded[[9, 0, 9]])
    assert [video_tools.frame_code(f) for f in cached] == [9, 0, 9]
    folder = out / "frames" / "a" / "0"
    assert sorted(f.name for f in folder.iterdir())[:2] == ["img_00001.jpg", "img_00002.jpg"]
    assert len(list(folder.iterdir())) == 10 and probe(folder).height == 64
    lines = (out / "frames_train.txt").read_text().splitlines() + (out / "frames_val.txt").read_text().splitlines()
    assert sorted(lines) == ["a/0 10 0", "a/1 10 0", "b/0 10 1", "b/1 10 1"]
    # the exported folders are themselves a dataset in the reference's frame-list format
    again = prepare_dataset(out / "frames_train.txt", tmp_path / "again", layout="frame_list", root=out / "frames",
                            val_fraction=0.0)
    assert again.counts["train"] == 2 and not again.problems


def test_cache_is_written_in_the_probing_pass_for_every_usable_video(data_messy, tmp_path, monkeypatch):
    """The messy folder with `cache=True`: the same answers as without a cache (rows, problems), each video
    decoded once, a cache file exactly for the usable videos, holding the frames the row counts."""
    from actionbert.data import decode

    plain = prepare_dataset(data_messy, tmp_path / "plain", val_fraction=0.25, seed=0)
    opens = []
    original_open = decode._open
    monkeypatch.setattr(decode, "_open", lambda *a, **k: opens.append(str(a[0])) or original_open(*a, **k))
    out = tmp_path / "cached"
    report = prepare_dataset(data_messy, out, val_fraction=0.25, seed=0, cache=True, cache_resize=Resize.parse(32))
    assert len(opens) == len(set(opens))  # no file opened twice: one decoding pass per video
    assert report.counts == plain.counts and report.skipped == plain.skipped
    assert read_problems(out / "problems.csv") == read_problems(tmp_path / "plain" / "problems.csv")
    rows = read_csv(out / "train.csv") + read_csv(out / "val.csv")
    assert rows == read_csv(tmp_path / "plain" / "train.csv") + read_csv(tmp_path / "plain" / "val.csv")
    files = sorted((out / "cache").iterdir())
    expected = [cache_file(out / "cache", r["video_id"]) for r in rows]  # none for skipped videos
    assert files == sorted(expected + [source_file(f) for f in expected])  # each with its source record
    total = 0
    for r in rows:
        frames = np.load(cache_file(out / "cache", r["video_id"]), mmap_mode="r")
        assert frames.shape[0] == int(r["num_frames"]) and min(frames.shape[1:3]) == 32  # truncated one too
        total += cache_file(out / "cache", r["video_id"]).stat().st_size
    assert report.cache_bytes == total


def test_a_cache_that_cannot_be_written_is_reported_and_the_video_kept(tmp_path, video_tools, monkeypatch):
    data = tmp_path / "data"
    for cls in ("a", "b"):
        video_tools.write_coded(data / cls / "0.mp4", 6)

    def disk_full(video, file, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("actionbert.data.prepare.cache_video", disk_full)
    report = prepare_dataset(data, tmp_path / "p", cache=True, val_fraction=0.0)
    assert report.counts["train"] == 2 and report.cache_bytes == 0
    problems = read_problems(tmp_path / "p" / "problems.csv")
    assert [(p.kind, p.action) for p in problems] == [("cache_failed", "kept")] * 2
    assert "No space left on device" in problems[0].reason
    samples, _ = load_split(tmp_path / "p", "train")
    assert [s.num_frames for s in samples] == [6, 6] and not any(s.cache for s in samples)


def test_cache_video_is_probe_and_cache_in_one_pass(tmp_path, video_tools):
    import io

    from actionbert.data.cache import _npy_header, cache_video
    from actionbert.data.decode import VideoDecodeError

    cut = video_tools.write_truncated_mp4(tmp_path / "cut.mp4", 30)
    info, size = cache_video(cut, tmp_path / "c" / "cut.npy", resize=24)
    assert info == probe(cut) and "decoder error" in info.decode_error  # the frames before the error are kept
    frames = np.load(tmp_path / "c" / "cut.npy")
    expected = np.stack([f.numpy() for f in iter_frames(cut, size=short_side_size(48, 64, 24),
                                                        stop=info.num_frames)])
    assert np.array_equal(frames, expected) and size == (tmp_path / "c" / "cut.npy").stat().st_size
    with pytest.raises(VideoDecodeError, match="file not found"):
        cache_video(tmp_path / "missing.mp4", tmp_path / "c" / "missing.npy")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["cut.npy", "cut.source.json"]  # nothing half-
    # written left
    for shape in [(10, 64, 77, 3), (123456, 128, 171, 3)]:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
        assert _npy_header(shape) == buffer.getvalue()  # NumPy's own header, byte for byte


def test_the_cache_holds_exactly_the_record_size_even_for_small_videos(tmp_path, video_tools):
    from actionbert.data.decode import read_frames

    data = tmp_path / "data"
    for cls in ("a", "b"):
        video_tools.write_coded(data / cls / "0.mp4", 5)
    prepare_dataset(data, tmp_path / "p", cache=True, val_fraction=0.0)  # the default record: 128 x 170
    samples, _ = load_split(tmp_path / "p", "train")
    cached = read_cached(samples[0].cache, [0, 4])
    assert cached.shape == (2, 128, 170, 3)  # what the transform needs: no second resampling later
    assert torch.equal(cached, read_frames(samples[0].path, [0, 4], size=Resize()))


def test_progress_callback_and_detect_layout(tmp_path, video_tools, data_messy):
    calls = []
    prepare_dataset(data_messy, tmp_path / "p", progress=lambda stage, done, total: calls.append((stage, done,
                                                                                                 total)))
    assert calls[-1] == ("probe", len(calls), len(calls)) and [c[1] for c in calls] == list(range(1, len(calls) + 1))
    assert detect_layout(data_messy) == "folder"
    with pytest.raises(FileNotFoundError):
        detect_layout(tmp_path / "nothing")


# --------------------------------------------------------------------------------------------- grouped split
def split_of(split, items) -> dict[str, str]:
    return {item: s for item, s in zip(items, split)}


def test_grouped_split_keeps_groups_whole_with_the_promised_counts():
    # (class, group, items): per class n, target t = round(n * 0.2) within [1, n - 1]
    spec = ([("a", f"ga{k}", 2) for k in range(10)]  # n 20, t 4: two groups of 2 fit, no more
            + [("b", f"gb{k}", 3) for k in range(3)]  # n 9, t 2: no group fits; one whole group is moved
            + [("c", "gc", 4)]  # one group: stays in train
            + [("d", f"gd{k}", 1) for k in range(4)] + [("d", "gd_big", 5)]  # n 9, t 2: two singletons
            + [("e", "ge", 1)])  # one item: train
    classes = [c for c, _, k in spec for _ in range(k)]
    groups = [g for _, g, k in spec for _ in range(k)]
    keys = [f"{g}/{i}" for i, g in enumerate(groups)]
    split = stratified_split(classes, 0.2, seed=3, keys=keys, groups=groups)
    by_group = {}
    for g, s in zip(groups, split):
        by_group.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())  # group integrity
    val = {c: sum(s == "val" and k == c for s, k in zip(split, classes)) for c in "abcde"}
    assert val == {"a": 4, "b": 3, "c": 0, "d": 2, "e": 0}
    assert by_group["gd_big"] == {"train"}

    # deterministic, and independent of listing order
    assert stratified_split(classes, 0.2, seed=3, keys=keys, groups=groups) == split
    order = list(reversed(range(len(classes))))
    again = stratified_split([classes[i] for i in order], 0.2, seed=3, keys=[keys[i] for i in order],
                             groups=[groups[i] for i in order])
    assert [again[order.index(i)] for i in range(len(classes))] == split
    # the seed picks which groups go: class a's val pair of groups changes with it
    picks = {frozenset(g for g, c, s in zip(groups, classes, stratified_split(classes, 0.2, seed, groups=groups))
                       if c == "a" and s == "val") for seed in range(5)}
    assert len(picks) > 1 and all(len(p) == 2 for p in picks)
    # groups of one item each: exactly the plain split
    assert stratified_split(classes, 0.2, seed=3, keys=keys, groups=keys) == stratified_split(classes, 0.2, 3,
                                                                                               keys=keys)
    assert stratified_split(classes, 0.0, seed=3, groups=groups) == ["train"] * len(classes)
    with pytest.raises(ValueError, match="groups has 2 entries"):
        stratified_split(classes, 0.2, seed=0, groups=["x", "y"])


def test_grouped_split_with_groups_holding_several_classes():
    # x: n 5, y: n 5, t 1 each; only the mixed group (one x, one y) fits both targets, in any visiting order
    items = [("x", "gx1")] * 2 + [("x", "gx2")] * 2 + [("y", "gy1")] * 2 + [("y", "gy2")] * 2 + \
        [("x", "gm"), ("y", "gm")]
    for seed in range(4):
        split = stratified_split([c for c, _ in items], 0.2, seed, groups=[g for _, g in items])
        assert {g for (_, g), s in zip(items, split) if s == "val"} == {"gm"}
    # p: g1 (3 p), g2 (1 p + the only q): g2 would leave q without train, so p's val group is g1 (above target)
    items = [("p", "g1")] * 3 + [("p", "g2"), ("q", "g2")]
    for seed in range(4):
        split = stratified_split([c for c, _ in items], 0.2, seed, groups=[g for _, g in items])
        assert split == ["val"] * 3 + ["train"] * 2


def sources_by_split(out) -> dict[str, set[str]]:
    return {s: {r["group"] for r in read_csv(out / f"{s}.csv")} for s in ("train", "val")}


def test_clips_cut_from_one_video_stay_in_one_split(tmp_path, video_tools):
    src = tmp_path / "long"
    names = ("walk_a", "walk_b", "run_a", "run_b", "mixed")
    for name in names:
        video_tools.write_coded(src / f"{name}.mp4", 40)  # 1.6 s: four 0.4 s clips each
    label = lambda name, i: name.split("_")[0] if name != "mixed" else ("walk" if i < 2 else "run")  # noqa: E731
    rows = [f"{name}.mp4,{i * 0.4:.1f},{(i + 1) * 0.4:.1f},{label(name, i)}" for name in names for i in range(4)]
    (src / "cuts.csv").write_text("video,start,end,label\n" + "\n".join(rows) + "\n")
    data = tmp_path / "clips"
    cut = cut_clips([], data, method="csv", csv_file=src / "cuts.csv")
    assert len(cut.clips) == 20 and (data / "clips.csv").is_file() and (data / "walk").is_dir()

    # each class: n 10, target round(2.5) = 2 val clips: only the mixed source (2 walk + 2 run clips) fits
    report = prepare_dataset(data, tmp_path / "p", val_fraction=0.25, seed=0)
    assert report.counts == {"train": 16, "val": 4, "test": 0} and report.groups == 5 and not report.problems
    by_split = sources_by_split(tmp_path / "p")
    assert by_split["val"] == {str(src / "mixed.mp4")} and not by_split["train"] & by_split["val"]
    val = read_csv(tmp_path / "p" / "val.csv")
    assert {c: sum(r["class_name"] == c for r in val) for c in ("run", "walk")} == {"run": 2, "walk": 2}
    meta = json.loads((tmp_path / "p" / "prepare.json").read_text())
    assert (meta["groups"], meta["group_by"]) == (5, "auto")
    assert load_split(tmp_path / "p", "val")[0][0].video_id.split("/")[1].startswith("mixed_")

    # group_by="none": today's per-clip split, which leaks sources into both splits
    plain = prepare_dataset(data, tmp_path / "q", val_fraction=0.25, seed=0, group_by="none")
    assert plain.counts == report.counts and plain.groups == 20
    rows = read_csv(tmp_path / "q" / "train.csv") + read_csv(tmp_path / "q" / "val.csv")
    rows.sort(key=lambda r: r["video_id"])
    expected = stratified_split([r["class_name"] for r in rows], 0.25, 0, keys=[r["video_id"] for r in rows])
    val_ids = {r["video_id"] for r in read_csv(tmp_path / "q" / "val.csv")}
    assert ["val" if r["video_id"] in val_ids else "train" for r in rows] == expected
    by_split = sources_by_split(tmp_path / "q")
    assert all(g.endswith(".mp4") for g in by_split["val"]) and len(by_split["val"]) == 4  # own path: own group
    sources = {r["clip"]: r["source"] for r in read_csv(data / "clips.csv")}  # clip: relative to data
    val_sources = {sources[i] for i in val_ids}
    train_sources = {sources[r["video_id"]] for r in read_csv(tmp_path / "q" / "train.csv")}
    assert val_sources & train_sources
    with pytest.raises(ValueError, match="unknown group_by"):
        prepare_dataset(data, tmp_path / "r", group_by="source")


def test_fixed_clips_in_class_folders_and_the_command_line(tmp_path, video_tools, capsys):
    data = tmp_path / "data"
    for cls in ("walk", "run"):
        longs = [video_tools.write_coded(tmp_path / "long" / f"{cls}{k}.mp4", 40) for k in range(2)]
        cut_clips(longs, data / cls, method="fixed", length=0.4)  # clips.csv in the class folder
    for k in range(2):
        video_tools.write_coded(data / "jump" / f"{k}.mp4", 6)
    (data / "jump" / "clips.csv").write_text("foo,bar\n1,2\n")
    # walk, run: 8 clips from 2 sources each, target 2: no source fits, so one whole source (4 clips) goes
    report = prepare_dataset(data, tmp_path / "p", val_fraction=0.25, seed=1)
    val = read_csv(tmp_path / "p" / "val.csv")
    assert {c: sum(r["class_name"] == c for r in val) for c in ("jump", "run", "walk")} == {"jump": 1, "run": 4,
                                                                                         "walk": 4}
    by_split = sources_by_split(tmp_path / "p")
    assert not by_split["train"] & by_split["val"] and report.groups == 6
    assert [(p.kind, p.path.split("/data/")[-1]) for p in report.problems] == [("bad_clips_csv",
                                                                                "jump/clips.csv")]
    assert "no column(s) ['clip', 'source']" in report.problems[0].reason

    assert main(["prepare", str(data), "--out", str(tmp_path / "c"), "--val-fraction", "0.25", "--quiet"]) == 0
    assert "split by source video: 6 groups" in capsys.readouterr().out
    assert main(["prepare", str(data), "--out", str(tmp_path / "d"), "--val-fraction", "0.25", "--group-by",
                 "none", "--quiet"]) == 0
    assert "split by source video" not in capsys.readouterr().out
    meta = json.loads((tmp_path / "d" / "prepare.json").read_text())
    assert (meta["group_by"], meta["groups"], meta["counts"]["val"]) == ("none", 18, 5)
