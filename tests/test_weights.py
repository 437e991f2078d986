"""Pretrained weights: every source format maps completely onto our layout, and reference checkpoints compute
the reference model's logits.

The source formats are described here independently of our models: torchvision's own classes (built on the meta
device) for torchvision / IG-65M, and layout functions written from the formats' module structure for Hara's
ResNeXt and for the reference code (artest08/LateTemporalModeling3DCNN: `features` = the trunk's children,
`mapper` = FRAB, FRMB as the last block of `features.7`, BERT5 names). Reference equivalence is checked
against `reference_logits`, a functional transcription of the reference forward pass that reads the
reference-format state dict directly (F.conv3d / F.batch_norm / F.linear).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

from actionbert import build_model, from_pretrained, load_weights
from actionbert.checkpoint import inference_config, save_checkpoint, save_pretrained
from actionbert.cli import main
from actionbert.weights import (BACKBONE_ONLY, FILTERS, WeightsError, infer_reference_architecture, load_state,
                                read_weights)

K = 7  # a non-default class count
# Loading into meta-device models (full-size layouts) makes BatchNorm warn that it fills in a counter as a no-op.
pytestmark = pytest.mark.filterwarnings("ignore:.*to a meta parameter in the current model.*:UserWarning")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ===================================================================== independent layouts of the formats
Layout = dict[str, tuple[int, ...]]


def bn(prefix: str, c: int, *, counters: bool = True) -> Layout:
    out = {f"{prefix}weight": (c,), f"{prefix}bias": (c,), f"{prefix}running_mean": (c,), f"{prefix}running_var": (c,)}
    if counters:
        out[f"{prefix}num_batches_tracked"] = ()
    return out


def mid_torchvision(cin: int, cout: int) -> int:
    """(2+1)D mid width with the parameter count of a full 3x3x3 conv (torchvision's and Caffe2's rule)."""
    return (cin * cout * 27) // (cin * 9 + 3 * cout)


def videoresnet_layout(*, conv: str, stem_mid: int, stem_out: int, planes, layers, classes: int | None,
                       per_conv_mid: bool = False) -> Layout:
    """torchvision VideoResNet keys. conv: "2plus1d", "3d" or "mc3" (3D in layer 1, 1x3x3 after).

    torchvision computes one mid width per block from its input width; the IG-65M (Caffe2) models compute it per
    convolution (`per_conv_mid`), which only changes the second conv of the first block of layers 2-4.
    """
    out: Layout = {}
    if conv == "2plus1d":
        out |= {"stem.0.weight": (stem_mid, 3, 1, 7, 7), **bn("stem.1.", stem_mid),
                "stem.3.weight": (stem_out, stem_mid, 3, 1, 1), **bn("stem.4.", stem_out)}
    else:
        out |= {"stem.0.weight": (stem_out, 3, 3, 7, 7), **bn("stem.1.", stem_out)}
    inplanes = stem_out
    for li, (p, n) in enumerate(zip(planes, layers), start=1):
        kind = conv if conv != "mc3" else ("3d" if li == 1 else "2d")
        for b in range(n):
            cin = inplanes if b == 0 else p
            pre = f"layer{li}.{b}."
            block_mid = mid_torchvision(cin, p)
            for ci, c_in in ((1, cin), (2, p)):
                q = f"{pre}conv{ci}."
                if kind == "2plus1d":
                    mid = mid_torchvision(c_in, p) if per_conv_mid else block_mid
                    out |= {f"{q}0.0.weight": (mid, c_in, 1, 3, 3), **bn(f"{q}0.1.", mid),
                            f"{q}0.3.weight": (p, mid, 3, 1, 1)}
                else:
                    k = (3, 3, 3) if kind == "3d" else (1, 3, 3)
                    out[f"{q}0.weight"] = (p, c_in, *k)
                out |= bn(f"{q}1.", p)
            if b == 0 and (li > 1 or cin != p):
                out |= {f"{pre}downsample.0.weight": (p, cin, 1, 1, 1), **bn(f"{pre}downsample.1.", p)}
        inplanes = p
    if classes:
        out |= {"fc.weight": (classes, inplanes), "fc.bias": (classes,)}
    return out


def bottleneck(prefix: str, cin: int, planes: int, mid: int, cardinality: int, *, shortcut: bool,
               counters: bool) -> Layout:
    """Hara's ResNeXtBottleneck (expansion 2): conv1/bn1, grouped conv2/bn2, conv3/bn3, downsample.0/1."""
    out = {f"{prefix}conv1.weight": (mid, cin, 1, 1, 1), **bn(f"{prefix}bn1.", mid, counters=counters),
           f"{prefix}conv2.weight": (mid, mid // cardinality, 3, 3, 3), **bn(f"{prefix}bn2.", mid, counters=counters),
           f"{prefix}conv3.weight": (2 * planes, mid, 1, 1, 1), **bn(f"{prefix}bn3.", 2 * planes, counters=counters)}
    if shortcut:
        out |= {f"{prefix}downsample.0.weight": (2 * planes, cin, 1, 1, 1),
                **bn(f"{prefix}downsample.1.", 2 * planes, counters=counters)}
    return out


RESNEXT101 = dict(stem=64, planes=(128, 256, 512, 1024), layers=(3, 4, 23, 3), cardinality=32,
                  mid=lambda p: 32 * (p // 32))  # Hara: mid = cardinality * int(planes / 32)
RESNEXT_TINY = dict(stem=16, planes=(16, 32, 64, 128), layers=(1, 1, 1, 2), cardinality=8, mid=lambda p: p)


def hara_layout(arch: dict, *, classes: int | None = 400, counters: bool = False) -> Layout:
    """Hara's ResNeXt keys (his Kinetics files predate BatchNorm's num_batches_tracked: `counters=False`)."""
    out: Layout = {"conv1.weight": (arch["stem"], 3, 7, 7, 7), **bn("bn1.", arch["stem"], counters=counters)}
    inplanes = arch["stem"]
    for li, (p, n) in enumerate(zip(arch["planes"], arch["layers"]), start=1):
        for b in range(n):
            cin = inplanes if b == 0 else 2 * p
            out |= bottleneck(f"layer{li}.{b}.", cin, p, arch["mid"](p), arch["cardinality"],
                              shortcut=b == 0 and (li > 1 or cin != 2 * p), counters=counters)
        inplanes = 2 * p
    if classes:
        out |= {"fc.weight": (classes, inplanes), "fc.bias": (classes,)}
    return out


def bert5_layout(width: int, tokens: int, *, blocks: int = 1) -> Layout:
    """The reference's BERT5: CLS token, learned positions (T'+1 rows), pre-norm blocks with a_2/b_2 norms."""
    out: Layout = {"bert.clsToken": (1, 1, width), "bert.embedding.learnedPosition.pe": (1, tokens + 1, width)}
    for i in range(blocks):
        p = f"bert.transformer_blocks.{i}."
        for j in range(3):
            out |= {f"{p}attention.linear_layers.{j}.weight": (width, width),
                    f"{p}attention.linear_layers.{j}.bias": (width,)}
        out |= {f"{p}attention.output_linear.weight": (width, width), f"{p}attention.output_linear.bias": (width,),
                f"{p}feed_forward.w_1.weight": (4 * width, width), f"{p}feed_forward.w_1.bias": (4 * width,),
                f"{p}feed_forward.w_2.weight": (width, 4 * width), f"{p}feed_forward.w_2.bias": (width,)}
        for sub in ("input_sublayer", "output_sublayer"):
            out |= {f"{p}{sub}.norm.a_2": (width,), f"{p}{sub}.norm.b_2": (width,)}
    return out


def reference_resnext_layout(arch: dict, *, head: str, reduction: str | None, tokens: int, classes: int) -> Layout:
    """A reference ResNeXt model: `features` = conv1, bn1, relu, maxpool, layer1..4; FRAB = `mapper`;
    FRMB = `features[7][last]` replaced by a 2048 -> 512 bottleneck with a projection shortcut."""
    trunk = hara_layout(arch, classes=None, counters=True)
    rename = {"conv1.": "features.0.", "bn1.": "features.1.", "layer1.": "features.4.", "layer2.": "features.5.",
              "layer3.": "features.6.", "layer4.": "features.7."}
    out: Layout = {}
    for k, s in trunk.items():
        head_part = next(p for p in rename if k.startswith(p))
        out[rename[head_part] + k[len(head_part):]] = s
    c4 = 2 * arch["planes"][3]
    width = c4
    if reduction:
        planes = c4 // 8  # 2048 -> 512: planes 256, out 2 * 256
        block = bottleneck("", c4, planes, arch["mid"](planes), arch["cardinality"], shortcut=True, counters=True)
        if reduction == "frab":
            out |= {f"mapper.{k}": s for k, s in block.items()}
        else:
            last = arch["layers"][3] - 1
            out = {k: s for k, s in out.items() if not k.startswith(f"features.7.{last}.")}
            out |= {f"features.7.{last}.{k}": s for k, s in block.items()}
        width = 2 * planes
    if head == "bert":
        out |= bert5_layout(width, tokens)
    return out | {"fc_action.weight": (classes, width), "fc_action.bias": (classes,)}


def reference_r2plus1d_layout(features: Layout, *, head: str, tokens: int, classes: int) -> Layout:
    """A reference R(2+1)D model: `features.*` (= the trunk's stem, layer1..4), BERT5 or nothing, fc_action."""
    width = features["features.4.0.conv2.1.weight"][0]
    out = dict(features)
    if head == "bert":
        out |= bert5_layout(width, tokens)
    return out | {"fc_action.weight": (classes, width), "fc_action.bias": (classes,)}


def as_reference_features(trunk: Layout) -> Layout:
    """torchvision names -> the reference's `features` Sequential indices (stem 0, layer1..4 -> 1..4)."""
    index = {"stem": 0, "layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4}
    out: Layout = {}
    for k, s in trunk.items():
        first, rest = k.split(".", 1)
        if first in index:
            out[f"features.{index[first]}.{rest}"] = s
    return out


def materialize(layout: Layout, *, seed: int = 0, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Random values of sensible scale for each key (positive variances, O(1) activations)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout.items():
        if device == "meta":
            out[key] = torch.empty(shape, device="meta", dtype=torch.long if not shape else torch.float32)
            continue
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            t = torch.tensor(1234)
        elif leaf in ("running_var", "a_2") or (leaf == "weight" and len(shape) == 1):
            t = 0.5 + torch.rand(shape, generator=g)
        elif leaf in ("running_mean", "bias", "b_2"):
            t = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) >= 2 and leaf == "weight":  # conv / linear: He-like scale on fan-in
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=g) * math.sqrt((2.0 if len(shape) == 5 else 1.0) / fan_in)
        else:  # clsToken, positional table
            t = torch.randn(shape, generator=g)
        out[key] = t
    return out


def shapes(state: dict[str, torch.Tensor]) -> Layout:
    return {k: tuple(v.shape) for k, v in state.items()}


def torchvision_meta(name: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return getattr(torchvision.models.video, name)().state_dict()


def ig65m_r2plus1d_34(classes: int) -> VideoResNet:
    """The IG-65M R(2+1)D-34 as its release files were written: torchvision classes, layers [3,4,6,3], the
    Caffe2 mid widths 288/576/1152 in the second conv of the first block of layers 2-4."""
    net = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem,
                      num_classes=classes)
    for layer, width in ((net.layer2, 128), (net.layer3, 256), (net.layer4, 512)):
        layer[0].conv2[0] = Conv2Plus1D(width, width, mid_torchvision(width, width))
    return net


# ========================================================== functional transcription of the reference code
def _bn(x, sd, p, eps):
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        training=False, eps=eps)


def _blocks(sd, prefix):
    return sorted({int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)})


def _conv2plus1d(x, sd, p, stride, eps):
    x = F.conv3d(x, sd[p + "0.weight"], stride=(1, stride, stride), padding=(0, 1, 1))  # spatial 1x3x3
    x = F.relu(_bn(x, sd, p + "1.", eps))
    return F.conv3d(x, sd[p + "3.weight"], stride=(stride, 1, 1), padding=(1, 0, 0))  # temporal 3x1x1


def _basic_block(x, sd, p, stride, eps):
    out = F.relu(_bn(_conv2plus1d(x, sd, p + "conv1.0.", stride, eps), sd, p + "conv1.1.", eps))
    out = _bn(_conv2plus1d(out, sd, p + "conv2.0.", 1, eps), sd, p + "conv2.1.", eps)
    res = x
    if p + "downsample.0.weight" in sd:
        res = _bn(F.conv3d(x, sd[p + "downsample.0.weight"], stride=stride), sd, p + "downsample.1.", eps)
    return F.relu(out + res)


def _r2plus1d_features(sd, x, eps):
    x = F.conv3d(x, sd["features.0.0.weight"], stride=(1, 2, 2), padding=(0, 3, 3))
    x = F.relu(_bn(x, sd, "features.0.1.", eps))
    x = F.conv3d(x, sd["features.0.3.weight"], padding=(1, 0, 0))
    x = F.relu(_bn(x, sd, "features.0.4.", eps))
    for layer in range(1, 5):
        for b in _blocks(sd, f"features.{layer}."):
            x = _basic_block(x, sd, f"features.{layer}.{b}.", 2 if layer > 1 and b == 0 else 1, eps)
    return x


def _bottleneck(x, sd, p, stride, eps=1e-5):
    w2 = sd[p + "conv2.weight"]
    out = F.relu(_bn(F.conv3d(x, sd[p + "conv1.weight"]), sd, p + "bn1.", eps))
    out = F.relu(_bn(F.conv3d(out, w2, stride=stride, padding=1, groups=w2.shape[0] // w2.shape[1]), sd,
                     p + "bn2.", eps))
    out = _bn(F.conv3d(out, sd[p + "conv3.weight"]), sd, p + "bn3.", eps)
    res = x
    if p + "downsample.0.weight" in sd:
        res = _bn(F.conv3d(x, sd[p + "downsample.0.weight"], stride=stride), sd, p + "downsample.1.", eps)
    return F.relu(out + res)


def _resnext_features(sd, x):
    x = F.conv3d(x, sd["features.0.weight"], stride=(1, 2, 2), padding=3)
    x = F.max_pool3d(F.relu(_bn(x, sd, "features.1.", 1e-5)), kernel_size=3, stride=2, padding=1)
    for layer, index in zip(range(1, 5), range(4, 8)):
        for b in _blocks(sd, f"features.{index}."):
            x = _bottleneck(x, sd, f"features.{index}.{b}.", 2 if layer > 1 and b == 0 else 1)
    if "mapper.conv1.weight" in sd:
        x = _bottleneck(x, sd, "mapper.", 1)
    return x


def _reference_norm(x, sd, p):
    mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)  # unbiased std, eps added to the std
    return sd[p + "a_2"] * (x - mean) / (std + 1e-6) + sd[p + "b_2"]


def _bert5(sd, tokens, heads=8):
    B = tokens.shape[0]
    x = torch.cat((sd["bert.clsToken"].repeat(B, 1, 1), tokens), 1)  # (B, T'+1, C)
    x = x + sd["bert.embedding.learnedPosition.pe"][:, :x.size(1)]
    n, width = x.shape[1:]
    dk = width // heads
    mask = torch.ones(B, 1, n, n)  # eval: nothing masked
    for i in _blocks(sd, "bert.transformer_blocks."):
        p = f"bert.transformer_blocks.{i}."
        h = _reference_norm(x, sd, p + "input_sublayer.norm.")
        q, k, v = [F.linear(h, sd[f"{p}attention.linear_layers.{j}.weight"], sd[f"{p}attention.linear_layers.{j}.bias"])
                   .view(B, -1, heads, dk).transpose(1, 2) for j in range(3)]
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(dk)
        att = torch.matmul(F.softmax(scores.masked_fill(mask == 0, -1e9), dim=-1), v)
        att = att.transpose(1, 2).contiguous().view(B, -1, heads * dk)
        x = x + F.linear(att, sd[p + "attention.output_linear.weight"], sd[p + "attention.output_linear.bias"])
        h = _reference_norm(x, sd, p + "output_sublayer.norm.")
        h = F.linear(h, sd[p + "feed_forward.w_1.weight"], sd[p + "feed_forward.w_1.bias"])
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * torch.pow(h, 3))))
        x = x + F.linear(h, sd[p + "feed_forward.w_2.weight"], sd[p + "feed_forward.w_2.bias"])
    return x


