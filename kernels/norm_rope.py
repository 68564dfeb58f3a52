"""Fused RMSNorm + RoPE + FP8 quantization for Wan's queries and keys.

Wan normalizes Q and K with one RMSNorm across all heads, rotates adjacent channel pairs (RoPE)
and then attention quantizes them. Done apart, that writes a bf16 copy of the normed Q/K, reads
it for RoPE, writes the roped copy and reads it again to quantize. Here one kernel reads the
projection output once (twice when a whole-head statistic is needed first: per-head scales or
smooth-K) and writes only the e4m3 copy in the attention kernel's layout, plus its descales.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_utils import to_e4m3
from .configs import interpreting
from .quantize import GRANULARITIES, _finalize_stats_kernel, scale_tile

BLOCK_S = 64  # tokens per program: 2.2x faster than 16 at Wan-14B 720p (H200, benchmarks/NOTES.md)


@triton.jit
def _normed_rotated_head(x_row_ptr, w_ptr, cos_ptr, sin_ptr, offs_s, s_ok, rms, h, stride_s,
                         D: tl.constexpr, HALF: tl.constexpr):
    """One head's (BLOCK_S, D) tile of RMSNorm(x) * w rotated by RoPE, fp32, pairs interleaved."""
    offs_d = tl.arange(0, D)
    x = tl.load(x_row_ptr + offs_s[:, None].to(tl.int64) * stride_s + h * D + offs_d[None, :],
                mask=s_ok[:, None], other=0.0).to(tl.float32)
    y = x * rms[:, None] * tl.load(w_ptr + h * D + offs_d).to(tl.float32)[None, :]
    even, odd = tl.split(tl.reshape(y, [y.shape[0], HALF, 2]))
    offs_p = tl.arange(0, HALF)
    cos = tl.load(cos_ptr + offs_s[:, None] * HALF + offs_p[None, :], mask=s_ok[:, None], other=1.0)
    sin = tl.load(sin_ptr + offs_s[:, None] * HALF + offs_p[None, :], mask=s_ok[:, None], other=0.0)
    return tl.interleave(even * cos - odd * sin, even * sin + odd * cos)


