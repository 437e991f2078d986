"""Run configuration (YAML + overrides) and the optimizer set-up rules of the trainer."""

from __future__ import annotations

import pathlib
from types import SimpleNamespace

import pytest
import torch

from actionbert import build_model
from actionbert.config import ConfigError, TrainConfig, dump_config, load_config, resolve
from actionbert.train import _set_lrs, param_groups

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {backbone: r2plus1d_tiny, head: bert}\ntrain: {epochs: 3}\n")
    cfg = load_config(path, ["train.lr=0.01", "data.resize=[128,160]", "model.head_options.mask_prob=0.3",
                             "train.channels_last=false"])
    assert cfg.model.clip_len == 32  # the backbone's clip length when not given
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.data.resize == (128, 160)
    assert cfg.model.head_options == {"mask_prob": 0.3} and cfg.train.channels_last is False
    assert cfg.train.weight_decay == 1e-3 and cfg.train.plateau_patience == 5 and cfg.model.dropout == 0.8
    resolved = resolve(cfg, num_classes=13)
    assert resolved.model.num_classes == 13 and resolved.data.norm == "torchvision"
    assert load_config(None, []).model.backbone == "r2plus1d_34"
    # the dumped config reads back to the same thing
    (tmp_path / "back.yaml").write_text(dump_config(resolved))
    assert load_config(tmp_path / "back.yaml") == resolved


@pytest.mark.parametrize("bad", ["train.epoch=3", "nosection.x=1", "train.precision=fp8", "justtext"])
def test_bad_overrides_are_named(bad):
    with pytest.raises(ConfigError):
        load_config(None, [bad])


def test_unreadable_config_names_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.model.clip_len in (32, 64)


def test_five_reference_rows_are_shipped():
    rows = {(c.model.backbone, c.model.head, c.model.reduction, c.model.clip_len)
            for c in map(load_config, CONFIGS.glob("*.yaml"))}
    for row in [("resnext101_3d", "tgap", None, 64), ("resnext101_3d", "bert", "frmb", 64),
                ("resnext101_3d", "bert", "frab", 64), ("r2plus1d_34", "tgap", None, 32),
                ("r2plus1d_34", "bert", None, 32)]:
        assert row in rows


def test_weight_decay_excludes_norms_biases_cls_and_positions():
    model = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=5, clip_len=16)
    groups = param_groups(model, 1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    decay = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {"head.cls_token", "head.pos_embed", "fc.bias", "head.blocks.0.norm1.weight",
            "backbone.stem.1.weight"} <= no_decay
    assert {"fc.weight", "head.blocks.0.attn.q.weight", "backbone.stem.0.weight"} <= decay
    assert len(no_decay) + len(decay) == len(list(model.parameters()))


def test_warmup_and_backbone_freeze_schedule():
    model = build_model(backbone="r2plus1d_tiny", head="tgap", num_classes=5, clip_len=16)
    opt = torch.optim.AdamW(param_groups(model, 1e-3), lr=1e-3)
    t = TrainConfig(lr=1e-3, warmup_epochs=2, freeze_backbone_epochs=3)
    lrs = {}
    for epoch in range(4):
        _set_lrs(opt, t, epoch)
        lrs[epoch] = {g["part"]: g["lr"] for g in opt.param_groups}
    assert lrs[0]["head"] == pytest.approx(1e-5) and lrs[1]["head"] == pytest.approx(0.505e-3)
    assert lrs[2]["head"] == 1e-3 and lrs[0]["backbone"] == lrs[2]["backbone"] == 0.0
    assert lrs[3]["backbone"] == 1e-3
    # the plateau scheduler's cut carries over (head groups hold the truth)
    for g in opt.param_groups:
        g["lr"] *= 0.1
    _set_lrs(opt, SimpleNamespace(**{**t.__dict__}), 4)
    assert all(g["lr"] == pytest.approx(1e-4) for g in opt.param_groups)