def reference_logits(sd: dict[str, torch.Tensor], clip: torch.Tensor, *, bn_eps: float = 1e-5) -> torch.Tensor:
    """The reference models' eval forward on a reference-format state dict (no `module.` prefix).

    R(2+1)D: features -> BERT: AvgPool3d((1, 7, 7)) -> view(B, C, T') -> BERT5 -> CLS -> fc_action;
    TGAP: AdaptiveAvgPool3d(1) -> fc_action. ResNeXt: features (-> mapper) -> BERT: AvgPool3d((1, 4, 4)) ...;
    TGAP: the trunk's AvgPool3d((4, 4, 4)) (64 frames, 112 px) -> fc_action. Pool sizes as hard-coded there.
    """
    resnext = "features.0.weight" in sd
    x = _resnext_features(sd, clip) if resnext else _r2plus1d_features(sd, clip, bn_eps)
    B, C, T = x.shape[:3]
    if "bert.clsToken" in sd:
        pooled = F.avg_pool3d(x, (1, 4, 4) if resnext else (1, 7, 7), stride=1)
        tokens = pooled.view(B, C, T).transpose(1, 2)  # (B, T', C)
        out = _bert5(sd, tokens)[:, 0]
    elif resnext:
        out = F.avg_pool3d(x, (4, 4, 4), stride=1).view(B, -1)
    else:
        out = F.adaptive_avg_pool3d(x, 1).flatten(1)
    return F.linear(out, sd["fc_action.weight"], sd["fc_action.bias"])


