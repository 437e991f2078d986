"""Export: each format reproduces eager PyTorch at the model's clip shape with a dynamic batch, and the built-in
check fails when it should."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tolerances import rel_to_max, reorder_bound

from actionbert import build_model
from actionbert import export as ex
from actionbert.checkpoint import inference_config, save_checkpoint, save_pretrained
from actionbert.cli import main
from actionbert.export import ExportCheckError, compare_exported, export_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")


MODELS = {
    "r2plus1d+bert": dict(backbone="r2plus1d_tiny", head="bert"),
    "resnext+bert+frab": dict(backbone="resnext_tiny", head="bert", reduction="frab"),
}


def _model(name: str, *, clip_len: int = 16, input_size: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(num_classes=6, clip_len=clip_len, input_size=input_size, **MODELS[name]).eval()


def _load_independently(path, fmt):
    """Load the file with the format's own runtime (not through actionbert.export)."""
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["clip"]
        assert session.get_inputs()[0].shape[1:] == [3, 16, 64, 64]  # fixed clip shape, symbolic batch
        assert isinstance(session.get_inputs()[0].shape[0], str)
        return lambda x: torch.from_numpy(session.run(None, {"clip": x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch-export"])
@pytest.mark.parametrize("name", list(MODELS))
def test_export_matches_eager_with_dynamic_batch(name, fmt, tmp_path):
    model = _model(name)
    out = tmp_path / f"model{ex.SUFFIXES[fmt]}"
    result = export_model(model, out, format=fmt)
    assert result.path == out and out.is_file() and result.clip_shape == (3, 16, 64, 64)
    assert result.max_abs_diff < 1e-4 and result.batches == (2, 3)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary files left behind

    run = _load_independently(out, fmt)
    clip = torch.randn(4, 3, 16, 64, 64, generator=torch.Generator().manual_seed(7))  # a batch not traced
    with torch.no_grad():
        expected, got = model(clip), run(clip)
    assert got.shape == (4, 6)
    assert rel_to_max(got, expected) < reorder_bound(model)  # another runtime's kernels: the same maths reordered


def test_check_fails_when_the_exported_outputs_differ(tmp_path, monkeypatch):
    model = _model("resnext+bert+frab", clip_len=8, input_size=32)
    real = ex.RUNNERS["onnx"]

    def corrupted(path):  # the exported model, off by 1e-3 in one logit
        run = real(path)

        def bad(clip):
            y = run(clip).clone()
            y[0, 0] += 1e-3
            return y
        return bad

    monkeypatch.setattr(ex, "RUNNERS", {**ex.RUNNERS, "onnx": corrupted})
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportCheckError, match=r"max abs logit difference 0\.001 >= tolerance 0\.0001"):
        export_model(model, out, format="onnx")
    assert list(tmp_path.iterdir()) == []  # nothing written when the check fails

    monkeypatch.setattr(ex, "RUNNERS", {**ex.RUNNERS, "onnx": lambda path: lambda clip: real(path)(clip) * np.nan})
    with pytest.raises(ExportCheckError, match="max abs logit difference nan"):
        export_model(model, out, format="onnx")


def test_compare_exported_measures_a_different_model_as_different(tmp_path):
    model = _model("r2plus1d+bert", clip_len=8, input_size=32)
    other = _model("r2plus1d+bert", clip_len=8, input_size=32, seed=1)
    out = export_model(model, tmp_path / "m.ts", format="torchscript").path
    clips = [torch.randn(2, 3, 8, 32, 32)]
    assert compare_exported(out, "torchscript", model, clips) < 1e-6
    assert compare_exported(out, "torchscript", other, clips) > 1e-3


def test_cli_export_from_folder_and_training_checkpoint(tmp_path, capsys, monkeypatch):
    model = _model("resnext+bert+frab", clip_len=8, input_size=32)
    info = inference_config(model, classes=list("abcdef"), norm="hara")
    save_pretrained(model, tmp_path / "folder", info=info)
    save_checkpoint(tmp_path / "best.pt", {"model_state": model.state_dict(), "inference": info})

    assert main(["export", str(tmp_path / "folder"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "input (B, 3, 8, 32, 32), dynamic B" in printed and "max abs difference vs eager PyTorch" in printed
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        got = torch.from_numpy(session.run(None, {"clip": clip.numpy()})[0])
        assert rel_to_max(got, model(clip)) < reorder_bound(model)

    assert main(["export", str(tmp_path / "best.pt"), "--format", "torch-export", "--out",
                 str(tmp_path / "m.pt2"), "--batch", "1"]) == 0
    assert "(B in (1, 2))" in capsys.readouterr().out

    real = ex.RUNNERS["torchscript"]
    monkeypatch.setattr(ex, "RUNNERS", {**ex.RUNNERS, "torchscript": lambda p: lambda c: real(p)(c) + 1.0})
    assert main(["export", str(tmp_path / "best.pt"), "--format", "torchscript", "--out",
                 str(tmp_path / "m.ts")]) == 2
    err = capsys.readouterr().err
    assert "error: torchscript export does not match eager PyTorch" in err and "was not written" in err
    assert not (tmp_path / "m.ts").exists()
