"""Fused RMSNorm + RoPE + FP8 quantization of queries and keys (Wan and FLUX).

Both families normalize Q and K with an RMSNorm, rotate adjacent channel pairs (interleaved RoPE)
and then attention quantizes them. Done apart, that writes a bf16 copy of the normed Q/K, reads
it for RoPE, writes the roped copy and reads it again to quantize. Here one kernel reads the
projection output once (twice when a whole-head statistic is needed first: per-head scales or
smooth-K; once more for Wan's across-heads norm, except per token without smoothing) and writes
only the e4m3 copy in the attention kernel's layout, plus its descales.

* Wan: one RMSNorm across all heads of a token (weight of H*D).
* FLUX: one RMSNorm per head (weight of D); double-stream blocks prepend the text tokens, which
  have norms of their own, to the image tokens: the kernel reads the joint sequence from the two
  projection outputs (``prefix`` rows first) without concatenating them in memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_utils import cdiv, to_e4m3
from .configs import default_quantize_config, interpreting
from .quantize import GRANULARITIES, _finalize_stats_kernel, scale_tile

#: (tokens, warps) per program, every head in one program; H200 (benchmarks/NOTES.md 12, 41).
#: The one-read per-token path holds less per token: 32 tokens on 8 warps (0.45 ms per tensor at
#: Wan-14B 720p; 64 on 4: 0.56-0.62). The others: 64 tokens on 4 warps; groups of 1-8 heads per
#: program were no faster (40x75600 per head: 1.87 / 1.64 / 1.52 / 1.47 ms against 1.43 for all).
TILES = (64, 4)
ONE_READ_TILES = (32, 8)


@triton.jit
def _joint_rows(xa_ptr, xb_ptr, b, offs_s, S_A, sa_b, sa_s, sb_b, sb_s, TWO: tl.constexpr):
    """Row pointers into the joint sequence: rows [0, S_A) of source a, the rest of source b."""
    rows = xa_ptr + b.to(tl.int64) * sa_b + offs_s.to(tl.int64) * sa_s
    if TWO:
        rows_b = xb_ptr + b.to(tl.int64) * sb_b + (offs_s - S_A).to(tl.int64) * sb_s
        rows = tl.where(offs_s < S_A, rows, rows_b)
    return rows


@triton.jit
def _per_source(in_a, value_a, value_b, TWO: tl.constexpr):
    """value_a on rows of source a, value_b elsewhere (value_a alone with one source)."""
    if TWO:
        value_a = tl.where(in_a, value_a, value_b)
    return value_a


@triton.jit
def _normed_rotated_head(rows, in_a, wa_ptr, wb_ptr, w_head_stride, eps_a, eps_b, cos, sin,
                         s_ok, rms, h, D: tl.constexpr, HALF: tl.constexpr,
                         PER_HEAD: tl.constexpr, TWO: tl.constexpr):
    """One head's (BLOCK_S, D) tile of RMSNorm(x) * w rotated by RoPE, fp32, pairs interleaved,
    and the tile's sum of squares per row. ``rms`` is the across-heads 1/RMS per row; PER_HEAD
    computes this head's own instead."""
    offs_d = tl.arange(0, D)
    x = tl.load(rows[:, None] + h * D + offs_d[None, :], mask=s_ok[:, None], other=0.0).to(tl.float32)
    squares = tl.sum(x * x, 1)
    if PER_HEAD:
        rms = tl.math.rsqrt(squares / D + _per_source(in_a, eps_a, eps_b, TWO))
    w = tl.load(wa_ptr + h * w_head_stride + offs_d).to(tl.float32)[None, :]
    if TWO:
        w = tl.where(in_a[:, None], w, tl.load(wb_ptr + h * w_head_stride + offs_d).to(tl.float32)[None, :])
    y = x * rms[:, None] * w
    even, odd = tl.split(tl.reshape(y, [y.shape[0], HALF, 2]))
    return tl.interleave(even * cos - odd * sin, even * sin + odd * cos), squares


@triton.jit
def _token_rms_kernel(xa_ptr, xb_ptr, rms_ptr, S, S_A, H, sa_b, sa_s, sb_b, sb_s, eps_a, eps_b,
                      D: tl.constexpr, BLOCK_S: tl.constexpr, TWO: tl.constexpr):
    """Each token's 1/RMS over all H*D channels (Wan's across-heads norm) -> rms (B, S)."""
    pid_s = tl.program_id(0)
    b = tl.program_id(1)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    s_ok = offs_s < S
    rows = _joint_rows(xa_ptr, xb_ptr, b, offs_s, S_A, sa_b, sa_s, sb_b, sb_s, TWO)
    offs_d = tl.arange(0, D)
    ss = tl.zeros([BLOCK_S], tl.float32)
    for h in range(H):
        x = tl.load(rows[:, None] + h * D + offs_d[None, :], mask=s_ok[:, None], other=0.0).to(tl.float32)
        ss += tl.sum(x * x, 1)
    rms = tl.math.rsqrt(ss / (H * D) + _per_source(offs_s < S_A, eps_a, eps_b, TWO))
    tl.store(rms_ptr + b.to(tl.int64) * S + offs_s, rms, mask=s_ok)