def save_reference_checkpoint(path: Path, state: dict[str, torch.Tensor], *, arch: str, data_parallel: bool):
    """The reference's `model_best.pth.tar`: epoch, arch, state_dict, best_prec1, best_loss, optimizer."""
    sd = {("module." if data_parallel else "") + k: v for k, v in state.items()}
    optimizer = {"state": {0: {"step": 3, "exp_avg": torch.zeros(2)}},
                 "param_groups": [{"lr": 1e-5, "weight_decay": 1e-3, "params": [0]}]}
    torch.save({"epoch": 12, "arch": arch, "state_dict": sd, "best_prec1": 81.3, "best_loss": 0.71,
                "optimizer": optimizer}, path)
    return path


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# ============================================================================= the layouts are the real ones
@pytest.mark.parametrize(("name", "conv"), [("r2plus1d_18", "2plus1d"), ("r3d_18", "3d"), ("mc3_18", "mc3")])
def test_videoresnet_layout_equals_torchvision(name, conv):
    expected = shapes(torchvision_meta(name))
    stem_mid = 45 if conv == "2plus1d" else 0
    assert videoresnet_layout(conv=conv, stem_mid=stem_mid, stem_out=64, planes=(64, 128, 256, 512),
                              layers=(2, 2, 2, 2), classes=400) == expected


