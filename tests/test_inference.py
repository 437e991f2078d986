"""The inference fast path: BatchNorm folding is exact, the original model is untouched, compile falls back.

Everything here runs eagerly on tiny models except `test_compiled_equals_eager` (marked slow: Inductor needs
tens of seconds to compile even a tiny model on a cold cache); the compile *policy* and the fallbacks are
tested with a stand-in for `torch.compile`.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tolerances import autocast_bound, rel_to_max, reorder_bound

from actionbert.inference import InferenceModel, find_conv_bn_pairs, fold_batchnorm, prepare_for_inference
from actionbert.models import build_model

K = 7  # a non-default class count
CLIP = (2, 3, 16, 32, 32)  # (B, 3, T, H, W): small enough for milliseconds per forward

TINY_COMBOS = [
    dict(backbone="r2plus1d_tiny", head="bert"),
    dict(backbone="r2plus1d_tiny", head="tgap"),
    dict(backbone="r3d_tiny", head="bert"),
    dict(backbone="mc3_tiny", head="tgap"),
    dict(backbone="resnext_tiny", head="bert", reduction="frab"),
    dict(backbone="resnext_tiny", head="bert", reduction="frmb"),
    dict(backbone="resnext_tiny", head="bert", head_options=dict(norm="layernorm", num_layers=2)),
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _trained_like(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, as after training (fresh BNs are identity
    maps in eval mode, which would let a wrong folding pass unnoticed)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _tiny(**kw) -> nn.Module:
    return _trained_like(build_model(num_classes=K, clip_len=CLIP[2], **kw))


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# ---------------------------------------------------------------------------------------------- folding
@pytest.mark.parametrize("kw", TINY_COMBOS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_prepared_equals_eager_and_has_no_batchnorm(kw):
    model = _tiny(**kw)
    x = torch.randn(*CLIP)
    with torch.no_grad():
        ref_logits, ref_attention = model.forward_with_attention(x)
    prepared = prepare_for_inference(model, compile=False)
    logits, attention = prepared.forward_with_attention(x)
    bound = reorder_bound(model)  # folding and channels-last change the summation order, not the maths
    assert rel_to_max(logits, ref_logits) < bound
    assert rel_to_max(prepared(x), ref_logits) < bound
    assert (attention is None) == (ref_attention is None)
    if attention is not None:
        assert attention.shape == ref_attention.shape
        assert rel_to_max(attention, ref_attention) < bound
    assert _count_bn(prepared) == 0, prepared.report.unfolded_bn
    assert len(prepared.report.folded_bn) == _count_bn(model)


def test_original_model_is_untouched():
    model = _tiny(backbone="resnext_tiny", head="bert", reduction="frab").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = _count_bn(model)
    prepared = prepare_for_inference(model, compile=False)
    prepared(torch.randn(*CLIP))
    assert model.training and _count_bn(model) == n_bn
    assert all(p.requires_grad for p in model.parameters())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.data_ptr() == q.data_ptr() for p in model.parameters() for q in prepared.parameters())


def test_fold_keeps_batchnorm_whose_convolution_feeds_something_else():
    class Tap(nn.Module):  # the conv output is used twice: folding the BN would change the skip branch
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm3d(4)
            self.conv2 = nn.Conv3d(4, 4, 1)
            self.bn2 = nn.BatchNorm3d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn2(self.conv2(self.bn(y))) + y

    model = _trained_like(Tap())
    assert find_conv_bn_pairs(model) == [("conv2", "bn2")]
    folded, names = fold_batchnorm(model)
    assert names == ["bn2"] and isinstance(folded.bn, nn.BatchNorm3d) and isinstance(folded.bn2, nn.Identity)
    x = torch.randn(2, 3, 4, 8, 8)
    with torch.no_grad():
        assert rel_to_max(folded(x), model(x)) < reorder_bound(model)


def test_fold_searches_inside_untraceable_modules():
    # VideoClassifier.forward_features checks the input's shape in Python, so fx cannot trace the classifier;
    # the BNs inside its backbone must still be found
    model = _tiny(backbone="r2plus1d_tiny", head="bert")
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(model)
    pairs = find_conv_bn_pairs(model)
    assert len(pairs) == _count_bn(model)
    assert all(conv.startswith("backbone.") and bn.startswith("backbone.") for conv, bn in pairs)


def test_fold_without_fold_bn_keeps_batchnorm():
    model = _tiny(backbone="r2plus1d_tiny", head="tgap")
    prepared = prepare_for_inference(model, compile=False, fold_bn=False, channels_last=False)
    assert _count_bn(prepared) == _count_bn(model) and not prepared.report.folded_bn
    x = torch.randn(*CLIP)
    with torch.no_grad():
        assert rel_to_max(prepared(x), model(x)) < reorder_bound(model)


# -------------------------------------------------------------------------------------------- interface
def test_interface_matches_the_classifier():
    model = _tiny(backbone="r2plus1d_tiny", head="bert")
    prepared = prepare_for_inference(model, compile=False)
    assert isinstance(prepared, InferenceModel)
    assert prepared.config == model.config and prepared.num_classes == K
    assert prepared.to("cpu").eval() is prepared  # what the Predictor does with a model
    with pytest.raises(RuntimeError, match="inference"):
        prepared.train()
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        prepared(torch.randn(3, 16, 32, 32))
    with pytest.raises(ValueError, match="temporal tokens"):  # the model's own error comes through
        prepared(torch.randn(1, 3, 64, 32, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast does not leak into fp32
        logits = prepared(torch.randn(*CLIP))
    assert logits.dtype == torch.float32 and logits.shape == (CLIP[0], K)
    # weights live once: the compiled wrapper is not a second submodule
    assert len(prepared.state_dict()) == len(fold_batchnorm(model)[0].state_dict())


@pytest.mark.parametrize(("kw", "err"), [
    (dict(precision="fp64"), "precision"),
    (dict(precision="fp16", device="cpu"), "CUDA"),
    (dict(compile="yes"), "compile"),
])
def test_bad_arguments_raise(kw, err):
    with pytest.raises(ValueError, match=err):
        prepare_for_inference(_tiny(backbone="r2plus1d_tiny", head="tgap"), **kw)


@pytest.mark.parametrize("backbone", ["r2plus1d_tiny", "resnext_tiny"])  # resnext: the stacked bf16 stem
def test_bf16_agrees_with_fp32_on_top1(backbone):
    model = _tiny(backbone=backbone, head="bert")
    x = torch.randn(64, *CLIP[1:])
    fp32 = prepare_for_inference(model, compile=False)(x)
    bf16 = prepare_for_inference(model, compile=False, precision="bf16")(x)
    assert bf16.dtype == torch.float32
    bound = autocast_bound(model)  # rounding of weights and activations to bf16: the same on every CPU
    assert rel_to_max(bf16, fp32) < bound
    top2 = fp32.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * bound * fp32.abs().max()  # a decision the bound cannot flip
    assert clear.any(), "test clips too ambiguous to check top-1"
    assert torch.equal(bf16.argmax(1)[clear], fp32.argmax(1)[clear])


# ------------------------------------------------------------------------------------------------ compile
class FakeCompiled:
    """Stands in for `torch.compile(module, ...)`: counts calls and can fail on call."""

    def __init__(self, module, fail: bool = False):
        self.module, self.fail, self.calls = module, fail, 0

    def __call__(self, x):
        import torch._inductor.config as inductor_config

        assert inductor_config.freezing, "compiled calls must run with Inductor's weight freezing on"
        self.calls += 1
        self.inference_inputs = getattr(self, "inference_inputs", []) + [x.is_inference()]
        if self.fail:
            raise RuntimeError("InductorError: no working C++ compiler")
        return self.module(x)


def _patch_compile(monkeypatch, *, fail_on_call: bool = False) -> list[FakeCompiled]:
    made: list[FakeCompiled] = []

    def fake_compile(module, **kwargs):
        made.append(FakeCompiled(module, fail_on_call))
        return made[-1]

    monkeypatch.setattr("actionbert.inference.compile_unavailable_reason", lambda device: None)
    monkeypatch.setattr(torch, "compile", fake_compile)
    return made


def test_falls_back_when_torch_compile_raises(monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported here")

    monkeypatch.setattr("actionbert.inference.compile_unavailable_reason", lambda device: None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    model = _tiny(backbone="r2plus1d_tiny", head="bert")
    with pytest.warns(RuntimeWarning, match="eagerly"):
        prepared = prepare_for_inference(model, compile=True)
    assert "Dynamo is not supported here" in prepared.report.compile_error and not prepared.report.compiled
    x = torch.randn(*CLIP)
    with torch.no_grad():
        assert rel_to_max(prepared(x), model(x)) < reorder_bound(model)


def test_falls_back_when_compiled_call_fails(monkeypatch):
    made = _patch_compile(monkeypatch, fail_on_call=True)
    model = _tiny(backbone="r2plus1d_tiny", head="tgap")
    prepared = prepare_for_inference(model, compile=True)
    x = torch.randn(*CLIP)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ compiler"):
        out = prepared(x)
    with torch.no_grad():
        assert rel_to_max(out, model(x)) < reorder_bound(model)
    assert "no working C++ compiler" in prepared.report.compile_error
    prepared(x)  # later calls go straight to eager
    assert made[0].calls == 1 and not prepared.report.compiled


def test_compile_unavailable_is_recorded(monkeypatch):
    monkeypatch.setattr("actionbert.inference.compile_unavailable_reason", lambda device: "no C++ compiler")
    prepared = prepare_for_inference(_tiny(backbone="r2plus1d_tiny", head="tgap"), compile="auto")
    prepared(torch.randn(*CLIP))
    assert prepared.report.compile_error == "no C++ compiler" and "no C++ compiler" in prepared.report.summary()


def test_auto_compiles_heavy_shapes_on_second_call_only(monkeypatch):
    made = _patch_compile(monkeypatch)
    model = _tiny(backbone="r2plus1d_tiny", head="tgap")
    heavy = prepare_for_inference(model, compile="auto", compile_min_seconds=0.0)
    x = torch.randn(*CLIP)
    heavy(x)  # first sight of the shape: eager, timed
    assert made[-1].calls == 0 and tuple(x.shape) in heavy.report.eager_shapes
    heavy(x)
    heavy(x)
    assert made[-1].calls == 2 and list(heavy.report.compiled_shapes) == [tuple(x.shape)]
    heavy(x[:1])  # a new shape starts eager again
    assert made[-1].calls == 2
    light = prepare_for_inference(model, compile="auto", compile_min_seconds=math.inf)
    for _ in range(3):
        light(x)
    assert made[-1].calls == 0 and not light.report.compiled


def test_compile_true_compiles_every_shape_up_to_the_limit(monkeypatch):
    made = _patch_compile(monkeypatch)
    prepared = prepare_for_inference(_tiny(backbone="r2plus1d_tiny", head="tgap"), compile=True)
    prepared.max_compiled_shapes = 2
    for b in (1, 2, 3, 3):
        prepared(torch.randn(b, *CLIP[1:]))
    assert made[0].calls == 2 and list(prepared.report.compiled_shapes) == [(1, *CLIP[1:]), (2, *CLIP[1:])]


def test_the_compiled_model_only_ever_sees_inference_tensors(monkeypatch):
    """Dynamo guards on a tensor's inference flag: inputs made outside inference mode that need no layout copy
    (a channels-last batch), made inside it, or fresh, all reach the compiled function as inference tensors."""
    made = _patch_compile(monkeypatch)
    prepared = prepare_for_inference(_tiny(backbone="r2plus1d_tiny", head="tgap"), compile=True)
    outside = torch.randn(*CLIP).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        inside = torch.randn(*CLIP).contiguous(memory_format=torch.channels_last_3d)
    for x in (inside, outside, torch.randn(*CLIP), outside):
        prepared(x)
    assert made[0].inference_inputs == [True] * 4


def test_compile_false_never_calls_torch_compile(monkeypatch):
    made = _patch_compile(monkeypatch)
    prepared = prepare_for_inference(_tiny(backbone="r2plus1d_tiny", head="tgap"), compile=False)
    prepared(torch.randn(*CLIP))
    assert not made and prepared.report.summary().endswith("eager (compile off)")


@pytest.mark.slow
def test_compiled_equals_eager():
    model = _trained_like(build_model(num_classes=K, clip_len=8, backbone="r2plus1d_tiny", head="bert"))
    prepared = prepare_for_inference(model, compile=True)
    if prepared.report.compile_error:
        pytest.skip(prepared.report.compile_error)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        ref_logits, ref_attention = model.forward_with_attention(x)
    logits, attention = prepared.forward_with_attention(x)
    assert prepared.report.compiled, prepared.report.summary()
    bound = reorder_bound(model)  # Inductor fuses and reorders; the maths is the same
    assert rel_to_max(logits, ref_logits) < bound and rel_to_max(attention, ref_attention) < bound


# ------------------------------------------------------------------------------------------ predictor
def test_predictor_runs_a_prepared_model(tmp_path):
    """The Predictor accepts an InferenceModel in place of the classifier and gives the same timeline."""
    import numpy as np

    from actionbert.data.synthetic import write_video
    from actionbert.predict import Predictor

    model = _tiny(backbone="r2plus1d_tiny", head="bert")
    info = {"classes": [f"c{k}" for k in range(K)], "clip_len": CLIP[2], "frame_stride": 1, "input_size": 32,
            "resize": [36, 48], "keep_aspect": False, "norm": "torchvision"}
    pixels = np.random.default_rng(0).integers(0, 255, (40, 48, 64, 3), dtype=np.uint8)
    video = write_video(tmp_path / "v.mp4", pixels, fps=10)
    eager = Predictor(model, info, hop=8).predict(video, topk=3)
    fast = Predictor(prepare_for_inference(model, compile=False), info, hop=8).predict(video, topk=3)
    assert eager.error is None and fast.error is None and len(fast.segments) == len(eager.segments) > 1
    assert [lab for lab, _ in fast.topk] == [lab for lab, _ in eager.topk]
    for (_, p), (_, q) in zip(fast.topk, eager.topk, strict=True):
        assert p == pytest.approx(q, abs=1e-4)
    for a, b in zip(fast.segments, eager.segments, strict=True):
        assert a["attention"] == pytest.approx(b["attention"], abs=1e-3)


# ------------------------------------------------------------------------------ runtime.keep_freed_memory
_FAULTS_SCRIPT = """
import resource, sys
import torch
from actionbert.runtime import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else "default malloc", file=sys.stderr)
counts = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)  # 64 MiB, written once
    del x
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(counts[1:]))  # page faults of a repeated 64 MiB allocation (the first one may grow the heap)
"""


def _repeat_alloc_faults(mode: str, **env: str) -> tuple[int, str]:
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}, timeout=120)
    return int(out.stdout.strip()), out.stderr.strip()


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc malloc and ru_minflt: Linux")
def test_keep_freed_memory_stops_page_faults_of_repeated_allocations():
    # Without it, glibc maps every 64 MiB block anew: one page fault per 4 KiB page (16384), on every call
    # (per 2 MiB page, 32, where the kernel backs every mapping with transparent huge pages).
    from pathlib import Path

    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    fresh_pages = 32 if thp.is_file() and "[always]" in thp.read_text() else 16384
    default, _ = _repeat_alloc_faults("default")
    kept, said = _repeat_alloc_faults("keep")
    assert said == "glibc malloc keeps freed memory (no mmap, no trim)"
    assert default >= fresh_pages // 2, default
    assert kept < min(500, fresh_pages // 4), kept
    # the opt-out leaves malloc alone
    opted_out, said = _repeat_alloc_faults("keep", ACTIONBERT_KEEP_FREED_MEMORY="0")
    assert said == "unchanged: ACTIONBERT_KEEP_FREED_MEMORY=0"
    assert opted_out >= fresh_pages // 2, opted_out
