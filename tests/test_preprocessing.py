"""The preprocessing record: one source for cache, dataset, eval and predict; the same pixels on every path."""

import json
import warnings

import numpy as np
import pytest
import torch

from actionbert.checkpoint import inference_config, load_model, save_checkpoint, save_pretrained
from actionbert.config import ConfigError, DataConfig, ModelConfig, RunConfig, preprocessing_of
from actionbert.data.cache import StaleCacheWarning, cache_file, read_cached
from actionbert.data.dataset import VideoClipDataset, load_split
from actionbert.data.decode import VideoStream, read_frames
from actionbert.data.prepare import prepare_dataset
from actionbert.data.transforms import transforms_for
from actionbert.evaluate import evaluate
from actionbert.models import build_model
from actionbert.predict import Predictor
from actionbert.preprocessing import Preprocessing, PreprocessingError, Resize

CLIP = 4
SMALL = Resize(36, 48)
#: (class, name, (height, width) as stored, display rotation): 4:3, 16:9, portrait, and a rotated 16:9 file.
SHAPES = [("a", "vga", (240, 320), None), ("a", "wide", (360, 640), None), ("b", "portrait", (640, 360), None),
          ("b", "rotated", (360, 640), -90)]


@pytest.fixture(scope="module")
def real(tmp_path_factory, video_tools):
    """Four 13-frame videos at real resolutions, prepared with a cache for the default record (128 x 170), with
    one for the test model's record (36 x 48, small to keep the model fast) and without."""
    root = tmp_path_factory.mktemp("real")
    for cls, name, size, rotation in SHAPES:
        video_tools.write_coded(root / "data" / cls / f"{name}.mp4", 13, size=size, gop=4, rotation=rotation)
    prepare_dataset(root / "data", root / "cached128", cache=True, val_fraction=0.0)
    prepare_dataset(root / "data", root / "cached", cache=True, val_fraction=0.0, cache_resize=SMALL)
    prepare_dataset(root / "data", root / "plain", val_fraction=0.0)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(backbone="r2plus1d_tiny", head="tgap", num_classes=2, clip_len=CLIP, input_size=32).eval()
    return save_pretrained(model, tmp_path_factory.mktemp("model") / "m",
                           info=inference_config(model, classes=["a", "b"], resize=SMALL))


def test_record_round_trips_and_checks_itself():
    pre = Preprocessing(resize=Resize(36, 48), crop_size=32, norm="hara", clip_len=8, frame_stride=2, hflip=0.0)
    d = json.loads(json.dumps(pre.to_dict()))
    assert Preprocessing.from_dict(d) == pre
    assert (d["resize"], d["mean"], d["std"], d["value_scale"], d["channel_order"]) == (
        [36, 48], [114.7748, 107.7354, 99.4750], [1.0, 1.0, 1.0], 1.0, "RGB")
    assert d["test"]["crops"] == 5 and pre.test_crops == 5  # trained without flips: no mirrored views
    assert Resize(128, 170)(360, 640) == (128, 170) and Resize(128, 170, keep_aspect=True)(360, 640) == (128, 228)
    assert Resize(128, 170, keep_aspect=True)(640, 360) == (228, 128)
    with pytest.raises(PreprocessingError, match=r"'resize' \[16, 20\] is smaller than the 32-pixel crop"):
        Preprocessing(resize=Resize(16, 20), crop_size=32)
    with pytest.raises(PreprocessingError, match="'norm' must be one of"):
        Preprocessing.from_dict({**d, "norm": "imagenet"})


def test_config_builds_the_record():
    cfg = RunConfig(model=ModelConfig("r2plus1d_tiny", "bert", 3, 8, input_size=32),
                    data=DataConfig(resize=(36, 48), keep_aspect=True, frame_stride=2, hflip=0.0))
    assert preprocessing_of(cfg) == Preprocessing(resize=Resize(36, 48, keep_aspect=True), crop_size=32,
                                                  norm="torchvision", clip_len=8, frame_stride=2, hflip=0.0)
    with pytest.raises(ConfigError, match="smaller than the 32-pixel crop"):
        preprocessing_of(RunConfig(model=cfg.model, data=DataConfig(resize=(24, 30))))