def test_ig65m_layout_equals_torchvision_built_ig65m_model():
    with torch.device("meta"):
        expected = shapes(ig65m_r2plus1d_34(359).state_dict())
    layout = videoresnet_layout(conv="2plus1d", stem_mid=45, stem_out=64, planes=(64, 128, 256, 512),
                                layers=(3, 4, 6, 3), classes=359, per_conv_mid=True)
    assert layout == expected
    assert layout["layer2.0.conv2.0.0.weight"][0] == 288 and layout["layer2.0.conv1.0.0.weight"][0] == 230


# =========================================================== full-size formats onto full-size models (meta)
def _meta_model(**kw):
    with torch.device("meta"):
        return build_model(num_classes=K, **kw)


def _backbone_keys(model, *, exclude: str | None = None):
    return {k for k in model.state_dict() if k.startswith("backbone.") and not (exclude and k.startswith(exclude))}


@pytest.mark.parametrize("name", ["r2plus1d_18", "r3d_18", "mc3_18"])
def test_torchvision_kinetics_state_dict_loads_whole_backbone(name):
    model = _meta_model(backbone=name, head="bert", clip_len=16)
    state = torchvision_meta(name)
    report = load_state(model, state, source="torchvision", where=name)
    assert len(report.loaded) + len(report.skipped) == len(state)  # every key of the file is accounted for
    assert set(report.loaded) == _backbone_keys(model)
    assert report.skipped == ["fc.weight", "fc.bias"] and "backbone" in report.reasons["fc.weight"]
    assert set(report.missing) == {k for k in model.state_dict() if not k.startswith("backbone.")}


@pytest.mark.parametrize("classes", [487, 359, 400])  # IG-65M 8f, IG-65M 32f, Kinetics fine-tuned
def test_ig65m_release_state_dict_loads_whole_r2plus1d_34(classes):
    with torch.device("meta"):
        state = ig65m_r2plus1d_34(classes).state_dict()
    model = _meta_model(backbone="r2plus1d_34", head="bert", clip_len=32)
    report = load_state(model, state, source="ig65m", where="ig65m")
    assert len(report.loaded) + len(report.skipped) == len(state)
    assert set(report.loaded) == _backbone_keys(model)
    assert report.skipped == ["fc.weight", "fc.bias"]
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all(m.eps == 1e-3 for m in bns)  # the Caffe2 constants the release weights were trained with


