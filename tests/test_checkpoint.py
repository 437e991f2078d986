"""Our model format round-trips, training checkpoints load for inference, and nothing loads by running code."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import actionbert
from actionbert import build_model, from_pretrained, load_weights
from actionbert.checkpoint import (CheckpointError, atomic_write, inference_config, load_checkpoint, load_model,
                                   save_checkpoint, save_pretrained)
from actionbert.weights import FILTERS

K = 5


def _model(**kw):
    torch.manual_seed(0)
    model = build_model(num_classes=K, input_size=32, **kw)
    with torch.no_grad():  # non-default buffers too, so a round trip that drops them is caught
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(17)
    return model.eval()


MODELS = {
    "r2plus1d+bert": dict(backbone="r2plus1d_tiny", head="bert", clip_len=16),
    "resnext+frmb+tgap": dict(backbone="resnext_tiny", head="tgap", clip_len=16, reduction="frmb"),
}
CLASSES = ["walk", "run", "jump", "sit", "wave"]


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", list(MODELS))
def test_save_pretrained_from_pretrained_round_trip(name, tmp_path):
    model = _model(**MODELS[name])
    info = inference_config(model, classes=CLASSES, frame_stride=2, resize=(128, 171), norm="hara")
    folder = save_pretrained(model, tmp_path / "m", info=info)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["backbone"] == MODELS[name]["backbone"] and config["classes"] == CLASSES
    record = config["preprocessing"]
    assert (config["clip_len"], record["frame_stride"], config["input_size"], record["resize"], record["norm"]) == (
        16, 2, 32, [128, 171], "hara")
    assert (record["crop_size"], record["clip_len"], record["mean"]) == (32, 16, [114.7748, 107.7354, 99.4750])

    loaded, got = actionbert.from_pretrained(folder)  # nothing but the folder
    assert got == info and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    clip = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(clip), model(clip))


def test_load_model_reads_training_checkpoint_and_folder_alike(tmp_path):
    model = _model(**MODELS["r2plus1d+bert"])
    info = inference_config(model, classes=CLASSES, norm="torchvision")
    save_checkpoint(tmp_path / "best.pt", {"epoch": 4, "model_state": model.state_dict(), "inference": info,
                                           "optimizer": {"state": {}, "param_groups": []}})
    save_pretrained(model, tmp_path / "folder", info=info)
    clip = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        expected = model(clip)
        for path in (tmp_path / "best.pt", tmp_path / "folder"):
            loaded, got = load_model(path)
            assert got == info and torch.equal(loaded(clip), expected), path


def test_model_folder_errors_name_the_file_and_the_problem(tmp_path):
    model = _model(**MODELS["r2plus1d+bert"])
    info = inference_config(model, classes=CLASSES, norm="torchvision")
    folder = save_pretrained(model, tmp_path / "m", info=info)
    other = _model(**{**MODELS["r2plus1d+bert"], "clip_len": 32})  # 4 tokens instead of 2
    (folder / "config.json").write_text(json.dumps(inference_config(other, classes=CLASSES, norm="torchvision")))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights do not fit the model: shape mismatch "
                                              r"\['head\.pos_embed: file \(1, 3, 128\) vs model \(1, 5, 128\)'\]"):
        from_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="not an actionbert model folder .config.json is missing"):
        from_pretrained(folder)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")


# ------------------------------------------------------------------------------- never execute pickled code
class _RunsCode:
    """Unpickling this calls os.system: the classic malicious-checkpoint payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path, kind: str) -> Path:
    payload = {"model_state": {"fc.weight": torch.zeros(2, 2)}, "state_dict": {"x": torch.zeros(1)},
               "inference": {"model": {}}, "hook": _RunsCode(marker)}
    if kind == "zip":
        torch.save(payload, path)
    elif kind == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle named like a checkpoint (plain values only, so the first global met is the payload's)
        with open(path, "wb") as f:
            pickle.dump({"epoch": 3, "arch": "x", "hook": _RunsCode(marker)}, f, protocol=2)
    return path


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle"])
def test_checkpoint_that_would_run_code_is_refused(kind, tmp_path):
    # Control: the crafted file really runs code when loaded the unsafe way.
    control_marker = tmp_path / "control_ran"
    control = _malicious(tmp_path / f"control.{kind}", control_marker, kind)
    if kind == "pickle":
        with open(control, "rb") as f:
            pickle.load(f)
    else:
        torch.load(control, weights_only=False)
    assert control_marker.exists()

    marker = tmp_path / "payload_ran"
    path = _malicious(tmp_path / "model_best.pth.tar", marker, kind)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "refused to load" in str(err.value)
    assert ".system" in str(err.value) and "run arbitrary code" in str(err.value)  # names the culprit
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(path)
    model = build_model(backbone="r2plus1d_tiny", head="tgap", num_classes=K, clip_len=8)
    for source in FILTERS:
        with pytest.raises(CheckpointError, match="refused to load"):
            load_weights(model, path, source=source)
    assert not marker.exists()


def test_model_folder_cannot_smuggle_a_pickle(tmp_path):
    marker = tmp_path / "payload_ran"
    folder = save_pretrained(_model(**MODELS["r2plus1d+bert"]), tmp_path / "m",
                             info=inference_config(_model(**MODELS["r2plus1d+bert"]), classes=CLASSES))
    _malicious(folder / "model.safetensors", marker, "zip")  # a torch.save pickle under the safetensors name
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        from_pretrained(folder)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(_model(**MODELS["r2plus1d+bert"]), folder, source="actionbert")
    assert not marker.exists()


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not a readable PyTorch checkpoint"),
    (bytes(range(256)) * 4, "refused to load: not a checkpoint of plain tensors"),
])
def test_unreadable_files_give_a_clear_error(content, message, tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------- atomic writes
def test_atomic_write_leaves_nothing_behind_on_failure_and_uses_normal_permissions(tmp_path):
    def fail(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "out.bin", fail)
    assert list(tmp_path.iterdir()) == []
    path = atomic_write(tmp_path / "ok.pt2", lambda tmp: Path(tmp).write_text("x"), suffix=".tmp.pt2")
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text() == "x" and (path.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert [p.name for p in tmp_path.iterdir()] == ["ok.pt2"]