def test_old_checkpoints_and_folders_without_the_record_load_and_predict_alike(model_dir, real, tmp_path):
    model, info = load_model(model_dir)
    old = {k: v for k, v in info.items() if k != "preprocessing"}
    old.update(format_version=1, frame_stride=1, resize=[36, 48], keep_aspect=False, norm="torchvision",
               hflip=0.5)  # what version 1 wrote
    folder = save_pretrained(model, tmp_path / "old", info=old)
    save_checkpoint(tmp_path / "old.pt", {"epoch": 1, "model_state": model.state_dict(), "inference": old})
    video = real / "data" / "a" / "wide.mp4"
    expected = Predictor(model, info, fast=False, hop=CLIP).predict(video).topk
    for path in (folder, tmp_path / "old.pt"):
        loaded, got = load_model(path)
        assert Preprocessing.from_info(got) == Preprocessing.from_info(info)
        assert Predictor(loaded, got, fast=False, hop=CLIP).predict(video).topk == expected


@pytest.mark.parametrize("name", [s[1] for s in SHAPES])
def test_cached_decoded_and_streamed_frames_are_bit_identical(real, name):
    pre = Preprocessing(clip_len=CLIP)
    cached = {s.video_id: s for s in load_split(real / "cached128", "train")[0]}
    sample = next(s for vid, s in cached.items() if name in vid)
    assert sample.cache
    streamed = torch.stack(list(VideoStream(sample.path, size=pre.resize)))  # predict's source
    assert streamed.shape == (13, 128, 170, 3)
    for indices in ([0, 1, 2, 3], [9, 10, 11, 12], [6, 2, 6]):  # the later ones seek to a keyframe
        from_cache = read_cached(sample.cache, indices)
        decoded = read_frames(sample.path, indices, size=pre.resize, num_frames=sample.num_frames)
        assert torch.equal(from_cache, decoded) and torch.equal(decoded, streamed[indices])