@triton.jit
def _norm_rope_quant_kernel(
    xa_ptr, xb_ptr, wa_ptr, wb_ptr, cos_ptr, sin_ptr, out_ptr, stats_ptr, rms_ptr, mean_ptr, scale_ptr,
    descale_ptr, S, S_A, H, sa_b, sa_s, sb_b, sb_s, w_head_stride, eps_a, eps_b, so_s, sds_bh,
    D: tl.constexpr, BLOCK_S: tl.constexpr, PASS: tl.constexpr, MODE: tl.constexpr,
    SMOOTH: tl.constexpr, PER_HEAD: tl.constexpr, TWO: tl.constexpr, EMULATE_CAST: tl.constexpr,
):
    """A program: BLOCK_S tokens of every head (grid: token chunks, batch). PASS 0: per-(batch,
    head, channel) sum/max/min of the rotated tile -> stats (for per-head scales or smooth-K).
    PASS 1: quantize, MODE 0 per head (given scale), 1 per token. Wan's across-heads 1/RMS comes
    from _token_rms_kernel, or (ONE_READ) see below."""
    pid_s = tl.program_id(0)
    b = tl.program_id(1)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    s_ok = offs_s < S
    in_a = offs_s < S_A
    rows = _joint_rows(xa_ptr, xb_ptr, b, offs_s, S_A, sa_b, sa_s, sb_b, sb_s, TWO)
    offs_d = tl.arange(0, D)
    # Per token without smoothing, Wan's 1/RMS cancels out of the e4m3 values (a row's scale is
    # 448 over its own amax): quantize the unnormalized rotation, sum the squares on the way and
    # multiply the descales by the 1/RMS at the end. One read of x instead of two.
    ONE_READ: tl.constexpr = PASS == 1 and MODE == 1 and not SMOOTH and not PER_HEAD
    rms = tl.full([BLOCK_S], 1.0, tl.float32)
    if not PER_HEAD and not ONE_READ:
        rms = tl.load(rms_ptr + b.to(tl.int64) * S + offs_s, mask=s_ok, other=1.0)
    # the rotation's angles are the same for every head: loaded once per program
    offs_p = tl.arange(0, D // 2)
    cos = tl.load(cos_ptr + offs_s[:, None] * (D // 2) + offs_p[None, :], mask=s_ok[:, None], other=1.0)
    sin = tl.load(sin_ptr + offs_s[:, None] * (D // 2) + offs_p[None, :], mask=s_ok[:, None], other=0.0)
    ss = tl.zeros([BLOCK_S], tl.float32)
    n_chunks = tl.num_programs(0)
    for h in range(H):
        y, squares = _normed_rotated_head(rows, in_a, wa_ptr, wb_ptr, w_head_stride, eps_a, eps_b, cos, sin,
                                          s_ok, rms, h, D, D // 2, PER_HEAD, TWO)
        ss += squares
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
    if ONE_READ:
        rms = tl.math.rsqrt(ss / (H * D) + _per_source(in_a, eps_a, eps_b, TWO))
        tl.debug_barrier()  # the descales written above, by whichever thread held their row
        for h in range(H):
            descales = descale_ptr + (b * H + h).to(tl.int64) * sds_bh + offs_s
            tl.store(descales, tl.load(descales, mask=s_ok) * rms, mask=s_ok)


def norm_rope_supported(head_dim: int) -> bool:
    """The fused path handles power-of-two head dims from 32 to 128 (Wan's and FLUX's are 128)."""
    return head_dim in (32, 64, 128)


def _check_source(name: str, x: torch.Tensor, weight: torch.Tensor, heads: int, per_head_norm: bool) -> int:
    """Head dim of one (B, S, H*D) projection output; raises on what the kernel cannot read."""
    if x.dim() != 3 or x.shape[-1] % heads:
        raise ValueError(f"{name} must be (B, S, heads*head_dim) with {heads} heads, got {tuple(x.shape)}")
    D = x.shape[-1] // heads
    if not norm_rope_supported(D) or x.stride(-1) != 1:
        raise ValueError(f"the fused kernel needs head_dim in (32, 64, 128) and a unit last stride; got "
                         f"head_dim {D}, stride {x.stride(-1)} ({name})")
    expected = D if per_head_norm else heads * D
    if weight.numel() != expected or not weight.is_contiguous():
        raise ValueError(f"{name}'s RMSNorm weight must be contiguous with {expected} elements "
                         f"({'per head' if per_head_norm else 'across heads'}), got {tuple(weight.shape)}")
    return D


def norm_rope_quantize(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    granularity: str,
    smooth: bool = False,
    tiles: tuple[int, int] | None = None,
    *,
    per_head_norm: bool = False,
    prefix: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """RMSNorm + interleaved RoPE + e4m3 quantization of one projection output.

    ``x``: the projection output (B, S, H*D), unit last stride. ``weight``/``eps``: its RMSNorm,
    across all heads (``weight`` of H*D, Wan) or, with ``per_head_norm``, per head (``weight`` of
    D, FLUX). ``prefix``: (x, weight, eps) of tokens that come first in the joint sequence (FLUX's
    text tokens, normed with their own weights): the result is that of ``cat([prefix, x], 1)``.
    ``cos``/``sin``: (S_joint, D/2), one value per channel pair. Returns (x8 (B, H, S_joint, D)
    e4m3, descale as :func:`accel.kernels.quantize.quantize_fp8` gives for ``granularity``, mean
    (B, H, D) fp32 if ``smooth`` else None). ``tiles``: (tokens, warps) per program
    (tuning only; default TILES, or ONE_READ_TILES on the one-read path).
    """
    if granularity not in GRANULARITIES[:2]:
        raise ValueError(f"granularity must be 'head' or 'token', got {granularity!r}")
    D = _check_source("x", x, weight, heads, per_head_norm)
    sources = [(x, weight, eps)]
    if prefix is not None:
        if _check_source("prefix", prefix[0], prefix[1], heads, per_head_norm) != D or prefix[0].shape[0] != x.shape[0]:
            raise ValueError(f"prefix {tuple(prefix[0].shape)} and x {tuple(x.shape)} must share batch and head dim")
        sources.insert(0, prefix)
    (xa, wa, eps_a), (xb, wb, eps_b) = sources[0], sources[-1]
    B, S_A = xa.shape[:2]
    S = S_A + (x.shape[1] if prefix is not None else 0)
    if cos.shape != (S, D // 2) or sin.shape != (S, D // 2):
        raise ValueError(f"cos and sin must be (tokens, head_dim / 2) = {(S, D // 2)}, got "
                         f"{tuple(cos.shape)} and {tuple(sin.shape)}")
    one_read = granularity == "token" and not smooth and not per_head_norm  # the kernel's ONE_READ
    block_s, warps = tiles or (ONE_READ_TILES if one_read else TILES)
    dev = x.device
    f32 = dict(device=dev, dtype=torch.float32)
    x8 = torch.empty(B, heads, S, D, device=dev, dtype=torch.float8_e4m3fn)
    n_chunks = cdiv(S, block_s)
    grid = (n_chunks, B)
    sources_args = (xa, xb, wa, wb)
    strides = (xa.stride(0), xa.stride(1), xb.stride(0), xb.stride(1))
    shape_args = (S, S_A, heads, *strides, 0 if per_head_norm else D, eps_a, eps_b)
    common = dict(D=D, BLOCK_S=block_s, PER_HEAD=per_head_norm, TWO=prefix is not None,
                  EMULATE_CAST=interpreting(), num_warps=warps)
    cos, sin = cos.float().contiguous(), sin.float().contiguous()
    mean = scale = None
    rms = x8  # each token's across-heads 1/RMS, where the passes need it
    if not per_head_norm and not one_read:
        rms = torch.empty(B, S, **f32)
        _token_rms_kernel[grid](xa, xb, rms, S, S_A, heads, *strides, eps_a, eps_b,
                                D=D, BLOCK_S=block_s, TWO=prefix is not None, num_warps=warps)
    if smooth or granularity == "head":
        quantize_cfg = default_quantize_config()  # the finalize pass is quantize_many's
        stats = torch.empty(B * heads, n_chunks, 3, D, **f32)
        _norm_rope_quant_kernel[grid](*sources_args, cos, sin, x8, stats, rms, stats, stats, stats,
                                      *shape_args, D, 0, PASS=0, MODE=0, SMOOTH=False, **common)
        mean = torch.empty(B, heads, D, **f32) if smooth else None
        scale = torch.empty(B, heads, **f32)
        head_descale = torch.empty(B, heads, **f32)
        _finalize_stats_kernel[(B * heads, 1)](
            stats, stats if mean is None else mean, stats, stats, scale, stats, stats, head_descale, stats, stats,
            S, 1, 1, n_chunks, D=D, BLOCK_D=D, BLOCK_C=quantize_cfg.finalize_chunks, STATS_TOKENS=block_s,
            SMOOTH0=smooth, SMOOTH1=False, SMOOTH2=False,
            PER_CHANNEL0=False, PER_CHANNEL1=False, PER_CHANNEL2=False, num_warps=quantize_cfg.finalize_warps,
        )
    if granularity == "token":
        s_pad = cdiv(S, 16) * 16
        descale = torch.empty_strided((B, heads, S), (heads * s_pad, s_pad, 1), **f32)
        sds_bh = s_pad
    else:
        descale, sds_bh = head_descale, 0
    _norm_rope_quant_kernel[grid](*sources_args, cos, sin, x8, x8, rms, x8 if mean is None else mean,
                                  x8 if scale is None else scale, descale, *shape_args, D, sds_bh,
                                  PASS=1, MODE=GRANULARITIES.index(granularity), SMOOTH=smooth, **common)
    return x8, descale, mean
