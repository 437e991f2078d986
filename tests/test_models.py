"""Models: shapes, reference parameter counts, gradients, and the numerics of the TGAP and BERT heads."""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import asdict

import pytest
import torch
import torchvision
from torch.nn import functional as F

from actionbert import build_model, list_models
from actionbert.models import BACKBONES, HEADS, BertHead, ReferenceNorm, count_parameters, num_tokens
from actionbert.models.backbones import halve

TINY = [name for name in BACKBONES if name.endswith("_tiny")]
K = 7  # a non-default class count


def tiny_combos():
    for bb in TINY:
        for head in HEADS:
            yield bb, head, None
    for reduction in ("frab", "frmb"):
        for head in HEADS:
            yield "resnext_tiny", head, reduction


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("clip_len", [8, 16, 32])
def test_backbone_feature_shape_matches_spec(name, clip_len):
    spec = BACKBONES[name]
    with torch.device("meta"):  # shapes only: no memory, no compute
        net = spec.build()
        out = net(torch.empty(2, 3, clip_len, 112, 112))
    assert tuple(out.shape) == (2, net.out_channels, num_tokens(name, clip_len), halve(112, spec.space_halvings),
                                halve(112, spec.space_halvings))


@pytest.mark.parametrize(("kw", "shape"), [
    (dict(backbone="r2plus1d_34", head="bert", clip_len=32), (1, 512, 4, 7, 7)),
    (dict(backbone="resnext101_3d", head="tgap", clip_len=64), (1, 2048, 4, 4, 4)),
    (dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frab"), (1, 512, 4, 4, 4)),
    (dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frmb"), (1, 512, 4, 4, 4)),
])
def test_reference_feature_shapes(kw, shape):
    with torch.device("meta"):
        model = build_model(num_classes=51, **kw)
        x = torch.empty(1, 3, kw["clip_len"], 112, 112)
        assert tuple(model.forward_features(x).shape) == shape
        assert tuple(model(x).shape) == (1, 51)


@pytest.mark.parametrize(("kw", "expected"), [
    (dict(backbone="r2plus1d_34", head="bert", clip_len=32), 66_673_594),
    (dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frab"), 52_465_139),
    (dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frmb"), 47_377_907),
])
def test_reference_parameter_counts(kw, expected):
    with torch.device("meta"):
        assert count_parameters(build_model(num_classes=51, **kw)) == expected


def test_bert_head_parameter_count():
    assert count_parameters(BertHead(512, 4)) == 3_155_456


def test_list_models_covers_registry_with_reference_counts():
    rows = {r["name"]: r for r in list_models(num_classes=51)}
    for name in BACKBONES:
        assert rows[name]["params"] > 0 and rows[name]["clip_len"] == BACKBONES[name].clip_len
    assert rows["bert (C=512)"]["params"] == 3_155_456
    assert rows["r2plus1d_34+bert (K=51)"]["params"] == 66_673_594
    assert rows["resnext101_3d+bert+frab (K=51)"]["params"] == 52_465_139
    assert rows["resnext101_3d+bert+frmb (K=51)"]["params"] == 47_377_907


@pytest.mark.parametrize(("bb", "head", "reduction"), list(tiny_combos()))
def test_tiny_models_output_and_every_parameter_gets_gradient(bb, head, reduction):
    model = build_model(backbone=bb, head=head, num_classes=K, clip_len=16, reduction=reduction)
    model.train()
    x = torch.randn(2, 3, 16, 64, 64)
    logits = model(x)
    assert logits.shape == (2, K) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([1, 5])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


# ------------------------------------------------------------------------------------- architecture facts
def test_r2plus1d_34_caffe2_layout():
    with torch.device("meta"):
        net = BACKBONES["r2plus1d_34"].build()
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    mids = [getattr(net, f"layer{i}")[0].conv2[0][0].out_channels for i in (2, 3, 4)]
    assert mids == [288, 576, 1152]
    assert net.layer2[0].conv1[0][0].out_channels == 230  # the rest keeps torchvision's rule (64->128: 230)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.9 for m in bns)


def test_resnext101_layout():
    with torch.device("meta"):
        net = BACKBONES["resnext101_3d"].build()
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert net.layer1[0].conv2.groups == 32 and net.layer4[0].conv2.out_channels == 1024
    assert net.stem[3].stride == 2  # max-pool also halves time
    assert net.layer1[0].downsample is not None  # shortcut B: projection where the shape changes (64 -> 256)


@pytest.mark.parametrize("name", ["r2plus1d_18", "r3d_18", "mc3_18"])
def test_torchvision_family_equals_torchvision(name):
    """Same state-dict layout as torchvision's VideoResNet (minus fc) and, with its weights, the same features."""
    reference = getattr(torchvision.models.video, name)(weights=None).eval()
    ours = BACKBONES[name].build().eval()
    theirs = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    ours.load_state_dict(theirs)
    x = torch.randn(1, 3, 8, 48, 48)
    with torch.no_grad():
        y = reference.stem(x)
        for i in range(1, 5):
            y = getattr(reference, f"layer{i}")(y)
        torch.testing.assert_close(ours(x), y, rtol=0, atol=0)


STEM_CASES = [  # (kernel, stride, padding, bias)
    ((3, 7, 7), (1, 2, 2), (1, 3, 3), False),  # R3D / MC3
    ((7, 7, 7), (1, 2, 2), (3, 3, 3), False),  # ResNeXt-101
    ((3, 5, 5), (2, 1, 2), (0, 2, 1), True),  # temporal stride, no temporal padding, bias
]


@pytest.mark.parametrize("kernel,stride,padding,bias", STEM_CASES)
def test_stem_conv_stacked_form_is_the_same_convolution(kernel, stride, padding, bias):
    from actionbert.models.backbones import StemConv3d

    torch.manual_seed(0)
    conv = StemConv3d(3, 6, kernel, stride=stride, padding=padding, bias=bias).double()
    x = torch.randn(2, 3, 9, 21, 19, dtype=torch.float64, requires_grad=True)
    stacked = conv.forward_stacked(x)
    plain = F.conv3d(x, conv.weight, conv.bias, stride=stride, padding=padding)
    torch.testing.assert_close(stacked, plain, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(plain)
    grads_stacked = torch.autograd.grad(stacked, [x, conv.weight], g)
    grads_plain = torch.autograd.grad(plain, [x, conv.weight], g)
    for a, b in zip(grads_stacked, grads_plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # a plain Conv3d's state dict loads as it is
    assert conv.state_dict().keys() == torch.nn.Conv3d(3, 6, kernel, bias=bias).state_dict().keys()


def test_stem_conv_stacks_only_for_bf16_on_a_cpu_with_amx(monkeypatch):
    from actionbert import runtime
    from actionbert.models.backbones import StemConv3d

    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "AMX")
    torch.manual_seed(0)
    conv = StemConv3d(3, 8, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
    x = torch.randn(1, 3, 6, 32, 32)
    calls = []
    original = StemConv3d.forward_stacked
    monkeypatch.setattr(StemConv3d, "forward_stacked", lambda self, t: calls.append("stacked") or original(self, t))
    with torch.no_grad():
        fp32 = conv(x)  # fp32: the plain convolution, bit for bit
        assert calls == [] and torch.equal(fp32, F.conv3d(x, conv.weight, None, stride=(1, 2, 2), padding=(1, 3, 3)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        assert calls == ["stacked"] and y.dtype == torch.bfloat16
        # one convolution: its weights, its input and its output are each rounded once to bf16 (3u of the sum of
        # the terms' magnitudes), the float32 accumulation of n = 3*3*7*7 terms adds n*u32: a worst-case bound,
        # elementwise, that holds whatever the CPU's kernel (AMX, avx512_bf16 or plain fp32 emulation)
        magnitude = F.conv3d(x.abs(), conv.weight.abs(), None, stride=(1, 2, 2), padding=(1, 3, 3))
        bound = (3 * 2.0**-8 + 3 * 3 * 7 * 7 * 2.0**-24) * magnitude
        assert ((y.float() - fp32).abs() <= bound).all()
        conv.to(torch.bfloat16)(x.to(torch.bfloat16))  # a bf16 model without autocast stacks as well
        assert len(calls) == 2
        for units in ("AVX512-BF16", None):  # no AMX tiles: the plain convolution
            monkeypatch.setattr(runtime, "cpu_bf16_units", lambda units=units: units)
            conv.to(torch.bfloat16)(x.to(torch.bfloat16))
            assert len(calls) == 2
        monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "AMX")
        spatial = StemConv3d(3, 8, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            spatial(x)  # no temporal taps to stack: plain
        assert len(calls) == 2


def test_bf16_backward_through_the_stacked_stem_equals_the_plain_one(monkeypatch):
    """Autocast training through `StemConv3d`: the same stem gradient as the plain bf16 convolution, close to
    fp32. (Eval-mode BatchNorm: with batch statistics of 2 clips a tiny random net amplifies bf16 noise.)"""
    from actionbert.models.backbones import StemConv3d

    torch.manual_seed(0)
    model = build_model(backbone="resnext_tiny", head="tgap", num_classes=5, clip_len=16, input_size=32).eval()
    x, y = torch.randn(2, 3, 16, 32, 32), torch.tensor([1, 3])
    stacked = StemConv3d._stacking_pays

    def stem_grad(precision: str, stack: bool) -> torch.Tensor:
        monkeypatch.setattr(StemConv3d, "_stacking_pays", stacked if stack else (lambda self, t: False))
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        return model.backbone.stem[0].weight.grad.flatten().clone()

    fp32, plain, stack = stem_grad("fp32", False), stem_grad("bf16", False), stem_grad("bf16", True)
    assert stack.dtype == torch.float32  # fp32 master weights get fp32 gradients
    assert F.cosine_similarity(stack, plain, dim=0) > 0.999
    assert F.cosine_similarity(stack, fp32, dim=0) > 0.95


@pytest.mark.parametrize("reduction", ["frab", "frmb"])
def test_reduction_blocks(reduction):
    with torch.device("meta"):
        model = build_model(backbone="resnext101_3d", head="bert", num_classes=51, clip_len=64, reduction=reduction)
    if reduction == "frab":
        assert len(model.backbone.layer4) == 3 and model.backbone.layer4[-1].conv3.out_channels == 2048
        block = model.reduction
    else:
        assert isinstance(model.reduction, torch.nn.Identity)
        block = model.backbone.layer4[-1]
    assert (block.conv1.in_channels, block.conv3.out_channels, block.conv2.groups) == (2048, 512, 32)
    assert block.downsample[0].in_channels == 2048 and block.downsample[0].out_channels == 512


def test_reduction_block_initialisation():
    model = build_model(backbone="resnext_tiny", head="bert", num_classes=K, clip_len=16, reduction="frab")
    bns = [m for m in model.reduction.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in bns)
    w = model.reduction.conv1.weight  # kaiming normal, fan_in as in the reference: std = sqrt(2 / fan_in)
    assert w.std().item() == pytest.approx(math.sqrt(2 / w.shape[1]), rel=0.1)


def test_reduction_needs_resnext():
    with pytest.raises(ValueError, match="ResNeXt"):
        build_model(backbone="r2plus1d_tiny", head="bert", num_classes=K, clip_len=16, reduction="frab")


# ------------------------------------------------------------------------------------------------- heads
def test_tgap_is_the_closed_form_mean():
    model = build_model(backbone="r2plus1d_tiny", head="tgap", num_classes=K, clip_len=16).eval()
    x = torch.randn(2, 3, 16, 64, 64)
    with torch.no_grad():
        f = model.forward_features(x)
        expected = f.sum(dim=(2, 3, 4)) / (f.shape[2] * f.shape[3] * f.shape[4])
        torch.testing.assert_close(model.forward_head(f, pre_logits=True), expected)
        torch.testing.assert_close(model(x), expected @ model.fc.weight.T + model.fc.bias)


def test_classifier_init():
    model = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=K, clip_len=16)
    bound = math.sqrt(6 / (model.fc.in_features + K))  # xavier-uniform
    assert model.fc.weight.abs().max() <= bound and model.fc.weight.abs().max() > 0.8 * bound
    assert not model.fc.bias.any()
    assert model.dropout.p == 0.8


def _head(**kw):
    kw = {"num_heads": 4, **kw}
    return BertHead(32, 4, clip_len=32, **kw)


def test_bert_eval_is_deterministic_and_unmasked():
    head = _head().eval()
    other = _head(mask_prob=0.9).eval()
    other.load_state_dict(head.state_dict())
    f = torch.randn(3, 32, 4, 2, 2)
    torch.manual_seed(1)
    a = head(f)
    torch.manual_seed(2)
    assert torch.equal(a, head(f))
    assert torch.equal(a, other(f))  # the mask probability plays no part in eval
    assert torch.equal(a, head(f, keep_mask=torch.ones(3, 4, dtype=torch.bool)))


def test_bert_training_masking_rate_and_cls_never_masked():
    head = _head(attn_dropout=0.0, dropout=0.0).train()
    f = torch.randn(5000, 32, 4, 1, 1)
    with torch.no_grad():
        _, attn = head(f, return_attention=True)  # (B, heads, 1 + T')
    masked = attn == 0  # masked keys get exactly zero probability (exp(-1e9) underflows)
    assert (masked.all(dim=1) == masked.any(dim=1)).all()  # one mask per sample, shared by all heads
    assert not masked[:, :, 0].any()  # CLS is never masked
    rate = masked[:, 0, 1:].float().mean().item()
    assert rate == pytest.approx(0.2, abs=0.02)


def test_masked_tokens_cannot_change_cls():
    head = _head().eval()
    f = torch.randn(2, 32, 4, 2, 2)
    keep = torch.tensor([[True, False, True, False], [False, True, True, True]])
    base = head(f, keep_mask=keep)
    g = f.clone()
    g[0, :, 1] += 100 * torch.randn_like(g[0, :, 1])  # masked in sample 0
    g[1, :, 0] -= 50.0  # masked in sample 1
    assert torch.equal(head(g, keep_mask=keep), base)  # bit-identical
    g[0, :, 2] += 1.0  # a kept token does matter
    assert not torch.allclose(head(g, keep_mask=keep)[0], base[0])


def test_masked_tokens_in_training_mode_via_sampled_mask():
    head = _head(attn_dropout=0.0, dropout=0.0).train()
    f = torch.randn(64, 32, 4, 1, 1)
    torch.manual_seed(3)
    keep = head.sample_keep_mask(64, "cpu")
    torch.manual_seed(3)
    base = head(f)
    g = f + 10.0 * (~keep[:, 1:]).float()[:, None, :, None, None]  # perturb every masked token
    assert not torch.equal(g, f)
    torch.manual_seed(3)
    assert torch.equal(head(g), base)


def test_reference_norm_formula():
    norm = ReferenceNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.normal_()
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    a, b = norm.weight.double(), norm.bias.double()
    mean = x.sum(-1, keepdim=True) / 16
    std = ((x - mean).pow(2).sum(-1, keepdim=True) / 15).sqrt()  # unbiased
    expected = a * (x - mean) / (std + 1e-6) + b
    torch.testing.assert_close(norm.double()(x), expected)
    ln = torch.nn.LayerNorm(16, dtype=torch.float64)
    assert not torch.allclose(ln(x), ReferenceNorm(16).double()(x), atol=1e-3)  # they really differ


def test_bert_head_matches_the_method_formulas():
    """An independent, functional transcription of METHOD.md §3 gives the same CLS vector."""
    C, T, h = 32, 4, 4
    head = _head().eval()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.3)
    f = torch.randn(2, C, T, 3, 3, dtype=torch.float64)
    keep = torch.tensor([[True, True, False, True], [True, True, True, True]])
    P = {k: v.double() for k, v in head.state_dict().items()}

    def norm(x, a, b):
        return a * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6) + b

    def lin(x, name):
        return x @ P[name + ".weight"].T + P[name + ".bias"]

    x = torch.cat([P["cls_token"].expand(2, 1, C), f.mean((3, 4)).transpose(1, 2)], 1) + P["pos_embed"]
    blk = "blocks.0."
    y = norm(x, P[blk + "norm1.weight"], P[blk + "norm1.bias"])
    q, k, v = (lin(y, blk + f"attn.{n}").view(2, T + 1, h, C // h).transpose(1, 2) for n in "qkv")
    s = q @ k.transpose(-1, -2) / math.sqrt(C // h)
    mask = torch.cat([torch.ones(2, 1, dtype=torch.bool), keep], 1)
    s = s.masked_fill(~mask[:, None, None, :], -1e9)
    a = (s.softmax(-1) @ v).transpose(1, 2).reshape(2, T + 1, C)
    x = x + lin(a, blk + "attn.proj")
    y = norm(x, P[blk + "norm2.weight"], P[blk + "norm2.bias"])
    hdn = lin(y, blk + "mlp.fc1")
    gelu = 0.5 * hdn * (1 + torch.tanh(math.sqrt(2 / math.pi) * (hdn + 0.044715 * hdn**3)))
    x = x + lin(gelu, blk + "mlp.fc2")
    torch.testing.assert_close(head.double()(f, keep_mask=keep), x[:, 0])


def test_bert_init_and_defaults():
    head = BertHead(512, 4)
    assert head.cls_token.shape == (1, 1, 512) and head.pos_embed.shape == (1, 5, 512)
    assert head.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)
    blk = head.blocks[0]
    assert len(head.blocks) == 1 and blk.attn.num_heads == 8 and blk.mlp.fc1.out_features == 2048
    assert head.mask_prob == 0.2 and blk.attn.attn_drop.p == 0.1 and blk.drop.p == 0.1


def test_bert_options():
    model = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=K, clip_len=16, width=64, num_layers=2,
                        num_heads=2, mask_prob=0.5, norm="layernorm")
    assert model.head.out_dim == 64 and len(model.head.blocks) == 2 and model.head.mask_prob == 0.5
    assert isinstance(model.head.blocks[0].norm1, torch.nn.LayerNorm)
    assert model(torch.randn(1, 3, 16, 32, 32)).shape == (1, K)


def test_wrong_clip_length_names_the_fitting_one():
    model = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=K, clip_len=32).eval()
    with pytest.raises(ValueError, match=r"clips of 32 frames give 4.*have 2"):
        model(torch.randn(1, 3, 16, 32, 32))


def test_attention_weights_for_visualisation():
    model = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=K, clip_len=32).eval()
    x = torch.randn(2, 3, 32, 32, 32)
    logits, attn = model.forward_with_attention(x)
    assert logits.shape == (2, K) and attn.shape == (2, 8, 5)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 8))
    torch.testing.assert_close(logits, model(x))
    _, none = build_model(backbone="r2plus1d_tiny", head="tgap", num_classes=K, clip_len=32).forward_with_attention(
        torch.randn(1, 3, 32, 32, 32))
    assert none is None


# ----------------------------------------------------------------------------------------- config / API
@pytest.mark.parametrize(("bb", "head", "reduction"), list(tiny_combos()))
def test_config_round_trip(bb, head, reduction):
    model = build_model(backbone=bb, head=head, num_classes=K, clip_len=16, reduction=reduction)
    config = json.loads(json.dumps(asdict(model.config)))  # JSON-able, as stored in checkpoints
    rebuilt = build_model(**config)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_reset_classifier():
    model = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=K, clip_len=16)
    model.reset_classifier(13)
    assert model.config.num_classes == 13 and model(torch.randn(1, 3, 16, 32, 32)).shape == (1, 13)
    assert build_model(**asdict(model.config)).fc.out_features == 13


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        build_model(backbone="nope", head="bert", num_classes=K, clip_len=16)
    with pytest.raises(ValueError, match="unknown head"):
        build_model(backbone="r2plus1d_tiny", head="lstm", num_classes=K, clip_len=16)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        build_model(backbone="r2plus1d_tiny", head="tgap", num_classes=K, clip_len=16)(torch.randn(3, 16, 32, 32))


def test_no_hard_coded_cuda():
    src = pathlib.Path(__file__).resolve().parents[1] / "actionbert"
    offenders = [str(p) for p in src.rglob("*.py") if ".cuda(" in p.read_text()]
    assert not offenders