@pytest.mark.parametrize("reduction", [None, "frab", "frmb"])
def test_hara_resnext101_checkpoint_loads_whole_backbone(reduction):
    state = {f"module.{k}": v for k, v in materialize(hara_layout(RESNEXT101), device="meta").items()}
    model = _meta_model(backbone="resnext101_3d", head="bert" if reduction else "tgap", clip_len=64,
                        reduction=reduction)
    report = load_state(model, state, source="hara", where="hara")
    assert len(report.loaded) + len(report.skipped) == len(state)
    replaced = "backbone.layer4.2." if reduction == "frmb" else None
    counters = {k for k in model.state_dict() if k.endswith("num_batches_tracked")}
    assert set(report.loaded) == _backbone_keys(model, exclude=replaced) - counters
    frmb_skipped = {k for k in report.skipped if k.startswith("backbone.layer4.2.")}
    assert set(report.skipped) == {"fc.weight", "fc.bias"} | frmb_skipped
    if reduction == "frmb":  # the pretrained plain block (no shortcut) is skipped; the FRMB block stays at init
        assert len(frmb_skipped) == 3 + 3 * 4 and all("FRMB" in report.reasons[k] for k in frmb_skipped)
        assert {k for k in report.missing if k.startswith(replaced)} == {
            k for k in model.state_dict() if k.startswith(replaced)}
    else:
        assert not frmb_skipped
    assert set(report.missing) - counters == {
        k for k in model.state_dict() if not k.startswith("backbone.") or (replaced and k.startswith(replaced))
    } - counters


REFERENCE_FULL = {
    "rgb_r2plus1d_32f_34_bert10": dict(backbone="r2plus1d_34", head="bert", clip_len=32, reduction=None),
    "rgb_r2plus1d_64f_34_bert10": dict(backbone="r2plus1d_34", head="bert", clip_len=64, reduction=None),
    "rgb_r2plus1d_32f_34": dict(backbone="r2plus1d_34", head="tgap", clip_len=32, reduction=None),
    "rgb_resneXt3D64f101_bert10_FRAB": dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frab"),
    "rgb_resneXt3D64f101_bert10_FRMB": dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frmb"),
    "rgb_resneXt3D64f101": dict(backbone="resnext101_3d", head="tgap", clip_len=64, reduction=None),
    "rgb_resneXt3D64f101_FRMB_adamw": dict(backbone="resnext101_3d", head="tgap", clip_len=64, reduction="frmb"),
}


def _full_reference_layout(arch: str, classes: int) -> Layout:
    kw = REFERENCE_FULL[arch]
    tokens = kw["clip_len"] // (8 if kw["backbone"] == "r2plus1d_34" else 16)
    if kw["backbone"] == "r2plus1d_34":
        with torch.device("meta"):  # the reference takes children()[:-2] of this model as `features`
            features = nn.Sequential(*list(ig65m_r2plus1d_34(359).children())[:-2])
        layout = {f"features.{k}": s for k, s in shapes(features.state_dict()).items()}
        return reference_r2plus1d_layout(layout, head=kw["head"], tokens=tokens, classes=classes)
    return reference_resnext_layout(RESNEXT101, head=kw["head"], reduction=kw["reduction"], tokens=tokens,
                                    classes=classes)


@pytest.mark.parametrize("arch", list(REFERENCE_FULL))
def test_reference_full_size_checkpoint_is_consumed_completely(arch):
    state = {f"module.{k}": v for k, v in materialize(_full_reference_layout(arch, 51), device="meta").items()}
    config = infer_reference_architecture(state, arch=arch)
    assert config == {**REFERENCE_FULL[arch], "num_classes": 51}
    with torch.device("meta"):
        model = build_model(**config)
    report = load_state(model, state, source="reference", where=arch)
    assert report.skipped == [] and report.missing == []  # every key of the file has a place, nothing left over
    assert len(report.loaded) == len(state) == len(model.state_dict())


def test_infer_reference_architecture_refuses_what_it_cannot_rebuild():
    state = materialize(_full_reference_layout("rgb_resneXt3D64f101_bert10_FRAB", 51), device="meta")
    with pytest.raises(WeightsError, match="optical-flow"):
        infer_reference_architecture(state, arch="flow_resneXt3D64f101_bert10_FRAB")
    with pytest.raises(WeightsError, match="unsupported reference arch 'rgb_resneXt3D64f101_FRMB_lstm'"):
        infer_reference_architecture(state, arch="rgb_resneXt3D64f101_FRMB_lstm")
    with pytest.raises(WeightsError, match="does not match"):
        infer_reference_architecture(state, backbone="r2plus1d_34")
    with pytest.raises(WeightsError, match="means reduction 'frmb', but the checkpoint's keys hold 'frab'"):
        infer_reference_architecture(state, arch="rgb_resneXt3D64f101_bert10_FRMB")
    # no arch string: the keys alone give head, reduction, classes and (from the positional table) clip length
    assert infer_reference_architecture(state) == REFERENCE_FULL["rgb_resneXt3D64f101_bert10_FRAB"] | {
        "num_classes": 51}


