"""Numeric precisions by name: the one list (no torch import, so `actionbert --help` stays fast).

fp32: float32 throughout. bf16 / fp16: autocast around float32 weights (fp16 with a gradient scaler; CUDA only).
auto: the device's fast precision (`actionbert.runtime.resolve_precision`'s table: bf16 on CPUs with bf16
instructions and on CUDA >= 8.0, fp16 on CUDA 7.x, else fp32).
fp64: float64 weights and activations, training only: many times slower, for exactness checks whose verdict must
not depend on the CPU's kernels or reduction order (the DDP equivalence test).
"""

INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16")  # what a model runs in
PREDICT_CHOICES = ("auto",) + INFERENCE_PRECISIONS  # what eval/predict accept: auto = the device's fast one
TRAIN_PRECISIONS = PREDICT_CHOICES + ("fp64",)