@pytest.mark.parametrize("name", [s[1] for s in SHAPES])
def test_dataset_and_predict_feed_the_model_the_same_tensor(real, model_dir, name):
    model, info = load_model(model_dir)
    pre = Preprocessing.from_info(info)
    items = {}
    for kind in ("cached", "plain"):
        samples = [s for s in load_split(real / kind, "train")[0] if name in s.video_id]
        assert bool(samples[0].cache) == (kind == "cached")
        ds = VideoClipDataset(samples, preprocessing=pre, mode="test", transform=transforms_for(pre)["val"])
        items[kind] = [ds[i]["video"][0] for i in range(len(ds))]  # one (3, T, S, S) per test window
    predictor = Predictor(model, info, fast=False, hop=CLIP)
    seen = []
    run = predictor._run
    predictor._run = lambda batch: (seen.extend(batch), run(batch))[1]
    assert predictor.predict(samples[0].path).error is None
    # 13 frames, 4-frame windows: the test windows start at 0, 4, 8; predict's at 0, 4, 8 and a last at 9
    assert len(items["cached"]) == 3 and len(seen) == 4
    for a, b, c in zip(items["cached"], items["plain"], seen[:3]):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_eval_gives_the_same_per_video_scores_with_and_without_cache(real, model_dir, tmp_path):
    with_cache = evaluate(model_dir, data=real / "cached", split="train", out=tmp_path / "c", fast=False)
    without = evaluate(model_dir, data=real / "plain", split="train", out=tmp_path / "p", fast=False)
    assert with_cache["evaluated_videos"] == without["evaluated_videos"] == 4
    for p, q in zip(with_cache["predictions"], without["predictions"], strict=True):
        assert p["video_id"] == q["video_id"] and len(p["probabilities"]) == 2
        assert np.allclose(p["probabilities"], q["probabilities"], rtol=0, atol=1e-5), p["video_id"]
    rows = (tmp_path / "c" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "video_id,label,predicted,label_probability,predicted_probability,p_a,p_b" and len(rows) == 5
    first = rows[1].split(",")
    row = next(r for r in with_cache["predictions"] if r["video_id"] == first[0])
    assert [float(v) for v in first[5:]] == pytest.approx(row["probabilities"], abs=1e-8)


def test_eval_scores_are_the_papers_mean_over_windows_and_crops(real, model_dir):
    model, info = load_model(model_dir)
    pre = Preprocessing.from_info(info)
    samples, classes = load_split(real / "plain", "train")
    ds = VideoClipDataset(samples, preprocessing=pre, mode="test")  # every window x 10 crops
    logits = {}
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            logits.setdefault(item["video_id"], []).append(model(item["video"]))  # (10, K) per window
    report = evaluate(model_dir, data=real / "plain", split="train", fast=False)
    assert report["views"]["mean_views_per_video"] == 30  # 3 windows x 10 crops
    for row in report["predictions"]:
        mean = torch.cat(logits[row["video_id"]]).mean(dim=0)  # raw logits over all 30 views
        assert row["probabilities"] == pytest.approx(mean.softmax(0).tolist(), abs=1e-6)
        assert row["predicted"] == classes[int(mean.argmax())]


def test_a_cache_made_for_another_record_is_bypassed_with_one_warning(real, tmp_path):
    out = tmp_path / "old"
    prepare_dataset(real / "data", out, cache=True, val_fraction=0.0, cache_resize=Resize.parse(128))  # old rule
    samples, _ = load_split(out, "train")
    assert all(s.cache for s in samples)
    pre = Preprocessing(clip_len=CLIP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoClipDataset(samples, preprocessing=pre, mode="val")
        got = [ds[i]["video"] for i in range(len(ds))]
    stale = [w for w in caught if issubclass(w.category, StaleCacheWarning)]
    assert len(stale) == 1 and "made for other preprocessing" in str(stale[0].message)
    plain = VideoClipDataset(load_split(real / "plain", "train")[0], preprocessing=pre, mode="val")
    assert all(torch.equal(a, plain[i]["video"]) for i, a in enumerate(got))  # decoded, not the old cache
    record = json.loads(cache_file(out / "cache", samples[0].video_id).with_suffix(".source.json").read_text())
    assert record["resize"] == {"resize": [128, 128], "keep_aspect": True}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch-export"])
def test_exports_carry_the_record_and_the_class_names(model_dir, tmp_path, fmt):
    from actionbert.export import SUFFIXES, export_metadata, export_model, read_metadata

    model, info = load_model(model_dir)
    out = tmp_path / f"m{SUFFIXES[fmt]}"
    export_model(model, out, format=fmt, metadata=export_metadata(info))
    meta = read_metadata(out, fmt)
    assert Preprocessing.from_dict(json.loads(meta["actionbert.preprocessing"])) == Preprocessing.from_info(info)
    assert json.loads(meta["actionbert.classes"]) == ["a", "b"]


def test_onnx_file_alone_reproduces_predict(model_dir, real, tmp_path):
    """benchmarks/onnx_predict.py: PyAV + NumPy + onnxruntime and the file's metadata, no actionbert."""
    import subprocess
    import sys
    from pathlib import Path

    from actionbert.export import export_metadata, export_model

    model, info = load_model(model_dir)
    export_model(model, tmp_path / "m.onnx", format="onnx", metadata=export_metadata(info))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "onnx_predict.py"
    for video in (real / "data" / "a" / "wide.mp4", real / "data" / "b" / "rotated.mp4"):
        expected = dict(Predictor(model, info, fast=False, hop=CLIP).predict(video, topk=2).topk)
        code = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
                "assert not [m for m in sys.modules if m.startswith('actionbert')], 'actionbert was imported'")
        done = subprocess.run([sys.executable, "-c", code, str(script), str(tmp_path / "m.onnx"), str(video)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        got = {name: float(p) for p, name in (line.split() for line in done.stdout.splitlines())}
        assert got.keys() == expected.keys()
        assert all(abs(got[k] - expected[k]) < 1e-5 for k in got), (got, expected)