# ===================================================================== reference equivalence (tiny models)
TINY_R2P1D = dict(conv="2plus1d", stem_mid=12, stem_out=16, planes=(16, 32, 64, 128), layers=(1, 1, 1, 1))

# name: (our build kwargs, input size). The reference pools BERT tokens with AvgPool3d((1, 7, 7)) / ((1, 4, 4)),
# which is a spatial mean only at 112 px, and ResNeXt TGAP with AvgPool3d((4, 4, 4)), a global mean only at
# 64 frames; the clips here keep those sizes. Fewer frames than the reference's 32 / 64 for BERT (2 tokens instead
# of 4) keep the test fast without changing any code path.
REFERENCE_TINY = {
    "r2plus1d+bert": (dict(backbone="r2plus1d_tiny", head="bert", clip_len=16), 112),
    "r2plus1d+tgap": (dict(backbone="r2plus1d_tiny", head="tgap", clip_len=16), 64),
    "resnext+bert+frab": (dict(backbone="resnext_tiny", head="bert", clip_len=32, reduction="frab"), 112),
    "resnext+bert+frmb": (dict(backbone="resnext_tiny", head="bert", clip_len=32, reduction="frmb"), 112),
    "resnext+tgap": (dict(backbone="resnext_tiny", head="tgap", clip_len=64), 112),
}


