"""Small Triton helpers shared by the kernels, and the host-side integer math of their launchers."""

from __future__ import annotations

import triton
import triton.language as tl


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for launch grids: plain Python, since ``triton.cdiv`` goes through Triton's
    constexpr-function machinery (~3 us a call on the host, several calls per attention call)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (n >= 1), in plain Python for the same reason."""
    return 1 << (n - 1).bit_length()


@triton.jit
def round_mantissa(x, MANTISSA_BITS: tl.constexpr, MIN_NORMAL_EXP: tl.constexpr):
    """Round fp32 ``x`` to the nearest value with MANTISSA_BITS stored mantissa bits (ties to
    even), staying in fp32; below 2**MIN_NORMAL_EXP the spacing stays fixed, as in subnormals.

    Hardware casts already round like this. The Triton interpreter's fp32 -> fp8/bf16/fp16 casts
    do not (a mantissa carry does not bump the exponent: 125.9 -> 64 in e4m3), so under the
    interpreter the kernels round first with this exact fp32 trick and the cast after is exact:
    adding and removing 1.5 * 2**23 * ulp makes the fp32 adder round to a multiple of ulp.
    """
    bits = x.to(tl.int32, bitcast=True)
    exponent = tl.maximum((bits >> 23) & 0xFF, MIN_NORMAL_EXP + 127)
    ulp = ((exponent - MANTISSA_BITS) << 23).to(tl.float32, bitcast=True)
    magic = ulp * 12582912.0  # 1.5 * 2**23
    return (x + magic) - magic


@triton.jit
def cast_e4m3(x, EMULATE_CAST: tl.constexpr):
    """Round-to-nearest-even cast of fp32 ``x``, already within +-448, to float8_e4m3fn."""
    if EMULATE_CAST:
        x = round_mantissa(x, 3, -6)
    return x.to(tl.float8e4nv)


@triton.jit
def to_e4m3(x, EMULATE_CAST: tl.constexpr):
    """Saturating round-to-nearest-even cast of fp32 ``x`` to float8_e4m3fn."""
    return cast_e4m3(tl.clamp(x, -448.0, 448.0), EMULATE_CAST)


@triton.jit
def to_half(x, OUT_BF16: tl.constexpr, EMULATE_CAST: tl.constexpr):
    """Round-to-nearest-even cast of fp32 ``x`` to bfloat16 (OUT_BF16) or float16."""
    if OUT_BF16:
        if EMULATE_CAST:  # -119 keeps ulp a normal fp32 (bf16 values under 2**-119: ~exact)
            x = round_mantissa(x, 7, -119)
        return x.to(tl.bfloat16)
    else:
        if EMULATE_CAST:
            x = round_mantissa(x, 10, -14)
        return x.to(tl.float16)