@triton.jit
def _norm_rope_quant_kernel(
    x_ptr, w_ptr, cos_ptr, sin_ptr, out_ptr, stats_ptr, mean_ptr, scale_ptr, descale_ptr,
    S, H, stride_b, stride_s, eps, so_s, sds_bh,
    D: tl.constexpr, BLOCK_S: tl.constexpr, PASS: tl.constexpr, MODE: tl.constexpr,
    SMOOTH: tl.constexpr, EMULATE_CAST: tl.constexpr,
):
    """PASS 0: per-(batch, head, channel) sum/max/min of the rotated tile -> stats (for per-head
    scales or smooth-K). PASS 1: quantize; MODE 0 per head (given scale), 1 per token."""
    pid_s = tl.program_id(0)
    b = tl.program_id(1)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    s_ok = offs_s < S
    x_row_ptr = x_ptr + b.to(tl.int64) * stride_b
    # RMSNorm runs across all heads of a token: sum of squares over the whole row first.
    offs_d = tl.arange(0, D)
    ss = tl.zeros([BLOCK_S], tl.float32)
    for h in range(H):
        x = tl.load(x_row_ptr + offs_s[:, None].to(tl.int64) * stride_s + h * D + offs_d[None, :],
                    mask=s_ok[:, None], other=0.0).to(tl.float32)
        ss += tl.sum(x * x, 1)
    rms = tl.math.rsqrt(ss / (H * D) + eps)
    n_chunks = tl.num_programs(0)
    for h in range(H):
        y = _normed_rotated_head(x_row_ptr, w_ptr, cos_ptr, sin_ptr, offs_s, s_ok, rms, h, stride_s, D, D // 2)
        bh = b * H + h
        if PASS == 0:
            stats = stats_ptr + (bh * n_chunks + pid_s).to(tl.int64) * (3 * D) + offs_d
            tl.store(stats, tl.sum(tl.where(s_ok[:, None], y, 0.0), 0))
            tl.store(stats + D, tl.max(tl.where(s_ok[:, None], y, float("-inf")), 0))
            tl.store(stats + 2 * D, tl.min(tl.where(s_ok[:, None], y, float("inf")), 0))
        else:
            if SMOOTH:
                y = tl.where(s_ok[:, None], y - tl.load(mean_ptr + bh * D + offs_d)[None, :], 0.0)
            y = scale_tile(y, MODE, scale_ptr, descale_ptr, bh, sds_bh, offs_s, s_ok, offs_d, D)
            dst = out_ptr + bh.to(tl.int64) * S * so_s + offs_s[:, None].to(tl.int64) * so_s + offs_d[None, :]
            tl.store(dst, to_e4m3(y, EMULATE_CAST), mask=s_ok[:, None])


def norm_rope_supported(head_dim: int) -> bool:
    """The fused path handles power-of-two head dims from 32 to 128 (Wan's is 128)."""
    return head_dim in (32, 64, 128)


def norm_rope_quantize(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    granularity: str,
    smooth: bool = False,
    block_s: int = BLOCK_S,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """RMSNorm (across all heads, ``weight`` of H*D) + interleaved RoPE + e4m3 quantization.

    ``x``: the projection output (B, S, H*D), unit last stride. ``cos``/``sin``: (S, D/2) fp32,
    one value per channel pair. Returns (x8 (B, H, S, D) e4m3, descale as
    :func:`accel.kernels.quantize.quantize_fp8` gives for ``granularity``, mean (B, H, D) fp32 if
    ``smooth`` else None). ``block_s``: tokens per program (tuning only).
    """
    if granularity not in GRANULARITIES[:2]:
        raise ValueError(f"granularity must be 'head' or 'token', got {granularity!r}")
    B, S, HD = x.shape
    D = HD // heads
    if not norm_rope_supported(D) or x.stride(-1) != 1:
        raise ValueError(f"the fused kernel needs head_dim in (32, 64, 128) and a unit last stride; got {D}")
    dev = x.device
    f32 = dict(device=dev, dtype=torch.float32)
    x8 = torch.empty(B, heads, S, D, device=dev, dtype=torch.float8_e4m3fn)
    n_chunks = triton.cdiv(S, block_s)
    grid = (n_chunks, B)
    common = dict(D=D, BLOCK_S=block_s, EMULATE_CAST=interpreting(), num_warps=4)
    cos, sin = cos.float().contiguous(), sin.float().contiguous()
    mean = scale = None
    if smooth or granularity == "head":
        stats = torch.empty(B * heads, n_chunks, 3, D, **f32)
        _norm_rope_quant_kernel[grid](x, weight, cos, sin, x8, stats, stats, stats, stats,
                                      S, heads, x.stride(0), x.stride(1), eps, D, 0,
                                      PASS=0, MODE=0, SMOOTH=False, **common)
        mean = torch.empty(B, heads, D, **f32) if smooth else None
        scale = torch.empty(B, heads, **f32)
        head_descale = torch.empty(B, heads, **f32)
        _finalize_stats_kernel[(B * heads, 1)](
            stats, stats if mean is None else mean, stats, stats, scale, stats, stats, head_descale, stats, stats,
            S, 1, 1, n_chunks, D=D, BLOCK_D=D, BLOCK_C=64, STATS_TOKENS=block_s,
            SMOOTH0=smooth, SMOOTH1=False, SMOOTH2=False,
            PER_CHANNEL0=False, PER_CHANNEL1=False, PER_CHANNEL2=False, num_warps=4,
        )
    if granularity == "token":
        s_pad = triton.cdiv(S, 16) * 16
        descale = torch.empty_strided((B, heads, S), (heads * s_pad, s_pad, 1), **f32)
        sds_bh = s_pad
    else:
        descale, sds_bh = head_descale, 0
    _norm_rope_quant_kernel[grid](x, weight, cos, sin, x8, x8, x8 if mean is None else mean,
                                  x8 if scale is None else scale, descale,
                                  S, heads, x.stride(0), x.stride(1), eps, D, sds_bh,
                                  PASS=1, MODE=GRANULARITIES.index(granularity), SMOOTH=smooth, **common)
    return x8, descale, mean
