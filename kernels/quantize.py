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

from ._triton_utils import interpreting, to_e4m3
from .numerics import AMAX_EPS, E4M3_MAX, descale_from_amax, scale_from_amax

_AMAX_EPS = tl.constexpr(AMAX_EPS)  # Triton kernels read globals only as constexpr
_E4M3_MAX = tl.constexpr(E4M3_MAX)

GRANULARITIES = ("head", "token", "channel")
_STATS_TOKENS = 512  # tokens per program of the statistics pass
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
    total = tl.zeros([BLOCK_D], tl.float32)
    hi = tl.full([BLOCK_D], float("-inf"), tl.float32)
    lo = tl.full([BLOCK_D], float("inf"), tl.float32)
    start = pid_chunk * TOKENS
    for s0 in range(start, start + TOKENS, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        ok = (offs_s[:, None] < S) & d_ok[None, :]
        x = tl.load(base + offs_s[:, None].to(tl.int64) * stride_s + offs_d[None, :] * stride_d,
                    mask=ok, other=0.0).to(tl.float32)
        total += tl.sum(x, 0)
        hi = tl.maximum(hi, tl.max(tl.where(ok, x, float("-inf")), 0))
        lo = tl.minimum(lo, tl.min(tl.where(ok, x, float("inf")), 0))
    out = stats_ptr + (pid_bh * n_chunks + pid_chunk).to(tl.int64) * (3 * BLOCK_D) + offs_d
    tl.store(out, total)
    tl.store(out + BLOCK_D, hi)
    tl.store(out + 2 * BLOCK_D, lo)


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
        # NaN compares false and Inf is not < Inf: count the non-finite entries of each row.
        n_bad = tl.sum((~(tl.abs(x) < float("inf"))).to(tl.int32), 1)
        tiny = amax <= _AMAX_EPS
        # div_rn: correctly rounded, as the reference's scales (plain "/" is approximate on GPUs).
        scale = tl.where(tiny, 1.0, tl.math.div_rn(tl.zeros_like(amax) + _E4M3_MAX, amax))
        descale = tl.where(tiny, 1.0, tl.math.div_rn(amax, tl.zeros_like(amax) + _E4M3_MAX))
        descale = tl.where(n_bad > 0, float("nan"), descale)
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


def _channel_stats(x: torch.Tensor, block_d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per (batch, head, channel) sum, max and min over tokens, fp32, channels padded to block_d."""
    B, H, S, D = x.shape
    n_chunks = triton.cdiv(S, _STATS_TOKENS)
    stats = torch.empty(B * H, n_chunks, 3, block_d, device=x.device, dtype=torch.float32)
    _channel_stats_kernel[(B * H, n_chunks)](
        x, stats, S, H, *x.stride(), D=D, BLOCK_D=block_d, BLOCK_S=64, TOKENS=_STATS_TOKENS,
        num_warps=4,
    )
    return stats[:, :, 0].sum(1), stats[:, :, 1].amax(1), stats[:, :, 2].amin(1)


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
        total, hi, lo = _channel_stats(x, Dp)
        if smooth:
            mean = total / S
            channel_amax = torch.maximum(hi - mean, mean - lo)
        else:
            channel_amax = torch.maximum(hi, -lo)
        # A non-finite input makes its channel's sum non-finite: poison that channel's amax.
        channel_amax = torch.where(torch.isfinite(total), channel_amax, float("nan"))
        amax = channel_amax.amax(-1) if granularity == "head" else channel_amax
        if granularity != "token":
            scale = scale_from_amax(amax).contiguous()
            descale = descale_from_amax(amax).view(B, H, *amax.shape[1:])

    if granularity == "token":
        descale = torch.empty(B, H, S, device=x.device, dtype=torch.float32)
    mode = GRANULARITIES.index(granularity)
    dummy = x8  # placeholder pointer for arguments the chosen MODE never reads
    _cast_kernel[(B * H, triton.cdiv(S, _BLOCK_S))](
        x, x8, dummy if mean is None else mean.contiguous(), dummy if scale is None else scale,
        descale if granularity == "token" else dummy,
        S, H, *x.stride(), *out_strides,
        D=D, BLOCK_D=Dp, BLOCK_S=_BLOCK_S, MODE=mode, SMOOTH=smooth,
        EMULATE_CAST=interpreting(), num_warps=4,
    )
    return x8, descale