def tiny_reference_state(kw: dict, classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    if kw["backbone"] == "r2plus1d_tiny":
        features = as_reference_features(videoresnet_layout(**TINY_R2P1D, classes=None))
        layout = reference_r2plus1d_layout(features, head=kw["head"], tokens=kw["clip_len"] // 8, classes=classes)
    else:
        layout = reference_resnext_layout(RESNEXT_TINY, head=kw["head"], reduction=kw.get("reduction"),
                                          tokens=kw["clip_len"] // 16, classes=classes)
    return materialize(layout, seed=seed)


@pytest.mark.parametrize("name", list(REFERENCE_TINY))
def test_reference_checkpoint_gives_reference_logits(name, tmp_path):
    kw, size = REFERENCE_TINY[name]
    state = tiny_reference_state(kw, classes=K)
    path = save_reference_checkpoint(tmp_path / "model_best.pth.tar", state, arch="rgb_tiny", data_parallel=True)
    model = build_model(num_classes=K, input_size=size, **kw)
    report = load_weights(model, path, source="reference")
    assert report.skipped == [] and report.missing == [] and len(report.loaded) == len(state)

    clip = torch.randn(2, 3, kw["clip_len"], size, size)
    with torch.no_grad():
        ours = model.eval()(clip)
        expected = reference_logits(state, clip)
    assert ours.shape == (2, K)
    assert rel_err(ours, expected) < 1e-4
    if name == "resnext+bert+frab":  # the comparison can fail: swapping Q and V in the file changes the logits
        swapped = dict(state)
        p = "bert.transformer_blocks.0.attention.linear_layers."
        for leaf in ("weight", "bias"):
            swapped[f"{p}0.{leaf}"], swapped[f"{p}2.{leaf}"] = state[f"{p}2.{leaf}"], state[f"{p}0.{leaf}"]
        with torch.no_grad():
            assert rel_err(ours, reference_logits(swapped, clip)) > 1e-2


def test_reference_checkpoint_into_new_class_count_skips_only_the_classifier(tmp_path):
    kw, _ = REFERENCE_TINY["resnext+bert+frmb"]
    state = tiny_reference_state(kw, classes=51)
    path = save_reference_checkpoint(tmp_path / "hmdb.pth.tar", state, arch="rgb_tiny", data_parallel=False)
    model = build_model(num_classes=K, **kw)
    fc_before = model.fc.weight.detach().clone()
    report = load_weights(model, path, source="reference")  # what `train --pretrained` does on a new dataset
    assert report.skipped == ["fc.weight", "fc.bias"] and report.missing == ["fc.weight", "fc.bias"]
    assert "51 classes" in report.reasons["fc.weight"] and f"has {K}" in report.reasons["fc.weight"]
    assert torch.equal(model.fc.weight, fc_before)
    key_proj = state["bert.transformer_blocks.0.attention.linear_layers.1.weight"]
    assert torch.equal(model.head.blocks[0].attn.k.weight, key_proj)
    assert torch.equal(model.backbone.layer4[1].downsample[0].weight, state["features.7.1.downsample.0.weight"])
    assert "fc.* (2 tensors): left at initialisation" in report.summary()


def test_shape_mismatch_names_file_key_and_both_shapes(tmp_path):
    kw, _ = REFERENCE_TINY["r2plus1d+bert"]
    path = save_reference_checkpoint(tmp_path / "r.pth.tar", tiny_reference_state(kw, K), arch="x",
                                     data_parallel=True)
    model = build_model(num_classes=K, **{**kw, "clip_len": 32})  # 4 tokens where the file has 2
    with pytest.raises(WeightsError) as err:
        load_weights(model, path, source="reference")
    msg = str(err.value)
    assert str(path) in msg and "head.pos_embed: file (1, 3, 128) vs model (1, 5, 128)" in msg


# ====================================================================== backbone-only sources (tiny models)
def _hara_file(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """Hara's release layout: DataParallel prefixes inside `state_dict`, legacy (pre-zip) serialisation."""
    torch.save({"epoch": 200, "arch": "resnext-101", "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": []}]}}, path,
               _use_new_zipfile_serialization=False)
    return path


BACKBONE_CASES = {  # name: (source, our build kwargs, file layout, writer)
    "torchvision-r2plus1d": ("torchvision", dict(backbone="r2plus1d_tiny", head="bert", clip_len=16),
                             videoresnet_layout(**TINY_R2P1D, classes=400), "pth"),
    "torchvision-r3d": ("torchvision", dict(backbone="r3d_tiny", head="tgap", clip_len=16),
                        videoresnet_layout(conv="3d", stem_mid=0, stem_out=16, planes=(16, 32, 64, 128),
                                           layers=(1, 1, 1, 1), classes=400), "safetensors"),
    "torchvision-mc3": ("torchvision", dict(backbone="mc3_tiny", head="bert", clip_len=16),
                        videoresnet_layout(conv="mc3", stem_mid=0, stem_out=16, planes=(16, 32, 64, 128),
                                           layers=(1, 1, 1, 1), classes=400), "pth"),
    "ig65m-r2plus1d": ("ig65m", dict(backbone="r2plus1d_tiny", head="tgap", clip_len=32),
                       videoresnet_layout(**TINY_R2P1D, classes=359), "pth"),
    "hara-frab": ("hara", dict(backbone="resnext_tiny", head="bert", clip_len=64, reduction="frab"),
                  hara_layout(RESNEXT_TINY), "hara"),
    "hara-frmb": ("hara", dict(backbone="resnext_tiny", head="bert", clip_len=64, reduction="frmb"),
                  hara_layout(RESNEXT_TINY), "hara"),
    "hara-tgap": ("hara", dict(backbone="resnext_tiny", head="tgap", clip_len=64), hara_layout(RESNEXT_TINY), "hara"),
}


def _our_name(source: str, key: str) -> str:
    """Where each source key must land (written out here, independently of the filters' rules)."""
    if key.startswith("fc."):
        return key
    if source == "hara":
        first, rest = key.split(".", 1)
        return {"conv1": "backbone.stem.0", "bn1": "backbone.stem.1"}.get(first, f"backbone.{first}") + "." + rest
    return f"backbone.{key}"


@pytest.mark.parametrize("case", list(BACKBONE_CASES))
def test_backbone_source_loads_backbone_and_keeps_the_rest(case, tmp_path):
    source, kw, layout, writer = BACKBONE_CASES[case]
    state = materialize(layout, seed=3)
    if writer == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file(state, path)
    elif writer == "hara":
        path = _hara_file(tmp_path / "resnext-tiny-kinetics.pth", state)
    else:
        path = tmp_path / "w.pth"
        torch.save(state, path)
    model = build_model(num_classes=K, **kw)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_weights(model, path, source=source)

    after = model.state_dict()
    replaced = "backbone.layer4.1." if kw.get("reduction") == "frmb" else None
    expected_loaded = set()
    for key, value in state.items():
        ours = _our_name(source, key)
        if key.startswith("fc.") or (replaced and ours.startswith(replaced)):
            assert ours in report.skipped
            continue
        assert torch.equal(after[ours], value), ours
        expected_loaded.add(ours)
    assert set(report.loaded) == expected_loaded
    assert len(report.loaded) + len(report.skipped) == len(state)  # nothing silently ignored
    assert {"fc.weight", "fc.bias"} <= set(report.skipped)
    for key in report.missing:  # everything not loaded is exactly as initialised (head, fc, reduction, FRMB)
        assert torch.equal(after[key], before[key]), key
    assert set(report.loaded) | set(report.missing) == set(after)
    if replaced:
        assert any(k.startswith(replaced) for k in report.missing)


def test_torchvision_r2plus1d_18_weights_reproduce_torchvision_features():
    tv = torchvision.models.video.r2plus1d_18().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a misplaced tensor changes the output
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    model = build_model(backbone="r2plus1d_18", head="tgap", num_classes=K, clip_len=8).eval()
    load_state(model, tv.state_dict(), source="torchvision")  # (files are read the same way for every source)
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        ours = model.forward_head(model.forward_features(clip), pre_logits=True)  # TGAP = avgpool of torchvision
        theirs = nn.Sequential(*list(tv.children())[:-1])(clip).flatten(1)
        assert rel_err(ours, theirs) < 1e-5
        assert rel_err(tv.fc(ours), tv(clip)) < 1e-5


def test_wrong_source_or_backbone_is_an_error_not_a_partial_load(tmp_path):
    path = _hara_file(tmp_path / "hara.pth", materialize(hara_layout(RESNEXT_TINY)))
    model = build_model(backbone="resnext_tiny", head="tgap", num_classes=K, clip_len=64)
    with pytest.raises(WeightsError, match=r"does not cover this model's backbone.*backbone\.stem\.0\.weight"):
        load_weights(model, path, source="torchvision")  # layers would fit, the stem (conv1/bn1) would not
    with pytest.raises(WeightsError, match="nothing in this file fits"):
        load_weights(model, path, source="reference")
    r3d = tmp_path / "r3d.pth"
    torch.save(materialize(videoresnet_layout(conv="3d", stem_mid=0, stem_out=16, planes=(16, 32, 64, 128),
                                              layers=(1, 1, 1, 1), classes=400)), r3d)
    with pytest.raises(WeightsError, match=r"backbone\.stem\.0\.weight: file \(16, 3, 3, 7, 7\) vs model "
                                           r"\(12, 3, 1, 7, 7\)"):
        load_weights(build_model(backbone="r2plus1d_tiny", head="tgap", num_classes=K, clip_len=16), r3d,
                     source="torchvision")
    with pytest.raises(ValueError, match="unknown weights source 'caffe2'"):
        load_weights(model, path, source="caffe2")


# ============================================================================ our own format as a source
def test_actionbert_source_reads_folder_safetensors_training_checkpoint_and_state_dict(tmp_path):
    src = build_model(backbone="resnext_tiny", head="bert", num_classes=K, clip_len=16, reduction="frmb",
                      input_size=32).eval()
    with torch.no_grad():
        for b in src.modules():
            if isinstance(b, nn.BatchNorm3d):
                b.running_mean.normal_(0, 0.1)
    info = inference_config(src, classes=[f"c{i}" for i in range(K)], norm="hara")
    save_pretrained(src, tmp_path / "folder", info=info)
    save_checkpoint(tmp_path / "best.pt", {"model_state": src.state_dict(), "inference": info, "epoch": 3})
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "ddp_state.pt")
    clip = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        expected = src(clip)
    for path in (tmp_path / "folder", tmp_path / "folder" / "model.safetensors", tmp_path / "best.pt",
                 tmp_path / "ddp_state.pt"):
        model = build_model(**info["model"]).eval()
        report = load_weights(model, path, source="actionbert")
        assert report.skipped == [] and report.missing == []
        with torch.no_grad():
            assert torch.equal(model(clip), expected), path
    state, meta = read_weights(tmp_path / "best.pt")
    assert meta["epoch"] == 3 and meta["inference"]["classes"][0] == "c0" and "model_state" not in meta


