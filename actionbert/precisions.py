"""Numeric precisions by name: the one list (no torch import, so `actionbert --help` stays fast).

fp32: float32 throughout. bf16 / fp16: autocast around float32 weights (fp16 with a gradient scaler; CUDA only).
fp64: float64 weights and activations, training only: many times slower, for exactness checks whose verdict must
not depend on the CPU's kernels or reduction order (the DDP equivalence test).
"""

INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16")
TRAIN_PRECISIONS = INFERENCE_PRECISIONS + ("fp64",)
