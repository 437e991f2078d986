"""bf16 is used where the device runs it natively; elsewhere the choice is fp32, said once."""

from __future__ import annotations

import torch

from actionbert import runtime
from actionbert.demo import DemoConfig, _resolve_precision

CPU = torch.device("cpu")


def test_cpu_bf16_units_follow_the_instruction_sets(monkeypatch):
    for amx, avx, want in [(True, True, "AMX"), (False, True, "AVX512-BF16"), (False, False, None)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda avx=avx: avx)
        assert runtime.cpu_bf16_units() == want
        assert (runtime.bf16_is_slow(CPU) is None) == (want is not None)


def test_demo_auto_precision_says_what_it_chose(monkeypatch):
    said = []
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: None)
    monkeypatch.setattr(runtime, "select_device", lambda name="auto", **kw: CPU)
    assert _resolve_precision(DemoConfig(), said.append).precision == "fp32"
    assert len(said) == 1 and "no bf16 instructions" in said[0]
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "AMX")
    assert _resolve_precision(DemoConfig(), said.append).precision == "bf16" and len(said) == 2
    assert _resolve_precision(DemoConfig(precision="fp32"), said.append).precision == "fp32" and len(said) == 2