def test_filters_are_pure_and_cover_every_source():
    assert set(FILTERS) == {"torchvision", "ig65m", "hara", "reference", "actionbert"}
    assert BACKBONE_ONLY == {"torchvision", "ig65m", "hara"}
    model = _meta_model(backbone="resnext_tiny", head="bert", clip_len=64, reduction="frab")
    state = {f"module.{k}": v for k, v in tiny_reference_state(dict(backbone="resnext_tiny", head="bert",
                                                                    clip_len=64, reduction="frab"), K).items()}
    snapshot = dict(state)
    for name, fn in FILTERS.items():
        out = fn(state, model)
        assert out is not state and list(state) == list(snapshot), name  # the input is left untouched
        assert all(state[k] is snapshot[k] for k in snapshot), name
        assert len(out) == len(state) and {id(v) for v in out.values()} == {id(v) for v in state.values()}


# ======================================================================================= convert (CLI)
def test_cli_convert_reference_checkpoint_to_model_folder(tmp_path, capsys):
    kw, size = REFERENCE_TINY["resnext+bert+frab"]
    state = tiny_reference_state(kw, classes=3)
    path = save_reference_checkpoint(tmp_path / "model_best.pth.tar", state, arch="rgb_resneXt3D64f101_bert10_FRAB",
                                     data_parallel=True)
    (tmp_path / "classes.txt").write_text("run\njump\n\nwave\n")
    out = tmp_path / "converted"
    code = main(["convert", str(path), "--source", "reference", "--backbone", "resnext_tiny", "--out", str(out),
                 "--classes", str(tmp_path / "classes.txt")])
    printed = capsys.readouterr().out
    assert code == 0 and f"loaded {len(state)} tensors, skipped 0, missing 0" in printed
    model, info = from_pretrained(out)  # head, reduction, class count and clip length came from the checkpoint
    assert (info["model"]["head"], info["model"]["reduction"], info["clip_len"]) == ("bert", "frab", 32)
    assert info["classes"] == ["run", "jump", "wave"] and info["preprocessing"]["norm"] == "hara"
    clip = torch.randn(1, 3, kw["clip_len"], size, size)
    with torch.no_grad():
        assert rel_err(model(clip), reference_logits(state, clip)) < 1e-4


def test_cli_convert_backbone_source_needs_architecture_and_reports_skips(tmp_path, capsys):
    path = tmp_path / "r2plus1d_tiny_kinetics.pth"
    torch.save(materialize(videoresnet_layout(**TINY_R2P1D, classes=400)), path)
    out = tmp_path / "folder"
    assert main(["convert", str(path), "--source", "torchvision", "--out", str(out)]) == 2
    assert "--backbone" in capsys.readouterr().err and not out.exists()
    code = main(["convert", str(path), "--source", "torchvision", "--out", str(out), "--backbone", "r2plus1d_tiny",
                 "--head", "bert", "--num-classes", "5", "--clip-len", "16"])
    printed = capsys.readouterr().out
    assert code == 0 and "skipped fc.weight, fc.bias: not part of the backbone" in printed
    assert "missing head.* (18 tensors)" in printed
    model, info = from_pretrained(out)
    assert model.num_classes == 5 and info["classes"][4] == "class_4" and info["preprocessing"]["norm"] == "torchvision"


def test_cli_convert_training_checkpoint_keeps_its_config(tmp_path, capsys):
    src = build_model(backbone="r2plus1d_tiny", head="tgap", num_classes=3, clip_len=8, input_size=32)
    info = inference_config(src, classes=["a", "b", "c"], frame_stride=2, norm="torchvision")
    save_checkpoint(tmp_path / "best.pt", {"model_state": src.state_dict(), "inference": info})
    assert main(["convert", str(tmp_path / "best.pt"), "--source", "actionbert", "--out", str(tmp_path / "f")]) == 0
    model, got = from_pretrained(tmp_path / "f")
    assert got == info
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
