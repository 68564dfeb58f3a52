"""Fused FP8 quantization of attention inputs: statistics, smoothing, scaling and the e4m3 cast.

One call turns a bf16/fp16 (B, H, S, D) view (any strides, so diffusers' (B, S, H, D) tensors are
read in place) into a contiguous e4m3 copy in the layout the attention kernel wants, plus fp32
descale factors:

* ``"token"``: one scale per (batch, head, token), computed inside the cast kernel from the row
  it already holds in registers: one read of the input, one write of the FP8 copy.
* ``"head"`` / ``"channel"``: one scale per (batch, head) or per (batch, head, channel). The cast
  needs the amax of the whole head first, so a statistics pass (per-channel sum, max and min in
  one read) runs before the cast pass. The same statistics give the channel mean for smoothing
  and, because max|x - mean| = max(max - mean, mean - min) per channel, the amax of the smoothed
  tensor without another read.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_utils import to_e4m3
from .configs import interpreting
from .numerics import AMAX_EPS, E4M3_MAX

_AMAX_EPS = tl.constexpr(AMAX_EPS)  # Triton kernels read globals only as constexpr
_E4M3_MAX = tl.constexpr(E4M3_MAX)

GRANULARITIES = ("head", "token", "channel")
_STATS_TOKENS = 256  # tokens per program of the statistics pass
_STATS_BLOCK = 32  # tokens per load of the statistics pass
_BLOCK_S = 64  # tokens per program of the cast pass
#: The attention kernel reads V transposed (an FP8 wgmma wants its B operand K-major); its token
#: axis is padded to this multiple so that every row starts 16-byte aligned.
V_TOKEN_ALIGN = 16


@triton.jit
def _channel_stats_kernel(
    x_ptr, stats_ptr,
    S, H, stride_b, stride_h, stride_s, stride_d,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, TOKENS: tl.constexpr,
):
    """Per (batch*head, chunk of TOKENS tokens): channel sum, max and min -> stats[bh, chunk, 3, BLOCK_D]."""
    pid_bh = tl.program_id(0)
    pid_chunk = tl.program_id(1)
    n_chunks = tl.num_programs(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    base = x_ptr + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
    # Element-wise accumulators, reduced across tokens once at the end: a cross-thread
    # reduction per loaded tile made this pass 3x slower than a copy.
    total = tl.zeros([BLOCK_S, BLOCK_D], tl.float32)
    hi = tl.full([BLOCK_S, BLOCK_D], float("-inf"), tl.float32)
    lo = tl.full([BLOCK_S, BLOCK_D], float("inf"), tl.float32)
    for i in tl.static_range(TOKENS // BLOCK_S):  # unrolled: all loads can be in flight at once
        offs_s = pid_chunk * TOKENS + i * BLOCK_S + tl.arange(0, BLOCK_S)
        ok = (offs_s[:, None] < S) & d_ok[None, :]
        x = tl.load(base + offs_s[:, None].to(tl.int64) * stride_s + offs_d[None, :] * stride_d,
                    mask=ok, other=0.0).to(tl.float32)
        total += x
        hi = tl.maximum(hi, tl.where(ok, x, float("-inf")))
        lo = tl.minimum(lo, tl.where(ok, x, float("inf")))
    total = tl.sum(total, 0)
    hi = tl.max(hi, 0)
    lo = tl.min(lo, 0)
    out = stats_ptr + (pid_bh * n_chunks + pid_chunk).to(tl.int64) * (3 * BLOCK_D) + offs_d
    tl.store(out, total)
    tl.store(out + BLOCK_D, hi)
    tl.store(out + 2 * BLOCK_D, lo)


@triton.jit
def _scales(amax):
    """(scale, descale) from amax, exactly as numerics.scale_from_amax / descale_from_amax."""
    big = amax > _AMAX_EPS  # False for NaN too
    scale = tl.where(big, tl.math.div_rn(tl.zeros_like(amax) + _E4M3_MAX, amax), 1.0)
    descale = tl.where(big, tl.math.div_rn(amax, tl.zeros_like(amax) + _E4M3_MAX), 1.0)
    descale = tl.where(tl.abs(amax) < float("inf"), descale, float("nan"))
    return scale, descale


@triton.jit
def _finalize_stats_kernel(
    stats_ptr, mean_ptr, scale_ptr, descale_ptr, n_chunks, S,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
    SMOOTH: tl.constexpr, PER_CHANNEL: tl.constexpr,
):
    """Per (batch*head): reduce the chunk statistics to the channel mean (if SMOOTH) and the
    scale/descale of the whole head, or of each channel (PER_CHANNEL)."""
    pid_bh = tl.program_id(0)
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    base = stats_ptr + pid_bh.to(tl.int64) * n_chunks * (3 * BLOCK_D)
    total = tl.zeros([BLOCK_D], tl.float32)
    hi = tl.full([BLOCK_D], float("-inf"), tl.float32)
    lo = tl.full([BLOCK_D], float("inf"), tl.float32)
    for c0 in range(0, n_chunks, BLOCK_C):
        c_ok = (c0 + offs_c < n_chunks)[:, None]
        ptrs = base + (c0 + offs_c)[:, None] * (3 * BLOCK_D) + offs_d[None, :]
        total += tl.sum(tl.load(ptrs, mask=c_ok, other=0.0), 0)
        hi = tl.maximum(hi, tl.max(tl.load(ptrs + BLOCK_D, mask=c_ok, other=float("-inf")), 0))
        lo = tl.minimum(lo, tl.min(tl.load(ptrs + 2 * BLOCK_D, mask=c_ok, other=float("inf")), 0))
    if SMOOTH:
        mean = total / S
        tl.store(mean_ptr + pid_bh * BLOCK_D + offs_d, mean)
        # max |x - mean| = max(max - mean, mean - min) per channel: no second read of x
        channel_amax = tl.maximum(hi - mean, mean - lo)
    else:
        channel_amax = tl.maximum(hi, -lo)
    # A non-finite input makes its channel's sum non-finite: that channel's amax becomes NaN.
    bad = ~(tl.abs(total) < float("inf"))
    channel_amax = tl.where(bad, float("nan"), channel_amax)
    channel_amax = tl.where(offs_d < D, channel_amax, 0.0)  # padded channels hold zeros
    if PER_CHANNEL:
        scale, descale = _scales(channel_amax)
        tl.store(scale_ptr + pid_bh * BLOCK_D + offs_d, scale)
        tl.store(descale_ptr + pid_bh * BLOCK_D + offs_d, descale)
    else:
        amax = tl.max(tl.where(bad, 0.0, channel_amax), 0)
        amax = tl.where(tl.max(bad.to(tl.int32), 0) > 0, float("nan"), amax)  # tl.max may drop NaN
        scale, descale = _scales(amax)
        tl.store(scale_ptr + pid_bh, scale)
        tl.store(descale_ptr + pid_bh, descale)


@triton.jit
def _cast_kernel(
    x_ptr, out_ptr, mean_ptr, scale_ptr, descale_ptr,
    S, H,
    sx_b, sx_h, sx_s, sx_d,
    so_bh, so_s, so_d,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
    MODE: tl.constexpr, SMOOTH: tl.constexpr, EMULATE_CAST: tl.constexpr,
):
    """Cast one (BLOCK_S, D) tile to e4m3. MODE 0: one scale per head (given);
    1: one scale per token (computed here, descale written); 2: one scale per channel (given)."""
    pid_bh = tl.program_id(0)
    pid_s = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < S
    d_ok = offs_d < D
    ok = s_ok[:, None] & d_ok[None, :]
    src = (x_ptr + b.to(tl.int64) * sx_b + h.to(tl.int64) * sx_h
           + offs_s[:, None].to(tl.int64) * sx_s + offs_d[None, :] * sx_d)
    x = tl.load(src, mask=ok, other=0.0).to(tl.float32)
    if SMOOTH:
        mean = tl.load(mean_ptr + pid_bh * BLOCK_D + offs_d)
        x = tl.where(ok, x - mean[None, :], 0.0)  # padded channels stay exactly zero
    if MODE == 1:
        amax = tl.max(tl.abs(x), 1)
        # NaN compares false and Inf is not < Inf: rows with a non-finite entry get a NaN amax.
        n_bad = tl.sum((~(tl.abs(x) < float("inf"))).to(tl.int32), 1)
        scale, descale = _scales(tl.where(n_bad > 0, float("nan"), amax))
        tl.store(descale_ptr + pid_bh.to(tl.int64) * S + offs_s, descale, mask=s_ok)
        y = x * scale[:, None]
    elif MODE == 0:
        y = x * tl.load(scale_ptr + pid_bh)
    else:
        y = x * tl.load(scale_ptr + pid_bh * BLOCK_D + offs_d)[None, :]
    dst = (out_ptr + pid_bh.to(tl.int64) * so_bh
           + offs_s[:, None].to(tl.int64) * so_s + offs_d[None, :] * so_d)
    tl.store(dst, to_e4m3(y, EMULATE_CAST), mask=s_ok[:, None])


def padded_head_dim(head_dim: int) -> int:
    """Head dim the kernels compute with: the next power of two, at least 32 (FP8 MMA's K step)."""
    return max(32, triton.next_power_of_2(head_dim))


def _head_statistics(
    x: torch.Tensor, granularity: str, smooth: bool, block_d: int
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Two launches: chunk statistics, then per-(batch, head) mean and scales. Returns
    (mean or None, scale, descale); scales are None for ``"token"`` (the cast computes them)."""
    B, H, S, D = x.shape
    n_chunks = triton.cdiv(S, _STATS_TOKENS)
    stats = torch.empty(B * H, n_chunks, 3, block_d, device=x.device, dtype=torch.float32)
    _channel_stats_kernel[(B * H, n_chunks)](
        x, stats, S, H, *x.stride(), D=D, BLOCK_D=block_d, BLOCK_S=_STATS_BLOCK, TOKENS=_STATS_TOKENS,
        num_warps=4,
    )
    per_channel = granularity == "channel"
    scale_shape = (B, H, block_d) if per_channel else (B, H)
    mean = torch.empty(B, H, block_d, device=x.device, dtype=torch.float32) if smooth else None
    scale = torch.empty(scale_shape, device=x.device, dtype=torch.float32)
    descale = torch.empty(scale_shape, device=x.device, dtype=torch.float32)
    _finalize_stats_kernel[(B * H,)](
        stats, stats if mean is None else mean, scale, descale, n_chunks, S,
        D=D, BLOCK_D=block_d, BLOCK_C=16, SMOOTH=smooth, PER_CHANNEL=per_channel, num_warps=4,
    )
    if granularity == "token":
        return mean, None, None
    return mean, scale, descale


def quantize_fp8(
    x: torch.Tensor,
    granularity: str,
    smooth: bool = False,
    transpose: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a (B, H, S, D) bf16/fp16 view to e4m3.

    Returns ``(x8, descale)``. ``x8`` is (B, H, S, Dp) contiguous, or with ``transpose`` (B, H, Dp,
    S_pad) with tokens contiguous (S_pad = S rounded up to 16, padding never read), where Dp is
    :func:`padded_head_dim` and padded channels are zero. ``descale`` is fp32 of shape (B, H) for
    ``"head"``, (B, H, S) for ``"token"``, (B, H, Dp) for ``"channel"``. ``smooth`` subtracts the
    per-(batch, head) channel mean over tokens before quantizing (the caller accounts for it).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    B, H, S, D = x.shape
    Dp = padded_head_dim(D)
    if transpose:
        s_pad = triton.cdiv(S, V_TOKEN_ALIGN) * V_TOKEN_ALIGN
        x8 = torch.empty(B, H, Dp, s_pad, device=x.device, dtype=torch.float8_e4m3fn)
        out_strides = (Dp * s_pad, 1, s_pad)
    else:
        x8 = torch.empty(B, H, S, Dp, device=x.device, dtype=torch.float8_e4m3fn)
        out_strides = (S * Dp, Dp, 1)

    mean = scale = None
    if smooth or granularity != "token":
        mean, scale, descale = _head_statistics(x, granularity, smooth, Dp)
    if granularity == "token":
        descale = torch.empty(B, H, S, device=x.device, dtype=torch.float32)
    mode = GRANULARITIES.index(granularity)
    dummy = x8  # placeholder pointer for arguments the chosen MODE never reads
    _cast_kernel[(B * H, triton.cdiv(S, _BLOCK_S))](
        x, x8, dummy if mean is None else mean, dummy if scale is None else scale,
        descale if granularity == "token" else dummy,
        S, H, *x.stride(), *out_strides,
        D=D, BLOCK_D=Dp, BLOCK_S=_BLOCK_S, MODE=mode, SMOOTH=smooth,
        EMULATE_CAST=interpreting(), num_warps=4,
    )
    return x8, descale
