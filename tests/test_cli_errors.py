"""Issue 11 (17): ordinary mistakes give one `error:` line, exit code 2 and create nothing; bugs a traceback.

Exit codes of every command: 0 all good, 1 some inputs failed, 2 an expected error (usage, data, disk), 3 a bug.
"""

from __future__ import annotations

import pytest
import torch

from actionbert.cli import main

CONFIG = """
model: {{backbone: r2plus1d_tiny, head: tgap, clip_len: 16, input_size: {size}}}
data: {{root: {root}, resize: [36, 48], num_workers: 0}}
train: {{out: {out}, epochs: 1, batch_size: 2}}
"""


@pytest.fixture
def workspace(tmp_path, video_tools):
    """A config, a video, a junk `model.pt` and a fake prepared folder; returns (tmp_path, paths)."""
    (tmp_path / "cfg.yaml").write_text(CONFIG.format(size=32, root=tmp_path / "prep", out=tmp_path / "run"))
    (tmp_path / "big.yaml").write_text(CONFIG.format(size=64, root=tmp_path / "prep", out=tmp_path / "run"))
    video_tools.write_coded(tmp_path / "clip.mp4", 8)
    (tmp_path / "model.pt").write_bytes(b"this is not a checkpoint")
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "classes.txt").write_text("a\nb\n")
    return tmp_path


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


CASES = {
    "missing config": (["train", "{t}/nope.yaml"], "nope.yaml: cannot read config"),
    "nothing to resume": (["train", "--resume", "--out", "{t}/none"], "nothing to resume"),
    "nothing to resume with a config": (["train", "{t}/cfg.yaml", "--resume"], "nothing to resume"),
    "unknown --set key": (["train", "{t}/cfg.yaml", "--set", "train.epoch=3"],
                          "override 'train.epoch=3': unknown key train.epoch (did you mean train.epochs?)"),
    "--set of the wrong type": (["train", "{t}/cfg.yaml", "--set", "train.epochs=three"],
                                "train.epochs expects a whole number, got 'three'"),
    "crop larger than the resized frames": (["train", "{t}/big.yaml"],
                                            "model.input_size 64 is larger than the smaller side of data.resize"),
    "unknown device": (["train", "{t}/cfg.yaml", "--device", "gpu"], "unknown device 'gpu'"),
    "views 2x3": (["eval", "{t}/model.pt", "--data", "{t}/prep", "--views", "2x3"], "crops must be 1, 5 or 10"),
    "refused checkpoint": (["predict", "{t}/model.pt", "{t}/clip.mp4"], "model.pt: not a readable PyTorch checkpoint"),
    "predict arguments swapped": (["predict", "{t}/clip.mp4", "{t}/model.pt"], "clip.mp4: a video, not a model"),
    "eval arguments swapped": (["eval", "{t}/prep", "--data", "{t}/model.pt"], "prep: a prepared dataset, not a model"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_an_ordinary_mistake_is_one_error_line_exit_2_and_creates_nothing(name, workspace, capsys):
    argv, message = CASES[name]
    before = listing(workspace)
    code = main([a.format(t=workspace) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert listing(workspace) == before  # no run folder, no eval folder, nothing


def test_set_errors_blame_the_override_not_the_yaml_file(workspace, capsys):
    assert main(["train", str(workspace / "cfg.yaml"), "--set", "train.epoch=3"]) == 2
    assert "cfg.yaml" not in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 training is allowed with CUDA")
def test_fp16_training_on_the_cpu_is_refused_before_anything_is_written(workspace, capsys):
    before = listing(workspace)
    assert main(["train", str(workspace / "cfg.yaml"), "--precision", "fp16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: precision fp16 needs a CUDA device") and "CPU" in err[0]
    assert listing(workspace) == before


def test_a_bug_shows_its_traceback_and_how_to_report_it(monkeypatch, capsys):
    import actionbert.cli as cli

    def broken(args):
        return 1 / 0

    add_args, _, help_text = cli.COMMANDS["models"]
    monkeypatch.setitem(cli.COMMANDS, "models", (add_args, broken, help_text))
    assert main(["models"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert err.strip().splitlines()[-1].startswith("error: this is a bug in actionbert")
