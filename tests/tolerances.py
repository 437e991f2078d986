"""Tolerances derived from the dtype and the length of the reductions, so a verdict does not depend on the CPU.

u is the unit roundoff (half an ulp at 1.0). Two ways a result can legitimately differ:

* Reordering (BatchNorm folded into the convolution, channels-last, compiled, exported, another CPU's kernels):
  the same maths summed in another order. A dot product of n terms errs by at most n*u of the sum of the terms'
  magnitudes in the worst case, and by about sqrt(n)*u in practice (rounding errors behave like independent
  random variables: Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §2.8 and §3.1); the
  relative errors of L layers add up as a random walk, sqrt(L). We allow C_SIGMA = 4 times that.
* Autocast to bf16/fp16: every layer rounds its weight and its output once each (2u; its input is the previous
  layer's rounded output, the clip's rounding is the first layer's), and these roundings happen on the operands
  before any kernel runs (the products are accumulated in float32), so they are the same on every CPU; over L
  layers: C_SIGMA * 2u * sqrt(L) of the output's scale.

Errors are measured relative to the largest magnitude of the reference (`rel_to_max`), the scale on which a
classifier's decision is read.
"""

from __future__ import annotations

import math

import torch
from torch import nn

UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8,
                 torch.float16: 2.0**-11}
C_SIGMA = 4.0


def layers(model: nn.Module) -> int:
    """Convolutions and linear maps in the model: an upper bound of the layers any output passes through."""
    return sum(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in model.modules())


def longest_reduction(model: nn.Module) -> int:
    """The longest dot product of the model's layers (a convolution's in_channels/groups x kernel volume)."""
    n = 1
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            n = max(n, m.in_channels // m.groups * math.prod(m.kernel_size))
        elif isinstance(m, nn.Linear):
            n = max(n, m.in_features)
    return n


def reorder_bound(model: nn.Module, dtype: torch.dtype = torch.float32) -> float:
    """Relative-to-max tolerance between two evaluation orders of the same maths in `dtype`."""
    return C_SIGMA * math.sqrt(layers(model) * longest_reduction(model)) * UNIT_ROUNDOFF[dtype]


def autocast_bound(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> float:
    """Relative-to-max tolerance between an autocast run in `dtype` and the float32 run."""
    return C_SIGMA * 2 * math.sqrt(layers(model)) * UNIT_ROUNDOFF[dtype]


def rel_to_max(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())
