"""Relative-L2 error bounds of FP8 attention against fp64 exact attention, per input kind.

Why these numbers: e4m3 keeps 3 mantissa bits (unit roundoff 2**-4), so each quantized operand
(Q, K, V, P) carries ~2-4% relative error; together they give ~5% on gaussian inputs (FA3's FP8
measures 0.053). Measured on the reference backend over many seeds (accel.testing inputs,
D=128, a few hundred tokens): gaussian 0.051-0.054 (0.071 at D=64, 512 keys, scale 0.2), offset_k with smooth_k 0.051-0.055 (0.17
without), peaked 0.026-0.027 (the dominant P is exactly 1), outliers 0.12-0.134 per head and
0.095-0.108 per token, all combined 0.027-0.033. Each bound sits ~30% above the worst seen, so
a real regression (a lost scale, a wrong smoothing, a block-boundary bug: all push errors to
>0.2 or to NaN) fails while seed noise does not. The GPU kernels track the reference within ~1%.
"""

BOUNDS = {
    ("gaussian", "head"): 0.085, ("gaussian", "token"): 0.085,
    ("offset_k", "head"): 0.07, ("offset_k", "token"): 0.07,
    ("peaked", "head"): 0.036, ("peaked", "token"): 0.036,
    ("outliers", "head"): 0.18, ("outliers", "token"): 0.14,
    ("activation", "head"): 0.045, ("activation", "token"): 0.045,
}
