"""Fused FP8 quantization of attention inputs: statistics, smoothing, scaling and the e4m3 cast.

One call turns up to three bf16/fp16 (B, H, S, D) views (any strides, so diffusers' (B, S, H, D)
tensors are read in place) into contiguous e4m3 copies in the layout the attention kernel wants,
plus fp32 descale factors. Q, K and V go through each pass in the same launch (a third grid axis
picks the tensor), so a whole attention call costs at most three quantization launches: the
Python side of a Triton launch, not the GPU, dominates at short sequence lengths; there (up to
``QuantizeConfig.one_launch_tokens``) every cast program computes its head's statistics itself,
and the call costs one launch.

* ``"token"``: one scale per (batch, head, token), computed inside the cast kernel from the row
  it already holds in registers: one read of the input, one write of the FP8 copy.
* ``"head"`` / ``"channel"``: one scale per (batch, head) or per (batch, head, channel). The cast
  needs the amax of the whole head first, so a statistics pass (per-channel sum, max and min in
  one read) runs before the cast pass. The same statistics give the channel mean for smoothing
  and, because max|x - mean| = max(max - mean, mean - min) per channel, the amax of the smoothed
  tensor without another read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._triton_utils import cdiv, next_power_of_2, to_e4m3
from .configs import QuantizeConfig, default_quantize_config, interpreting
from .numerics import AMAX_EPS, E4M3_MAX, MMA_KEY_CHUNK, mma_row_length

_AMAX_EPS = tl.constexpr(AMAX_EPS)  # Triton kernels read globals only as constexpr
_E4M3_MAX = tl.constexpr(E4M3_MAX)

GRANULARITIES = ("head", "token", "channel")
#: Token orders of a transposed copy: "natural" for the Triton kernel; "mma" for the Gluon kernel
#: (right-aligned in whole key blocks, each 32-key chunk in numerics.mma_key_order).
KEY_ORDERS = ("natural", "mma")
#: The attention kernel reads V transposed (an FP8 wgmma wants its B operand K-major); its token
#: axis is padded to this multiple so that every row starts 16-byte aligned.
V_TOKEN_ALIGN = 16


@triton.jit
def _pick(slot, a0, a1, a2):
    """The slot-th of three same-typed values (slot is the launch's tensor index)."""
    if slot == 0:
        r = a0
    elif slot == 1:
        r = a1
    else:
        r = a2
    return r


@triton.jit
def _accumulate_chunk(base, first, S, stride_s, stride_d, offs_d, d_ok, total, hi, lo,
                      BLOCK_S: tl.constexpr, TOKENS: tl.constexpr):
    """Tokens [first, first + TOKENS) of one head into element-wise (BLOCK_S, BLOCK_D) sum, max
    and min accumulators. Element-wise, reduced across tokens once at the end: a cross-thread
    reduction per loaded tile made the statistics pass 3x slower than a copy."""
    for i in tl.static_range(TOKENS // BLOCK_S):  # unrolled: all loads can be in flight at once
        offs_s = first + i * BLOCK_S + tl.arange(0, BLOCK_S)
        ok = (offs_s[:, None] < S) & d_ok[None, :]
        x = tl.load(base + offs_s[:, None].to(tl.int64) * stride_s + offs_d[None, :] * stride_d,
                    mask=ok, other=0.0).to(tl.float32)
        total += x
        hi = tl.maximum(hi, tl.where(ok, x, float("-inf")))
        lo = tl.minimum(lo, tl.where(ok, x, float("inf")))
    return total, hi, lo


@triton.jit
def _channel_stats_kernel(
    x0, x1, x2, stats_ptr, S0, S1, S2, H,
    sb0, sh0, ss0, sd0, sb1, sh1, ss1, sd1, sb2, sh2, ss2, sd2,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, TOKENS: tl.constexpr,
):
    """Per (batch*head, chunk of TOKENS tokens, tensor): channel sum, max and min ->
    stats[tensor, bh, chunk, 3, BLOCK_D]. Chunks past a tensor's length write neutral values."""
    pid_bh = tl.program_id(0)
    pid_chunk = tl.program_id(1)
    slot = tl.program_id(2)
    x_ptr = _pick(slot, x0, x1, x2)
    S = _pick(slot, S0, S1, S2)
    stride_b = _pick(slot, sb0, sb1, sb2)
    stride_h = _pick(slot, sh0, sh1, sh2)
    stride_s = _pick(slot, ss0, ss1, ss2)
    stride_d = _pick(slot, sd0, sd1, sd2)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    base = x_ptr + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
    total = tl.zeros([BLOCK_S, BLOCK_D], tl.float32)
    hi = tl.full([BLOCK_S, BLOCK_D], float("-inf"), tl.float32)
    lo = tl.full([BLOCK_S, BLOCK_D], float("inf"), tl.float32)
    total, hi, lo = _accumulate_chunk(base, pid_chunk * TOKENS, S, stride_s, stride_d, offs_d, d_ok,
                                      total, hi, lo, BLOCK_S, TOKENS)
    row = (slot * tl.num_programs(0) + pid_bh) * tl.num_programs(1) + pid_chunk
    out = stats_ptr + row.to(tl.int64) * (3 * BLOCK_D) + offs_d
    tl.store(out, tl.sum(total, 0))
    tl.store(out + BLOCK_D, tl.max(hi, 0))
    tl.store(out + 2 * BLOCK_D, tl.min(lo, 0))


@triton.jit
def _scales(amax):
    """(scale, descale) from amax, exactly as numerics.scale_from_amax / descale_from_amax."""
    big = amax > _AMAX_EPS  # False for NaN too
    scale = tl.where(big, tl.math.div_rn(tl.zeros_like(amax) + _E4M3_MAX, amax), 1.0)
    descale = tl.where(big, tl.math.div_rn(amax, tl.zeros_like(amax) + _E4M3_MAX), 1.0)
    descale = tl.where(tl.abs(amax) < float("inf"), descale, float("nan"))
    return scale, descale


@triton.jit
def row_scales(x):
    """(scale, descale) of each row of a (rows, channels) fp32 tile, from the row's amax."""
    amax = tl.max(tl.abs(x), 1)
    # NaN compares false and Inf is not < Inf: rows with a non-finite entry get a NaN amax.
    n_bad = tl.sum(tl.where(tl.abs(x) < float("inf"), 0, 1), 1)
    return _scales(tl.where(n_bad > 0, float("nan"), amax))


@triton.jit
def scale_tile(x, MODE: tl.constexpr, scale_ptr, descale_ptr, bh, sds_bh, offs_s, s_ok, offs_d,
               ROW: tl.constexpr):
    """x (tokens, channels) times its scales. MODE 0: one per head (given); 1: one per token,
    computed here, descale stored at descale_ptr[bh * sds_bh + token]; 2: one per channel (given)."""
    return _scale_tile_by(x, MODE, _given_scale(scale_ptr, bh, offs_d, MODE, ROW), descale_ptr, bh, sds_bh,
                          offs_s, s_ok)


@triton.jit
def _given_scale(scale_ptr, bh, offs_d, MODE: tl.constexpr, ROW: tl.constexpr):
    """The head's scale (MODE 0) or its channels' (MODE 2) from memory; MODE 1 has none."""
    if MODE == 0:
        scale = tl.load(scale_ptr + bh)
    elif MODE == 2:
        scale = tl.load(scale_ptr + bh * ROW + offs_d)
    else:
        scale = 1.0  # computed per row by _scale_tile_by
    return scale


@triton.jit
def _scale_tile_by(x, MODE: tl.constexpr, scale, descale_ptr, bh, sds_bh, offs_s, s_ok):
    """scale_tile with the head's scale (MODE 0) or channel scales (MODE 2) given as values."""
    if MODE == 1:
        scale, descale = row_scales(x)
        tl.store(descale_ptr + bh.to(tl.int64) * sds_bh + offs_s, descale, mask=s_ok)
        y = x * scale[:, None]
    elif MODE == 0:
        y = x * scale
    else:
        y = x * scale[None, :]
    return y


@triton.jit
def _head_scales(total, hi, lo, S, offs_d, D: tl.constexpr, SMOOTH: tl.constexpr, PER_CHANNEL: tl.constexpr):
    """(mean, scale, descale) of one head from its channel sums, maxima and minima: the channel
    mean (zeros unless SMOOTH) and the scale/descale of the whole head, or of each channel."""
    if SMOOTH:
        mean = total / S
        # max |x - mean| = max(max - mean, mean - min) per channel: no second read of x
        channel_amax = tl.maximum(hi - mean, mean - lo)
    else:
        mean = tl.zeros_like(total)
        channel_amax = tl.maximum(hi, -lo)
    # A non-finite input makes its channel's sum non-finite: that channel's amax becomes NaN.
    bad = tl.where(tl.abs(total) < float("inf"), 0, 1) > 0  # NaN compares false too
    channel_amax = tl.where(bad, float("nan"), channel_amax)
    channel_amax = tl.where(offs_d < D, channel_amax, 0.0)  # padded channels hold zeros
    if PER_CHANNEL:
        scale, descale = _scales(channel_amax)
    else:
        amax = tl.max(tl.where(bad, 0.0, channel_amax), 0)
        amax = tl.where(tl.max(bad.to(tl.int32), 0) > 0, float("nan"), amax)  # tl.max may drop NaN
        scale, descale = _scales(amax)
    return mean, scale, descale


@triton.jit
def _store_per_head(ptr, pid_bh, offs_d, value, BLOCK_D: tl.constexpr, PER_CHANNEL: tl.constexpr):
    """Store a head's value (a scalar) or its channels' (a (BLOCK_D,) vector)."""
    if PER_CHANNEL:
        tl.store(ptr + pid_bh * BLOCK_D + offs_d, value)
    else:
        tl.store(ptr + pid_bh, value)


@triton.jit
def _finalize_one(
    stats_ptr, mean_ptr, scale_ptr, descale_ptr, pid_bh, n_chunks, S,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
    SMOOTH: tl.constexpr, PER_CHANNEL: tl.constexpr,
):
    """Reduce one head's chunk statistics to its channel mean (if SMOOTH) and the scale/descale
    of the whole head, or of each channel (PER_CHANNEL)."""
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    total = tl.zeros([BLOCK_D], tl.float32)
    hi = tl.full([BLOCK_D], float("-inf"), tl.float32)
    lo = tl.full([BLOCK_D], float("inf"), tl.float32)
    for c0 in range(0, n_chunks, BLOCK_C):
        c_ok = (c0 + offs_c < n_chunks)[:, None]
        ptrs = stats_ptr + (c0 + offs_c)[:, None] * (3 * BLOCK_D) + offs_d[None, :]
        total += tl.sum(tl.load(ptrs, mask=c_ok, other=0.0), 0)
        hi = tl.maximum(hi, tl.max(tl.load(ptrs + BLOCK_D, mask=c_ok, other=float("-inf")), 0))
        lo = tl.minimum(lo, tl.min(tl.load(ptrs + 2 * BLOCK_D, mask=c_ok, other=float("inf")), 0))
    mean, scale, descale = _head_scales(total, hi, lo, S, offs_d, D, SMOOTH, PER_CHANNEL)
    if SMOOTH:
        _store_per_head(mean_ptr, pid_bh, offs_d, mean, BLOCK_D, True)
    _store_per_head(scale_ptr, pid_bh, offs_d, scale, BLOCK_D, PER_CHANNEL)
    _store_per_head(descale_ptr, pid_bh, offs_d, descale, BLOCK_D, PER_CHANNEL)


@triton.jit
def _finalize_stats_kernel(
    stats_ptr, mean0, mean1, mean2, scale0, scale1, scale2, descale0, descale1, descale2,
    S0, S1, S2, max_chunks,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, STATS_TOKENS: tl.constexpr,
    SMOOTH0: tl.constexpr, SMOOTH1: tl.constexpr, SMOOTH2: tl.constexpr,
    PER_CHANNEL0: tl.constexpr, PER_CHANNEL1: tl.constexpr, PER_CHANNEL2: tl.constexpr,
):
    """Per (batch*head, tensor): see _finalize_one. Each tensor has its own compile-time flags."""
    pid_bh = tl.program_id(0)
    slot = tl.program_id(1)
    stats = stats_ptr + (slot * tl.num_programs(0) + pid_bh).to(tl.int64) * max_chunks * (3 * BLOCK_D)
    if slot == 0:
        _finalize_one(stats, mean0, scale0, descale0, pid_bh, tl.cdiv(S0, STATS_TOKENS), S0,
                      D, BLOCK_D, BLOCK_C, SMOOTH0, PER_CHANNEL0)
    elif slot == 1:
        _finalize_one(stats, mean1, scale1, descale1, pid_bh, tl.cdiv(S1, STATS_TOKENS), S1,
                      D, BLOCK_D, BLOCK_C, SMOOTH1, PER_CHANNEL1)
    else:
        _finalize_one(stats, mean2, scale2, descale2, pid_bh, tl.cdiv(S2, STATS_TOKENS), S2,
                      D, BLOCK_D, BLOCK_C, SMOOTH2, PER_CHANNEL2)


@triton.jit
def _mma_column_key(c):
    """Key held by column c of the "mma" key order (numerics.mma_key_order): within its 32-key
    chunk, the key whose bits (c4, c1, c3, c2, c0) are column c's bits (c4, c3, c2, c1, c0)."""
    return (c & ~15) | ((c & 2) << 2) | ((c & 12) >> 1) | (c & 1)


@triton.jit
def _cast_one(
    x_ptr, out_ptr, mean_ptr, scale_ptr, descale_ptr, pid_bh, pid_s,
    S, H, sx_b, sx_h, sx_s, sx_d, so_bh, so_s, so_d, sds_bh, key_pad,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
    MODE: tl.constexpr, SMOOTH: tl.constexpr, LAYOUT: tl.constexpr, EMULATE_CAST: tl.constexpr,
    OWN_STATS: tl.constexpr, STATS_BLOCK: tl.constexpr, STATS_TOKENS: tl.constexpr,
):
    """Cast one (BLOCK_S, D) tile to e4m3. MODE 0: one scale per head; 1: one scale per token
    (computed here, descale written); 2: one scale per channel. The head's mean and scales are
    given (the statistics passes wrote them) or, with OWN_STATS, computed here (see quantize_many).
    LAYOUT: 0 row-major; transposed (a row of tokens per channel) in natural (1) or "mma" (2) key order."""
    b = pid_bh // H
    h = pid_bh % H
    base = x_ptr + b.to(tl.int64) * sx_b + h.to(tl.int64) * sx_h
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    if OWN_STATS and (SMOOTH or MODE != 1):
        # One launch for short tensors: every tile reads its whole head for the statistics (from
        # L2 after the first), instead of two more launches writing and reading them.
        total = tl.zeros([STATS_BLOCK, BLOCK_D], tl.float32)
        hi = tl.full([STATS_BLOCK, BLOCK_D], float("-inf"), tl.float32)
        lo = tl.full([STATS_BLOCK, BLOCK_D], float("inf"), tl.float32)
        for first in range(0, S, STATS_TOKENS):
            total, hi, lo = _accumulate_chunk(base, first, S, sx_s, sx_d, offs_d, d_ok, total, hi, lo,
                                              STATS_BLOCK, STATS_TOKENS)
        mean, scale, descale = _head_scales(tl.sum(total, 0), tl.max(hi, 0), tl.min(lo, 0), S, offs_d, D,
                                            SMOOTH, MODE == 2)
        if pid_s == 0:  # one program stores what the attention kernel reads
            if SMOOTH:
                _store_per_head(mean_ptr, pid_bh, offs_d, mean, BLOCK_D, True)
            if MODE != 1:
                _store_per_head(descale_ptr, pid_bh, offs_d, descale, BLOCK_D, MODE == 2)
    else:
        if SMOOTH:
            mean = tl.load(mean_ptr + pid_bh * BLOCK_D + offs_d)
        scale = _given_scale(scale_ptr, pid_bh, offs_d, MODE, BLOCK_D)
    offs_c = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)  # the tile's tokens, or a transposed copy's columns
    if LAYOUT == 0:
        offs_s = offs_c
        s_ok = offs_s < S
    else:
        # A transposed tile owns BLOCK_S columns of the copy, padding included, and gathers the
        # tokens stored there: rows of D contiguous elements load as fast in any order, and the
        # store runs along the columns. Storing a row-major tile column by column wrote single
        # bytes D * S_pad apart: 9x slower than a copy at 12x32760 (RESULTS.md, run 3).
        offs_s = (_mma_column_key(offs_c) if LAYOUT == 2 else offs_c) - key_pad
        s_ok = (offs_s >= 0) & (offs_s < S)  # padding columns are written as zeros
    ok = s_ok[:, None] & d_ok[None, :]
    src = base + offs_s[:, None].to(tl.int64) * sx_s + offs_d[None, :] * sx_d
    x = tl.load(src, mask=ok, other=0.0).to(tl.float32)
    if SMOOTH:
        x = tl.where(ok, x - mean[None, :], 0.0)  # padded channels stay exactly zero
    y = to_e4m3(_scale_tile_by(x, MODE, scale, descale_ptr, pid_bh, sds_bh, offs_s, s_ok), EMULATE_CAST)
    out = out_ptr + pid_bh.to(tl.int64) * so_bh
    if LAYOUT == 0:
        tl.store(out + offs_s[:, None].to(tl.int64) * so_s + offs_d[None, :] * so_d, y, mask=s_ok[:, None])
    else:  # so_s == 1, so_d is the row length: a multiple of 16, so the masked store is vectorized
        dst = out + offs_d[:, None].to(tl.int64) * so_d + offs_c[None, :]
        tl.store(dst, tl.trans(y), mask=(offs_c < so_d)[None, :])


@triton.jit
def _cast_kernel(
    x0, x1, x2, out0, out1, out2, mean0, mean1, mean2, scale0, scale1, scale2,
    descale0, descale1, descale2, S0, S1, S2, H,
    sb0, sh0, ss0, sd0, sb1, sh1, ss1, sd1, sb2, sh2, ss2, sd2,
    ob0, os0, od0, ob1, os1, od1, ob2, os2, od2, dsb0, dsb1, dsb2, kp0, kp1, kp2,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
    MODE0: tl.constexpr, MODE1: tl.constexpr, MODE2: tl.constexpr,
    SMOOTH0: tl.constexpr, SMOOTH1: tl.constexpr, SMOOTH2: tl.constexpr,
    LAYOUT0: tl.constexpr, LAYOUT1: tl.constexpr, LAYOUT2: tl.constexpr, EMULATE_CAST: tl.constexpr,
    OWN_STATS: tl.constexpr, STATS_BLOCK: tl.constexpr, STATS_TOKENS: tl.constexpr,
):
    """Per (batch*head, tile of BLOCK_S tokens, tensor): see _cast_one."""
    pid_bh = tl.program_id(0)
    pid_s = tl.program_id(1)
    slot = tl.program_id(2)
    if slot == 0:
        _cast_one(x0, out0, mean0, scale0, descale0, pid_bh, pid_s, S0, H, sb0, sh0, ss0, sd0,
                  ob0, os0, od0, dsb0, kp0, D, BLOCK_D, BLOCK_S, MODE0, SMOOTH0, LAYOUT0, EMULATE_CAST,
                  OWN_STATS, STATS_BLOCK, STATS_TOKENS)
    elif slot == 1:
        _cast_one(x1, out1, mean1, scale1, descale1, pid_bh, pid_s, S1, H, sb1, sh1, ss1, sd1,
                  ob1, os1, od1, dsb1, kp1, D, BLOCK_D, BLOCK_S, MODE1, SMOOTH1, LAYOUT1, EMULATE_CAST,
                  OWN_STATS, STATS_BLOCK, STATS_TOKENS)
    else:
        _cast_one(x2, out2, mean2, scale2, descale2, pid_bh, pid_s, S2, H, sb2, sh2, ss2, sd2,
                  ob2, os2, od2, dsb2, kp2, D, BLOCK_D, BLOCK_S, MODE2, SMOOTH2, LAYOUT2, EMULATE_CAST,
                  OWN_STATS, STATS_BLOCK, STATS_TOKENS)


def padded_head_dim(head_dim: int) -> int:
    """Head dim the kernels compute with: the next power of two, at least 32 (FP8 MMA's K step)."""
    return max(32, next_power_of_2(head_dim))


def _per_slot(values, fill) -> list:
    """Pad a per-tensor argument list to the kernels' three slots (unused slots are never read)."""
    values = list(values)
    return values + [fill] * (3 - len(values))


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def transposed_row_length(tokens: int, key_order: str = "natural") -> int:
    """Row length (token stride) of V's transposed e4m3 copy: ``tokens`` rounded up to 16, so
    that every row starts 16-byte aligned; for the "mma" key order, to whole key blocks."""
    return mma_row_length(tokens) if key_order == "mma" else _round_up(tokens, V_TOKEN_ALIGN)


class Quantized(NamedTuple):
    """An e4m3 copy, its fp32 descale, and the channel mean subtracted first (None unless smoothed)."""

    x8: torch.Tensor
    descale: torch.Tensor
    mean: torch.Tensor | None


class QuantizeJob(NamedTuple):
    """One tensor to quantize: a (B, H, S, D) view and how (see :func:`quantize_fp8`)."""

    x: torch.Tensor
    granularity: str
    smooth: bool = False
    transpose: bool = False
    key_order: str = "natural"  # of a transposed copy: one of KEY_ORDERS


def _out_layout(job: QuantizeJob) -> int:
    """The cast kernel's LAYOUT: 0 row-major, 1 transposed in natural key order, 2 in "mma" order."""
    return 1 + KEY_ORDERS.index(job.key_order) if job.transpose else 0


def quantize_many(jobs: Sequence[QuantizeJob], config: QuantizeConfig | None = None) -> list[Quantized]:
    """Quantize up to three tensors of one (B, H, *, D) shape family in at most three launches
    (statistics, finalize, cast), or one where no tensor has more than ``config.one_launch_tokens``
    tokens: there each cast program computes its head's statistics itself. Returns one
    :class:`Quantized` per job; shapes as :func:`quantize_fp8`, means (B, H, Dp) fp32.
    ``config``: tiles (default: the tuned ones)."""
    cfg = config or default_quantize_config()
    if cfg.cast_block % MMA_KEY_CHUNK:
        raise ValueError(f"cast_block must be a multiple of {MMA_KEY_CHUNK} (whole key chunks), got {cfg.cast_block}")
    if not 1 <= len(jobs) <= 3:
        raise ValueError(f"quantize_many takes 1 to 3 tensors, got {len(jobs)}")
    for job in jobs:
        if job.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {job.granularity!r}")
        if job.key_order not in KEY_ORDERS or (job.key_order == "mma" and not job.transpose):
            raise ValueError(f"key_order must be one of {KEY_ORDERS} ('mma' for transposed copies), "
                             f"got {job.key_order!r}")
    B, H, _, D = jobs[0].x.shape
    device = jobs[0].x.device
    own_stats = max(job.x.shape[2] for job in jobs) <= cfg.one_launch_tokens
    Dp = padded_head_dim(D)
    f32 = dict(device=device, dtype=torch.float32)
    outs, descales, means, scales, out_strides, descale_strides, key_pads = [], [], [], [], [], [], []
    for job in jobs:
        S = job.x.shape[2]
        key_pads.append(0)
        if job.transpose:
            s_pad = transposed_row_length(S, job.key_order)
            x8 = torch.empty(B, H, Dp, s_pad, device=device, dtype=torch.float8_e4m3fn)
            out_strides.append((Dp * s_pad, 1, s_pad))
            if job.key_order == "mma":
                # the padding keys lead, mixed into the first chunks; the cast writes them as
                # zeros (P is 0 there, and 0 * NaN would not be)
                key_pads[-1] = s_pad - S
        else:
            x8 = torch.empty(B, H, S, Dp, device=device, dtype=torch.float8_e4m3fn)
            out_strides.append((S * Dp, Dp, 1))
        outs.append(x8)
        if job.granularity == "token":
            # Rows padded to 16 floats so that the attention kernel's loads stay aligned.
            s_pad = _round_up(S, V_TOKEN_ALIGN)
            descales.append(torch.empty_strided((B, H, S), (H * s_pad, s_pad, 1), **f32))
            descale_strides.append(s_pad)
        else:
            shape = (B, H, Dp) if job.granularity == "channel" else (B, H)
            descales.append(torch.empty(shape, **f32))
            descale_strides.append(0)
        scales.append(None if job.granularity == "token" or own_stats else torch.empty_like(descales[-1]))
        means.append(torch.empty(B, H, Dp, **f32) if job.smooth else None)

    # Pass 1 and 2, for the tensors that need a whole-head reduction before their cast.
    stat_slots = [i for i, job in enumerate(jobs) if job.smooth or job.granularity != "token"]
    if stat_slots and not own_stats:
        _statistics(jobs, stat_slots, means, scales, descales, B, H, D, Dp, cfg)

    # Pass 3 (the only one with own_stats): the cast, every tensor in one launch.
    xs = [job.x for job in jobs]
    dummy = outs[0]  # a pointer for arguments that a slot's compile-time flags never read
    n_tiles = max(cdiv(x.shape[2] + pad, cfg.cast_block) for x, pad in zip(xs, key_pads))
    _cast_kernel[(B * H, n_tiles, len(jobs))](
        *_per_slot(xs, xs[0]), *_per_slot(outs, dummy),
        *_per_slot((dummy if m is None else m for m in means), dummy),
        *_per_slot((dummy if s is None else s for s in scales), dummy),
        *_per_slot(descales, dummy),
        *_per_slot((x.shape[2] for x in xs), 0), H,
        *[st for x in _per_slot(xs, xs[0]) for st in x.stride()],
        *[st for o in _per_slot(out_strides, (0, 0, 0)) for st in o],
        *_per_slot(descale_strides, 0), *_per_slot(key_pads, 0),
        D=D, BLOCK_D=Dp, BLOCK_S=cfg.cast_block,
        **{f"MODE{i}": GRANULARITIES.index(job.granularity) for i, job in enumerate(_per_slot(jobs, jobs[0]))},
        **{f"SMOOTH{i}": job.smooth for i, job in enumerate(_per_slot(jobs, jobs[0]))},
        **{f"LAYOUT{i}": _out_layout(job) for i, job in enumerate(_per_slot(jobs, jobs[0]))},
        EMULATE_CAST=interpreting(), OWN_STATS=own_stats, STATS_BLOCK=cfg.stats_block,
        STATS_TOKENS=cfg.stats_tokens, num_warps=cfg.cast_warps,
    )
    return [Quantized(*parts) for parts in zip(outs, descales, means)]


def _statistics(jobs, slots, means, scales, descales, B, H, D, Dp, cfg: QuantizeConfig):
    """Chunk statistics of the tensors in ``slots`` (one launch), then their per-head mean and
    scales (one launch), written into ``means``/``scales``/``descales``."""
    xs = [jobs[i].x for i in slots]
    lengths = [x.shape[2] for x in xs]
    max_chunks = max(cdiv(S, cfg.stats_tokens) for S in lengths)
    stats = torch.empty(len(slots), B * H, max_chunks, 3, Dp, device=xs[0].device, dtype=torch.float32)
    _channel_stats_kernel[(B * H, max_chunks, len(slots))](
        *_per_slot(xs, xs[0]), stats, *_per_slot(lengths, 0), H,
        *[st for x in _per_slot(xs, xs[0]) for st in x.stride()],
        D=D, BLOCK_D=Dp, BLOCK_S=cfg.stats_block, TOKENS=cfg.stats_tokens, num_warps=cfg.stats_warps,
    )
    chosen = [jobs[i] for i in slots]
    pick = lambda seq: _per_slot((seq[i] if seq[i] is not None else stats for i in slots), stats)  # noqa: E731
    _finalize_stats_kernel[(B * H, len(slots))](
        stats, *pick(means), *pick(scales), *pick(descales), *_per_slot(lengths, 1), max_chunks,
        D=D, BLOCK_D=Dp, BLOCK_C=cfg.finalize_chunks, STATS_TOKENS=cfg.stats_tokens,
        **{f"SMOOTH{i}": job.smooth for i, job in enumerate(_per_slot(chosen, chosen[0]))},
        **{f"PER_CHANNEL{i}": job.granularity == "channel" for i, job in enumerate(_per_slot(chosen, chosen[0]))},
        num_warps=cfg.finalize_warps,
    )


def quantize_fp8(
    x: torch.Tensor,
    granularity: str,
    smooth: bool = False,
    transpose: bool = False,
    key_order: str = "natural",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a (B, H, S, D) bf16/fp16 view to e4m3.

    Returns ``(x8, descale)``. ``x8`` is (B, H, S, Dp) contiguous, or with ``transpose`` (B, H, Dp,
    S_pad) with tokens contiguous, where Dp is :func:`padded_head_dim` and padded channels are
    zero; S_pad is :func:`transposed_row_length`: S rounded up to 16, or with ``key_order="mma"``
    the Gluon kernel's layout (see KEY_ORDERS); padding columns are zero.
    ``descale`` is fp32 of shape (B, H) for ``"head"``, (B, H, S) for ``"token"`` (rows 16-float
    aligned), (B, H, Dp) for ``"channel"``. ``smooth`` subtracts the per-(batch, head) channel
    mean over tokens before quantizing (the caller accounts for it).
    """
    return tuple(quantize_many([QuantizeJob(x, granularity, smooth, transpose, key_order)])[0][:2])
