"""FP8 attention forward for Hopper (sm_90) in Gluon, with FlashAttention-3's schedule.

Triton cannot express what makes FA3 fast (NOTES 23, 25): Triton 3.6 waits for Q K^T as soon as
it is issued, so the softmax never overlaps the tensor cores. Gluon, Triton's explicit dialect,
lets the kernel schedule its warps itself:

* a 1-warp producer partition streams K and V^T tiles (128 keys; per token also K's descales)
  by TMA into a two-stage ring, each slot with a ready and an empty mbarrier; per head at D = 128
  a key block is 192 keys, a 128-key and a 64-key tile under one online-softmax step
  (KEYS_PER_BLOCK: FA3's wide blocks, 224 keys, in Gluon's power-of-two tiles);
* two consumer partitions of one warpgroup each (64 query rows apiece, 128 per CTA; three at
  D = 64, 192 rows, as FA3: WARP_GROUPS), so that each waits on its own barriers only;
* in a consumer, block j's Q K^T and block j-1's P V are issued together and only Q K^T is
  awaited: block j's exp2s run while P V is on the tensor cores;
* a persistent grid (one CTA per SM looping over tiles, Q double-buffered) up to
  PERSISTENT_MAX_KEYS: the producer loads the next tile while the consumers finish this one;
* with QUANTIZE_Q the producer loads the caller's bf16/fp16 query rows instead and each consumer
  quantizes its 64 rows in the tile's prologue, one scale per row (calls with few keys: it
  spares them two passes over Q, most of their work);
* the output leaves through shared memory by TMA stores (OUTPUT_BY_TMA), asynchronous: the next
  tile starts while the rows are written (1.03-1.29x over plain stores, most with few keys);
* a call takes 192-key blocks only where padding its keys to them costs less than they gain
  (WIDE_KEY_COST: 512 and 1024 keys take 128-key blocks).

Numerics are the Triton kernel's (kernels/attention.py): s = Q8 K8^T * sm_scale * log2(e) *
q_descale * k_descale, exact running max, p = 256 * exp2(s - m) from one exp2 (FA3's offset), l
sums the unquantized p, acc += e4m3(p) @ V8 in FP8 with fp32 accumulators, out = acc / l *
v_descale (+ V's mean when it was smoothed). Scales are per (batch, head) for Q, K and V, or per
token for Q and K with per-channel V (``PER_TOKEN``): a query's descale rides on the exp2's FFMA
for free; a key's costs one multiply per score, as in the Triton kernel (NOTES 37, 46 and 48:
what was tried around it). A probe (``key_group``, NOTES 49) takes K's descales per group of 32
or 64 keys instead, one factor per group (offline, 473 loop instructions per block against per
token's 539 and per head's 458 with 128-key blocks; not yet run on a GPU). The results differ from the
Triton kernel's by fp32 rounding of the exp2's argument, not by e4m3 steps.

Layouts (from :func:`accel.kernels.quantize.quantize_many` with ``key_order="mma"`` for V):
Q8 and K8 (B, H, S, D) contiguous e4m3 (or Q as the caller's (B, H, S, D) view, 16-byte rows);
V^T (B, H, D, S_blocks) with S_blocks = Skv rounded up to 128, keys right-aligned (the first
S_blocks - Skv columns zero) and, within each 32-key chunk, in the order the P operand holds them
in registers (:func:`mma_key_order`). Key block 0 therefore starts (-Skv mod keys per block)
keys before the first key and is the only one masked (192-key blocks read V^T from a column
shifted by a multiple of 64, negative ones as zeros); Q rows past Sq are computed from whatever
lies there and never stored.

Runs where :func:`gluon_unavailable_reason` is None: an sm_90 GPU and a Triton it has been
tested with on a GPU (3.6; 3.7 to 3.9 compile it, see TESTED_TRITON), or any Triton from 3.6 on
when the caller allows (ACCEL_GLUON=1). Elsewhere the Triton kernel serves every call.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import triton

from .numerics import AMAX_EPS, E4M3_MAX, MMA_KEY_BLOCK, mma_row_length

try:  # Gluon is experimental: a missing or changed API must not break the Triton kernels' import.
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_init, warpgroup_mma_wait)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    # Names that changed after triton 3.6 (the GPU machine's), so that newer Triton compiles the
    # kernel too: the CTA-wide bar.sync and the TMA copies.
    _thread_barrier = getattr(gl, "thread_barrier", None) or gl.barrier
    _tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared
    _tma_store = tma.async_store if hasattr(tma, "async_store") else tma.async_copy_shared_to_global
    _IMPORT_ERROR: Exception | None = None
except Exception as exc:  # noqa: BLE001 - reported by gluon_unavailable_reason()
    _IMPORT_ERROR = exc

    class _NoGluon:  # lets the @gluon.jit definitions below be parsed; never called
        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

    gluon = _NoGluon()

LOG2E = math.log2(math.e)
# Jit functions read globals only as constexpr.
_AMAX_EPS = gl.constexpr(AMAX_EPS) if _IMPORT_ERROR is None else AMAX_EPS
_E4M3_MAX = gl.constexpr(E4M3_MAX) if _IMPORT_ERROR is None else E4M3_MAX
WG_M = 64  # query rows per consumer warpgroup
#: Keys per K / V^T tile. 256 spills 200 B and serializes the wgmmas (S 128 + P 32 + acc 64
#: registers of 240); Gluon's tiles are powers of two, so not FA3's 224 (NOTES 37).
BLOCK_N = MMA_KEY_BLOCK
TAIL_N = 64  # a wide key block's second tile
#: Keys per online-softmax step with per-head scales, by head dim: 192 is a 128-key and a 64-key
#: tile under one row max, one row sum and one accumulator rescale (FA3 takes 224-key blocks for
#: FP8 at D = 128). H200, D = 128, kernel only, 24x4608 to 40x75600: 1.02-1.10x the 128-key
#: blocks, 0.99-1.06x FA3 FP8 (NOTES 47; the probe's 0.7x of NOTES 45 was ptxas spilling for a
#: 16-divisible Skv). D = 64's three consumers (160 registers) have no room for 96 more scores.
KEYS_PER_BLOCK = {128: 192, 64: 128}
#: The same with per-token scales: 128 keys, since at 192 the key descales spill 1.5 KB (380 B
#: when PRELOAD_KEY_SCALES is off: 9-11% slower than 128 keys on an H200, NOTES 47).
KEYS_PER_BLOCK_TOKEN = {128: 128, 64: 128}
#: A wide block's time per key against a 128-key block's: a call takes the wide blocks unless
#: padding its keys to whole wide blocks costs more than that saves. H200, D = 128 per head,
#: kernel only: 192-key blocks 1.02-1.10x faster per key (NOTES 47), 0.94x at 512 keys (576
#: padded, NOTES 48), 1.02x at 2048 (2112 padded).
WIDE_KEY_COST = 0.95
#: Head dims dispatched here: both (H200, kernel only, per head / per token against the Triton
#: kernel: D = 128 1.14-1.26x / 1.10-1.25x, NOTES 31, 37; D = 64 with three consumer warpgroups
#: 1.00-1.25x / 1.01-1.30x, 0.90-0.95x FA3 FP8 per head, NOTES 44).
DISPATCHED_HEAD_DIMS = (64, 128)
#: Shorter key sequences take the Triton kernel (H200, 12x32760 queries, persistent grid: kernel
#: only, per head 1.05x the Triton kernel at 512 keys, 1.13x at 1024, NOTES 31-32; whole calls
#: per token, both kernels quantizing Q themselves, 1.11 / 1.05 / 1.36 / 1.01x at 512 / 1024 /
#: 2048 / 4096 keys, NOTES 43). Two key blocks at the very least.
MIN_KEYS = 512
#: Persistent grid up to this many keys; longer calls launch one CTA per tile (H200, per head,
#: D = 128, persistent against one CTA per tile: 1.30x at 512 keys, 1.04x at 4608, 1.00x at
#: 8192 and 16384, 1.02x at 32760, 0.97x at 75600, where CTAs drifting apart over ~180 tiles
#: each spread over more heads' K and V than L2 holds; NOTES 32).
PERSISTENT_MAX_KEYS = 32768
NUM_STAGES = 2  # K / V^T ring depth: 3 measured the same (NOTES 29), then up to 12% slower (NOTES 46)
#: Per token, whether a key block's descales are read from shared memory before its Q K^T is
#: issued (their latency hides under the wgmmas) or after it. H200, D = 128, kernel only: 1.00-
#: 1.01x at 24x4608-16384, 1.10x at 12x32760 (NOTES 46). 32 more live registers: at D = 64 (160
#: a thread) they spill 292 B and run 4-32% slower.
PRELOAD_KEY_SCALES = {128: True, 64: False}
#: smooth-V's mean read from shared memory in the epilogue (each consumer stores its tile's row
#: at the tile's start) or straight from global memory, by whether the key blocks are wide. From
#: global memory the wide blocks' main loop spilled 1 KB; from shared memory 128-key blocks ran
#: 15-22% slower per head (same loop SASS, not understood). H200, kernel only, against no
#: smooth-V: wide + shared 0.95-1.01x, 128 keys + global 0.98-1.02x (NOTES 47).
V_MEAN_IN_SHARED = {True: True, False: False}
#: The output leaves through shared memory by TMA stores (asynchronous: the next tile starts under
#: them) where the caller's view allows a TMA map, else by plain masked stores from registers.
#: H200, kernel only, D = 128: 1.29x the plain stores at 512 keys, 1.10x at 1024-2048, 1.03-1.06x
#: at 4608-32760 per head; 1.23x to 1.00x per token (NOTES 48).
OUTPUT_BY_TMA = True
#: Triton versions this kernel has run and been tested with on a GPU; others take the Triton
#: kernel unless ACCEL_GLUON=1. Triton 3.7, 3.8 and 3.9 (CI's) compile it too, 3.8 and 3.9 with
#: the same main loops within 4 SASS instructions (tests/test_gluon_compile.py, NOTES 49-50),
#: untried on a GPU.
TESTED_TRITON = ("3.6.",)
#: The oldest Triton whose Gluon API compiles the kernel (3.5's warp_specialize differs).
MIN_GLUON_TRITON = (3, 6)


class WarpGroups(NamedTuple):
    """How a CTA's warps and registers are split (setmaxnreg moves registers between warpgroups)."""

    consumers: int  # consumer warpgroups: 64 query rows each
    consumer_regs: int  # registers per thread of a consumer warpgroup
    maxnreg: int  # registers per thread at launch, across every warp

    @property
    def block_m(self) -> int:
        return WG_M * self.consumers


#: D = 128: 12 warps at 168 registers (384 x 168 = 64512), then the producer's warpgroup 24 and
#: each consumer 240, as FA3 does. D = 64: three consumers (192-row tiles, FA3's at D <= 64):
#: 16 warps at 128, then 24 and 160 (3 x 128 x 160 + 128 x 24 = 64512).
WARP_GROUPS = {128: WarpGroups(2, 240, 168), 64: WarpGroups(3, 160, 128)}
HEAD_DIMS = tuple(sorted(WARP_GROUPS))  # the kernel's; others take the Triton kernel


# --------------------------------------------------------------------------------------------
# Producer partition (1 warp): per tile, Q into one of two buffers, then K_j and V^T_j into the
# ring; it runs ahead across tiles, so the next tile's Q and first blocks land during this one.
# --------------------------------------------------------------------------------------------
@gluon.jit
def _load_key_block(g, j, kv_row, k_desc, kb_desc, kd_desc, k_bufs, kb_bufs, ks_bufs, k_ready, k_empty, bh, kd_pad,
                    PER_TOKEN: gl.constexpr, WIDE: gl.constexpr, KEY_GROUP: gl.constexpr):
    """K_j (with WIDE its 64-key tail too; per token its descales) into ring slot g % STAGES once
    the consumers freed it (empty barriers start with their previous phase complete: the first
    lap passes). K's row coordinate may be negative for block 0 (keys right-aligned): TMA fills
    zeros."""
    TILE_N: gl.constexpr = k_desc.block_type.shape[0]
    STAGES: gl.constexpr = k_bufs.type.shape[0]
    if WIDE:
        KEYS: gl.constexpr = TILE_N + kb_desc.block_type.shape[0]
        NBYTES: gl.constexpr = k_desc.block_type.nbytes + kb_desc.block_type.nbytes
    else:
        KEYS: gl.constexpr = TILE_N
        NBYTES: gl.constexpr = k_desc.block_type.nbytes
    stage = g % STAGES
    mbarrier.wait(k_empty.index(stage), ((g // STAGES) & 1) ^ 1)
    if PER_TOKEN:  # the block's key descales ride on K's barrier (zeros left of the first key)
        mbarrier.expect(k_ready.index(stage), NBYTES + kd_desc.block_type.nbytes)
        if KEY_GROUP:  # one box of 8 group descales a block
            kd_col = j * kd_desc.block_type.shape[1]
        else:
            kd_col = j * KEYS - kd_pad
        _tma_load(kd_desc, [bh, kd_col], k_ready.index(stage), ks_bufs.index(stage))
    else:
        mbarrier.expect(k_ready.index(stage), NBYTES)
    _tma_load(k_desc, [kv_row + j * KEYS, 0], k_ready.index(stage), k_bufs.index(stage))
    if WIDE:
        _tma_load(kb_desc, [kv_row + j * KEYS + TILE_N, 0], k_ready.index(stage), kb_bufs.index(stage))


@gluon.jit
def _load_value_block(g, j, vt_desc, vtb_desc, vt_bufs, vtb_bufs, v_ready, v_empty, bh, vt_shift,
                      WIDE: gl.constexpr):
    """V^T_j (with WIDE its 64-key tail too) into ring slot g % STAGES once the consumers freed it
    (separate barriers from K's: Q K^T of block j can start before V^T_j has landed). V^T is
    padded for 128-key blocks; a wide block's columns start vt_shift earlier (a multiple of 64:
    the 32-key mma-order chunks line up), block 0's negative columns read as zeros."""
    TILE_N: gl.constexpr = vt_desc.block_type.shape[1]
    HEAD_DIM: gl.constexpr = vt_desc.block_type.shape[0]
    STAGES: gl.constexpr = vt_bufs.type.shape[0]
    stage = g % STAGES
    mbarrier.wait(v_empty.index(stage), ((g // STAGES) & 1) ^ 1)
    if WIDE:
        KEYS: gl.constexpr = TILE_N + vtb_desc.block_type.shape[1]
        mbarrier.expect(v_ready.index(stage), vt_desc.block_type.nbytes + vtb_desc.block_type.nbytes)
        _tma_load(vt_desc, [bh * HEAD_DIM, j * KEYS - vt_shift], v_ready.index(stage), vt_bufs.index(stage))
        _tma_load(vtb_desc, [bh * HEAD_DIM, j * KEYS - vt_shift + TILE_N], v_ready.index(stage),
                  vtb_bufs.index(stage))
    else:
        mbarrier.expect(v_ready.index(stage), vt_desc.block_type.nbytes)
        _tma_load(vt_desc, [bh * HEAD_DIM, j * TILE_N], v_ready.index(stage), vt_bufs.index(stage))


@gluon.jit
def _producer(args, PER_TOKEN: gl.constexpr, QUANTIZE_Q: gl.constexpr, CONSUMERS: gl.constexpr, WIDE: gl.constexpr,
              KEY_GROUP: gl.constexpr):
    (q_desc, k_desc, kb_desc, vt_desc, vtb_desc, kd_desc, q_bufs, k_bufs, kb_bufs, vt_bufs, vtb_bufs, ks_bufs, q_ready,
     q_empty, k_ready, k_empty, v_ready, v_empty, Sq, Skv, H, n_m, n_tiles, n_blocks, key_pad, kd_pad, vt_shift) = args
    WG_M: gl.constexpr = q_desc.block_type.shape[-2]  # Q tiles: (64, D), or (1, 1, 64, D) from the caller's view
    i = 0  # this CTA's tiles so far: Q buffer i % 2; key blocks counted across tiles
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        bh = t // n_m
        qb = i % 2
        # Empty barriers start with their "previous phase" complete: the first lap (parity 1) passes.
        mbarrier.wait(q_empty.index(qb), ((i // 2) & 1) ^ 1)
        mbarrier.expect(q_ready.index(qb), CONSUMERS * q_desc.block_type.nbytes)  # one 64-row slab per consumer
        for c in gl.static_range(CONSUMERS):
            if QUANTIZE_Q:  # the caller's (B, H, Sq, D) view; rows past Sq arrive as zeros
                _tma_load(q_desc, [bh // H, bh % H, ((t % n_m) * CONSUMERS + c) * WG_M, 0],
                          q_ready.index(qb), q_bufs.index(CONSUMERS * qb + c))
            else:
                _tma_load(q_desc, [bh * Sq + ((t % n_m) * CONSUMERS + c) * WG_M, 0],
                          q_ready.index(qb), q_bufs.index(CONSUMERS * qb + c))
        kv_row = bh * Skv - key_pad
        base = i * n_blocks
        # K_j then V^T_j. K a block ahead of V^T (K_j before V^T_{j-1}) measured as fast at
        # D = 128 per head and up to 16% (head) / 28% (token) slower at D = 64 (NOTES 46).
        for j in range(n_blocks):
            _load_key_block(base + j, j, kv_row, k_desc, kb_desc, kd_desc, k_bufs, kb_bufs, ks_bufs, k_ready, k_empty,
                            bh, kd_pad, PER_TOKEN, WIDE, KEY_GROUP)
            _load_value_block(base + j, j, vt_desc, vtb_desc, vt_bufs, vtb_bufs, v_ready, v_empty, bh, vt_shift, WIDE)
        i += 1


# --------------------------------------------------------------------------------------------
# Consumer partitions (one warpgroup each): MMAs and the online softmax.
# --------------------------------------------------------------------------------------------
@gluon.jit
def _quantize_rows(src, dst, num_warps: gl.constexpr):
    """Q's bf16/fp16 slab ``src`` (64, D) in shared memory to e4m3 in ``dst`` (the wgmma's
    operand), one scale per row as the quantization kernels compute it (448 / amax, correctly
    rounded; 1 for an all-zero row, a NaN descale for a row holding Inf or NaN). Returns the rows'
    descales. Once per tile and warpgroup: it spares the call a statistics pass and a cast pass
    over Q, and the scores' row scale rides on the exp2's FFMA like a per-token query's. Costs
    (H200, NOTES 43): ~1.6 us a tile, on the tensor cores' path, and per head 3-6% more in long
    rows (the likely cause: the main loop's FFMAs read the scale from a regular register instead
    of a uniform one): a win up to ~2048 keys, a loss from 8192 (QUANTIZE_Q_IN_KERNEL_MAX_KEYS).
    A 2-warp quantizer partition a tile ahead (commit 09f2a85) measured slower still: 40
    registers, and its consumers capped at 232."""
    M: gl.constexpr = src.type.shape[0]
    D: gl.constexpr = src.type.shape[1]
    # A warp owns 16 whole rows (the wgmma layout's rows of that warp) as 4 rows x 8 threads x 8
    # channels (16-byte loads): a row's amax is 3 shuffles away.
    layout: gl.constexpr = gl.BlockedLayout(size_per_thread=[4, 8], threads_per_warp=[4, 8],
                                            warps_per_cta=[num_warps, 1], order=[1, 0])
    gl.static_assert(M == 16 * num_warps)
    x = src.load(layout).to(gl.float32)
    ax = gl.abs(x)
    # NaN compares false and Inf is not < Inf: rows with a non-finite entry get a NaN amax.
    n_bad = gl.sum((~(ax < float("inf"))).to(gl.int32), axis=1)
    amax = gl.where(n_bad > 0, float("nan"), gl.max(ax, axis=1))
    big = amax > _AMAX_EPS  # False for NaN too
    scale = gl.where(big, gl.div_rn(gl.zeros_like(amax) + _E4M3_MAX, amax), 1.0)
    descale = gl.where(big, gl.div_rn(amax, gl.zeros_like(amax) + _E4M3_MAX), 1.0)
    descale = gl.where(gl.abs(amax) < float("inf"), descale, float("nan"))
    dst.store((x * gl.expand_dims(scale, 1)).to(gl.float8e4nv))  # |x| * scale <= 448 (up to rounding: satfinite)
    fence_async_shared()  # the generic-proxy stores, visible to the wgmma's async proxy...
    _thread_barrier()  # ...from every warp of the warpgroup before any issues Q K^T
    return descale


@gluon.jit
def _fold(sa, sb, op: gl.constexpr):
    """A wide block's scores as one (64, 64) tensor in sb's layout: sa's two 64-key halves and sb
    combined by ``op`` ("max" or "sum") element-wise. Every value stays in its thread (the halves
    differ in one register bit), so one row reduction with its shuffles serves the 192 keys."""
    M: gl.constexpr = sa.shape[0]
    NB: gl.constexpr = sb.shape[1]
    lo, hi = gl.split(gl.permute(gl.reshape(sa, [M, 2, NB]), [0, 2, 1]))
    lo = gl.convert_layout(lo, sb.type.layout, assert_trivial=True)
    hi = gl.convert_layout(hi, sb.type.layout, assert_trivial=True)
    if op == "max":
        return gl.maximum(gl.maximum(lo, hi), sb)
    return lo + hi + sb


@gluon.jit
def _online_softmax(s, sb, m_i, l_i, qk_scale, ROW_SCALES: gl.constexpr, WIDE: gl.constexpr):
    """One key block of the online softmax in log2 units; the scale rides on the exp2's FFMA.
    p comes out times 256 (P_SCALE) as exp2(x + 8): no multiply per score (FA3's max_offset).
    ``qk_scale``: a scalar, or with ROW_SCALES one per row (the query descales folded in). With
    WIDE the block is ``s`` (128 keys) and ``sb`` (its 64-key tail) under one max and one sum;
    otherwise ``sb`` is unread and ``pb`` a placeholder.
    Each row's max and sum are one chain of dependent FMNMX / FADD per thread (Triton reduces in
    order, ptxas keeps it); shorter chains (the same ops as a tree) measured mixed, -9% to +3%
    per head at D = 128 and 4-19% slower per token at D = 64 (NOTES 46)."""
    row_s: gl.constexpr = m_i.type.layout
    if WIDE:
        m_blk = gl.convert_layout(gl.max(_fold(s, sb, "max"), axis=1), row_s, assert_trivial=True)
    else:
        m_blk = gl.max(s, axis=1)
    m_new = gl.maximum(m_i, m_blk * qk_scale)  # qk_scale > 0: max commutes with it
    if ROW_SCALES:
        p = gl.exp2(s * gl.expand_dims(qk_scale, 1) - gl.expand_dims(m_new - 8.0, 1))
    else:
        p = gl.exp2(s * qk_scale - gl.expand_dims(m_new - 8.0, 1))
    alpha = gl.exp2(m_i - m_new)  # first block: exp2(-inf) = 0, and l = acc = 0 anyway
    if WIDE:
        row_b: gl.constexpr = gl.SliceLayout(1, sb.type.layout)
        if ROW_SCALES:
            scale_b = gl.expand_dims(gl.convert_layout(qk_scale, row_b, assert_trivial=True), 1)
        else:
            scale_b = qk_scale
        pb = gl.exp2(sb * scale_b - gl.expand_dims(gl.convert_layout(m_new - 8.0, row_b, assert_trivial=True), 1))
        l_blk = gl.convert_layout(gl.sum(_fold(p, pb, "sum"), axis=1), row_s, assert_trivial=True)
    else:
        pb = 0.0
        l_blk = gl.sum(p, axis=1)
    l_i = l_i * alpha + l_blk  # the row sum uses unquantized P
    return p, pb, alpha, l_i, m_new


@gluon.jit
def _group_view(s, GROUP: gl.constexpr):
    """Scores (M, N) as (M, N // GROUP, GROUP // 8, 4, 2): (row, key group, the thread's 8-key
    chunk within it, quad lane, pair), since thread t of a quad holds keys 8i + 2t + e (see
    :func:`_p_operand`). Axes 2 and 4 lie in a thread's registers: reductions over them take no
    shuffles."""
    M: gl.constexpr = s.shape[0]
    N: gl.constexpr = s.shape[1]
    return gl.reshape(s, [M, N // GROUP, GROUP // 8, 4, 2])


@gluon.jit
def _group_factor_layout(s_init, GROUP: gl.constexpr):
    """A (M, groups) tensor in the layout of a block's per-(row, key group) factors (traced for its
    type only: the compiler drops it)."""
    return gl.max(gl.max(gl.max(_group_view(s_init, GROUP), axis=4), axis=2), axis=2)


@gluon.jit
def _grouped_max(s, kg, qk_scale, GROUP: gl.constexpr):
    """With one key descale per group of GROUP keys (``kg``, (1, the block's groups)): the scores in
    groups (s5), each (row, group)'s exp2 factor f = query scale x group's key descale, and each
    row's max of s x f. The max scales the thread's in-thread partial max of each group (one
    FMUL per row and group) instead of every score (one FMUL each, per token)."""
    s5 = _group_view(s, GROUP)
    pm = gl.max(gl.max(s5, axis=4), axis=2)  # (M, groups, lanes): in-thread
    f_layout: gl.constexpr = gl.SliceLayout(2, pm.type.layout)
    f = gl.expand_dims(gl.convert_layout(qk_scale, gl.SliceLayout(1, f_layout)), 1) * kg
    m = gl.max(gl.max(pm * gl.expand_dims(f, 2), axis=1), axis=1)
    return s5, f, m


@gluon.jit
def _grouped_exp2(s5, f, m_new, s):
    """exp2(s x f - (m - 8)) for the grouped scores s5 (one FFMA per score, f per row and group),
    back in the layout of the scores ``s``."""
    L5: gl.constexpr = s5.type.layout
    row5: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(1, gl.SliceLayout(1, gl.SliceLayout(1, L5))))
    m5 = gl.convert_layout(m_new - 8.0, row5, assert_trivial=True)
    m5 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.expand_dims(m5, 1), 1), 1), 1)
    f5 = gl.expand_dims(gl.expand_dims(gl.expand_dims(f, 2), 2), 4)
    p5 = gl.exp2(s5 * f5 - m5)
    M: gl.constexpr = s5.shape[0]
    N: gl.constexpr = s5.shape[1] * s5.shape[2] * 8
    return gl.convert_layout(gl.reshape(p5, [M, N]), s.type.layout, assert_trivial=True)


@gluon.jit
def _online_softmax_grouped(s, kg, m_i, l_i, qk_scale, GROUP: gl.constexpr):
    """:func:`_online_softmax` (128-key blocks) with key descales per group of GROUP keys (``kg``)
    and per-row query scales (``qk_scale``); pb is a placeholder."""
    s5, f, m_blk = _grouped_max(s, kg, qk_scale, GROUP)
    m_new = gl.maximum(m_i, gl.convert_layout(m_blk, m_i.type.layout, assert_trivial=True))
    p = _grouped_exp2(s5, f, m_new, s)
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, 0.0, alpha, l_i, m_new


@gluon.jit
def _group_descales(ring, stage, s_init, GROUP: gl.constexpr):
    """The key-group descales of the block in ring slot ``stage`` (staged by TMA with K, a row of
    8 floats a block) as a (1, groups) row in the layout of :func:`_grouped_max`'s factors. From
    shared memory: loaded from global memory (64-bit addresses per value) they spilled 1 KB."""
    G: gl.constexpr = s_init.shape[1] // GROUP
    return ring[4].index(stage).slice(0, G, dim=1).load(_group_factor_layout(s_init, GROUP).type.layout)


@gluon.jit
def _p_operand(p, p_layout: gl.constexpr):
    """P (at most 256: no saturation) as the e4m3 register A operand of the P V wgmma.

    The scores' accumulator layout gives thread t of a quad the keys {8i + 2t + e} of each 32-key
    chunk; the fp8 A operand wants k = {4t + e4 + 16c}. Read column k of P as key
    pi(k) = 16c + 8(e4 // 2) + 2t + e4 % 2 and every value stays in its thread (no shuffles,
    checked by assert_trivial); V^T's keys are stored in that order (mma_key_order), so P V is
    unchanged. In bits, k = (c, t1, t0, h, l) reads key (c, h, t1, t0, l): a reshape and a
    transpose. This removed 48 of 500 instructions per key block and gave +8-10% (NOTES 29)."""
    p8 = p.to(gl.float8e4nv)
    M: gl.constexpr = p8.shape[0]
    N: gl.constexpr = p8.shape[1]
    p8 = gl.reshape(gl.permute(gl.reshape(p8, [M, N // 32, 2, 2, 2, 2, 2]), [0, 1, 2, 4, 5, 3, 6]), [M, N])
    return gl.convert_layout(p8, p_layout, assert_trivial=True)


@gluon.jit
def _scores(q_smem, ring, stage, s_init, sb_init, WIDE: gl.constexpr):
    """Issue S = Q K^T of the block in ring slot ``stage`` (with WIDE two wgmmas: 128 keys and the
    64-key tail); returns (s, sb), sb = s_init unread when not WIDE."""
    k_bufs, kb_bufs = ring[0], ring[1]
    s = warpgroup_mma(q_smem, k_bufs.index(stage).permute((1, 0)), s_init, use_acc=False, is_async=True)
    if WIDE:
        sb = warpgroup_mma(q_smem, kb_bufs.index(stage).permute((1, 0)), sb_init, use_acc=False, is_async=True)
    else:
        sb = sb_init
    return s, sb


@gluon.jit
def _p_operands(p, pb, p_layout: gl.constexpr, WIDE: gl.constexpr):
    """P (and with WIDE its 64-key tail) as e4m3 A operands of P V (pb8 = p8 when not WIDE)."""
    p8 = _p_operand(p, p_layout)
    if WIDE:
        pb8 = _p_operand(pb, p_layout)
    else:
        pb8 = p8
    return p8, pb8


@gluon.jit
def _pv(acc, p8, pb8, ring, stage, WIDE: gl.constexpr):
    """Issue acc += P V of the block in ring slot ``stage``."""
    vt_bufs, vtb_bufs = ring[2], ring[3]
    acc = warpgroup_mma(p8, vt_bufs.index(stage).permute((1, 0)), acc, is_async=True)
    if WIDE:
        acc = warpgroup_mma(pb8, vtb_bufs.index(stage).permute((1, 0)), acc, is_async=True)
    return acc


@gluon.jit
def _key_scales(ring, stage, s_init, sb_init, WIDE: gl.constexpr):
    """Per token, the key descales of the block in ring slot ``stage`` as (1, keys) rows in the
    layouts of the scores ``s_init`` and ``sb_init`` (broadcast over the query rows): (ks, ksb),
    ksb = ks when not WIDE."""
    ks_bufs = ring[4]
    TILE_N: gl.constexpr = ring[0].type.shape[1]
    ks = ks_bufs.index(stage).slice(0, TILE_N, dim=1).load(s_init.type.layout)
    if WIDE:
        ksb = ks_bufs.index(stage).slice(TILE_N, ring[1].type.shape[1], dim=1).load(sb_init.type.layout)
    else:
        ksb = ks
    return ks, ksb


@gluon.jit
def _kv_step(j, g, acc, p, pb, alpha, l_i, m_i, q_smem, ring, s_init, sb_init, qk_scale,
             p_layout: gl.constexpr, row_o: gl.constexpr, PER_TOKEN: gl.constexpr, ROW_SCALES: gl.constexpr,
             PRELOAD_KEY_SCALES: gl.constexpr, WIDE: gl.constexpr, KEY_GROUP: gl.constexpr):
    """Key block j of the tile (g: its number across this CTA's tiles, which picks the ring slot
    and phase): finish block j-1 (retire P_{j-2} V_{j-2}, rescale, quantize P_{j-1}), then run
    S_j = Q K_j^T and acc += P_{j-1} V_{j-1} together; returns with P_{j-1} V_{j-1} in flight.
    ``ring``: (k_bufs, kb_bufs, vt_bufs, vtb_bufs, ks_bufs, k_ready, k_empty, v_ready, v_empty)."""
    k_ready, k_empty, v_ready, v_empty = ring[5], ring[6], ring[7], ring[8]
    STAGES: gl.constexpr = k_ready.type.shape[0]
    stage = g % STAGES
    prev = (g - 1) % STAGES
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    # V^T_{j-2}'s slot is free once P_{j-2} V_{j-2} has retired (no P V before j = 2).
    mbarrier.arrive(v_empty.index((g - 2 + STAGES) % STAGES), count=1, pred=j >= 2)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
    p8, pb8 = _p_operands(p, pb, p_layout, WIDE)
    # Early Q K^T: block j's scores are issued before block j-1's P V, back to back.
    mbarrier.wait(k_ready.index(stage), (g // STAGES) & 1)
    if KEY_GROUP:  # one descale per key group, staged with K_j: read before the wgmmas
        kg = _group_descales(ring, stage, s_init, KEY_GROUP)
    elif PER_TOKEN and PRELOAD_KEY_SCALES:  # read before the wgmmas: the loads' latency hides under them
        ks, ksb = _key_scales(ring, stage, s_init, sb_init, WIDE)
    s, sb = _scores(q_smem, ring, stage, s_init, sb_init, WIDE)
    mbarrier.wait(v_ready.index(prev), ((g - 1) // STAGES) & 1)
    acc = _pv(acc, p8, pb8, ring, prev, WIDE)
    # wgmma groups retire in order: with P V's one or two outstanding, S_j is done and P V keeps
    # running under the softmax below.
    if WIDE:
        s, sb = warpgroup_mma_wait(num_outstanding=2, deps=(s, sb))
    else:
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s, ))
    if PER_TOKEN and not KEY_GROUP:  # block j's key descales, staged with K_j (read before K_j's slot is given back)
        if not PRELOAD_KEY_SCALES:
            ks, ksb = _key_scales(ring, stage, s_init, sb_init, WIDE)
        s = s * ks
        if WIDE:
            sb = sb * ksb
    mbarrier.arrive(k_empty.index(stage), count=1)  # K_j is read: the producer may refill its slot
    if KEY_GROUP:
        p, pb, alpha, l_i, m_i = _online_softmax_grouped(s, kg, m_i, l_i, qk_scale, KEY_GROUP)
    else:
        p, pb, alpha, l_i, m_i = _online_softmax(s, sb, m_i, l_i, qk_scale, ROW_SCALES, WIDE)
    return acc, p, pb, alpha, l_i, m_i


@gluon.jit
def _consumer(args, HAS_V_MEAN: gl.constexpr, PER_TOKEN: gl.constexpr, QUANTIZE_Q: gl.constexpr,
              CONSUMERS: gl.constexpr, PRELOAD_KEY_SCALES: gl.constexpr, WIDE: gl.constexpr,
              V_MEAN_IN_SHARED: gl.constexpr, OUT_TMA: gl.constexpr, KEY_GROUP: gl.constexpr, num_warps: gl.constexpr,
              WG: gl.constexpr):
    """Consumer warpgroup WG of CONSUMERS: for each of the CTA's tiles, query rows 64 WG + [0, 64)
    of the tile against every key block of its head. Descales per head, or with PER_TOKEN per query, key and channel;
    with QUANTIZE_Q the warpgroup quantizes its bf16/fp16 query rows itself, one scale per row,
    into its own e4m3 buffer ``q8_bufs[WG]``. With WIDE a key block is 128 + 64 keys (two wgmmas
    each way, one online-softmax step). ``args``: the kernel's buffers, barriers and runtime
    scalars, unpacked below. With OUT_TMA the tile's rows leave by a TMA store from ``o_bufs[WG]``."""
    (q_bufs, q8_bufs, k_bufs, kb_bufs, vt_bufs, vtb_bufs, ks_bufs, vm_bufs, o_bufs, q_ready, q_empty, k_ready, k_empty,
     v_ready, v_empty, out_ptr, out_desc, v_mean_ptr, q_descale_ptr, k_descale_ptr, v_descale_ptr, sqd_bh, so_b, so_h,
     so_s, H, Sq, n_m, n_tiles, n_blocks, key_pad, sm_scale_log2) = args
    ring = (k_bufs, kb_bufs, vt_bufs, vtb_bufs, ks_bufs, k_ready, k_empty, v_ready, v_empty)
    TILE_M: gl.constexpr = q8_bufs.type.shape[1]
    HEAD_DIM: gl.constexpr = q8_bufs.type.shape[2]
    ROW_SCALES: gl.constexpr = PER_TOKEN or QUANTIZE_Q  # qk_scale: one per query row
    TILE_N: gl.constexpr = k_bufs.type.shape[1]
    STAGES: gl.constexpr = k_bufs.type.shape[0]
    gl.static_assert(TILE_M == 16 * num_warps, "one 64-row slab per consumer warpgroup")

    # warps_per_cta [4, 1]: the warpgroup's 64 rows are whole rows of its warps, so row max and
    # row sum stay inside a warp. instr_shape: m16, n = the whole tile, k = 32 (e4m3).
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, TILE_N, 32])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=4)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    col_o: gl.constexpr = gl.SliceLayout(0, o_layout)
    cols = gl.arange(0, TILE_N, layout=gl.SliceLayout(0, s_layout))
    d = gl.arange(0, HEAD_DIM, layout=col_o)
    s_init = gl.zeros([TILE_M, TILE_N], gl.float32, s_layout)  # ignored: use_acc=False
    vm_layout: gl.constexpr = gl.BlockedLayout([1], [32], [num_warps], [0])
    if WIDE:  # the 64-key tail's scores
        TAIL_N: gl.constexpr = kb_bufs.type.shape[1]
        sb_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                            instr_shape=[16, TAIL_N, 32])
        cols_b = TILE_N + gl.arange(0, TAIL_N, layout=gl.SliceLayout(0, sb_layout))
        sb_init = gl.zeros([TILE_M, TAIL_N], gl.float32, sb_layout)
    else:
        sb_init = s_init  # unread

    i = 0  # this CTA's tiles so far (as the producer counts them)
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        bh = t // n_m
        row0 = ((t % n_m) * CONSUMERS + WG) * TILE_M  # this warpgroup's first query row
        qb = i % 2
        base = i * n_blocks  # key block 0's number across the CTA's tiles
        if HAS_V_MEAN and V_MEAN_IN_SHARED:
            vm_smem = vm_bufs.index(WG)
            _thread_barrier()  # every thread has read the previous tile's
            vm_smem.store(gl.load(v_mean_ptr + bh * HEAD_DIM + gl.arange(0, HEAD_DIM, layout=vm_layout)))
            _thread_barrier()
        if QUANTIZE_Q:  # rows past Sq arrived as zeros: descale 1
            q_smem = q8_bufs.index(WG)  # free: the previous tile's wgmmas have all retired
            mbarrier.wait(q_ready.index(qb), (i // 2) & 1)
            src = q_bufs.index(CONSUMERS * qb + WG)
            q_descale = _quantize_rows(src.reshape([TILE_M, HEAD_DIM]), q_smem, num_warps)
            mbarrier.arrive(q_empty.index(qb), count=1)  # the slab is read: the producer may refill it
            if PER_TOKEN:
                qk_scale = gl.convert_layout(q_descale, row_s) * sm_scale_log2
            else:  # the Triton kernel's order of fp32 products
                qk_scale = gl.convert_layout(q_descale, row_s) * (sm_scale_log2 * gl.load(k_descale_ptr + bh))
        else:
            q_smem = q_bufs.index(CONSUMERS * qb + WG)
            if PER_TOKEN:  # one query descale per row, folded into the exp2's scale; rows past Sq: 1
                rows = row0 + gl.arange(0, TILE_M, layout=row_s)
                qk_scale = gl.load(q_descale_ptr + bh.to(gl.int64) * sqd_bh + rows, mask=rows < Sq, other=1.0)
                qk_scale = qk_scale * sm_scale_log2
            else:
                qk_scale = sm_scale_log2 * gl.load(q_descale_ptr + bh) * gl.load(k_descale_ptr + bh)
        m_i = gl.full([TILE_M], float("-inf"), gl.float32, row_s)
        l_i = gl.zeros([TILE_M], gl.float32, row_s)
        acc = gl.zeros([TILE_M, HEAD_DIM], gl.float32, o_layout)

        # Stage 0 - prologue: S_0 and its softmax; block 0 holds the key_pad padding columns (keys
        # are right-aligned), the one mask of the kernel, outside the loop.
        stage0 = base % STAGES
        if not QUANTIZE_Q:
            mbarrier.wait(q_ready.index(qb), (i // 2) & 1)
        mbarrier.wait(k_ready.index(stage0), (base // STAGES) & 1)
        s, sb = _scores(q_smem, ring, stage0, s_init, sb_init, WIDE)
        if WIDE:
            s, sb = warpgroup_mma_wait(num_outstanding=0, deps=(s, sb))
        else:
            s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
        if KEY_GROUP:  # read before K_0's slot is given back; padding groups' are 1 (-inf stays -inf)
            kg = _group_descales(ring, stage0, s_init, KEY_GROUP)
        elif PER_TOKEN:
            ks, ksb = _key_scales(ring, stage0, s_init, sb_init, WIDE)
            s = s * ks
            if WIDE:
                sb = sb * ksb
        mbarrier.arrive(k_empty.index(stage0), count=1)  # one elected thread per consumer: count 2
        s = gl.where(gl.expand_dims(cols >= key_pad, 0), s, float("-inf"))
        if WIDE:
            sb = gl.where(gl.expand_dims(cols_b >= key_pad, 0), sb, float("-inf"))
        if KEY_GROUP:
            p, pb, alpha, l_i, m_i = _online_softmax_grouped(s, kg, m_i, l_i, qk_scale, KEY_GROUP)
        else:
            p, pb, alpha, l_i, m_i = _online_softmax(s, sb, m_i, l_i, qk_scale, ROW_SCALES, WIDE)
        acc = warpgroup_mma_init(acc)  # the loop carries acc as an in-flight wgmma accumulator

        # Stage 1 - steady state, rotated: P V's wait_group 0 opens the next iteration, across the
        # back edge from block j's exp2s (in one basic block ptxas hoisted it above the exps).
        # Block 1 is peeled (n_blocks >= 2): without it ptxas serializes every wgmma of a worker
        # partition ("C7512 ... insufficient register resources"); peeled, the loop is entered or
        # skipped with P V in flight on both paths.
        acc, p, pb, alpha, l_i, m_i = _kv_step(1, base + 1, acc, p, pb, alpha, l_i, m_i, q_smem, ring, s_init,
                                               sb_init, qk_scale, p_layout, row_o, PER_TOKEN, ROW_SCALES,
                                               PRELOAD_KEY_SCALES, WIDE, KEY_GROUP)
        for j in range(2, n_blocks):
            acc, p, pb, alpha, l_i, m_i = _kv_step(j, base + j, acc, p, pb, alpha, l_i, m_i, q_smem, ring, s_init,
                                                   sb_init, qk_scale, p_layout, row_o, PER_TOKEN, ROW_SCALES,
                                                   PRELOAD_KEY_SCALES, WIDE, KEY_GROUP)
        if not QUANTIZE_Q:  # every Q K^T of the tile has retired: the producer may load the tile after next's Q
            mbarrier.arrive(q_empty.index(qb), count=1)

        # Stage 2 - drain: retire P_{n-2} V_{n-2}, then the last block's P V. V's descales are
        # read first: their global-load latency hides under the wgmmas, not before the stores.
        if PER_TOKEN:  # per-channel V
            v_scale = gl.expand_dims(gl.load(v_descale_ptr + bh * HEAD_DIM + d), 0)
        else:
            v_scale = gl.load(v_descale_ptr + bh)
        last = base + n_blocks - 1
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        mbarrier.arrive(v_empty.index((last - 1) % STAGES), count=1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
        p8, pb8 = _p_operands(p, pb, p_layout, WIDE)
        mbarrier.wait(v_ready.index(last % STAGES), (last // STAGES) & 1)
        acc = _pv(acc, p8, pb8, ring, last % STAGES, WIDE)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        mbarrier.arrive(v_empty.index(last % STAGES), count=1)

        # Stage 3 - epilogue: normalize, descale V, add V's mean, store the rows that exist into
        # the caller's (B, S, H, D) or (B, H, S, D) view.
        inv_l = 1.0 / gl.convert_layout(l_i, row_o)
        if PER_TOKEN:
            out = acc * gl.expand_dims(inv_l, 1) * v_scale
        else:
            out = acc * gl.expand_dims(v_scale * inv_l, 1)
        if HAS_V_MEAN:
            if V_MEAN_IN_SHARED:
                out = out + gl.expand_dims(vm_smem.load(col_o), 0)
            else:
                out = out + gl.expand_dims(gl.load(v_mean_ptr + bh * HEAD_DIM + d), 0)
        if OUT_TMA:  # asynchronous: the next tile starts while the rows leave (TMA clips rows past Sq)
            o_smem = o_bufs.index(WG)
            tma.store_wait(0)  # the previous tile's store has read the buffer (its issuing thread waits)...
            _thread_barrier()  # ...before any thread of the warpgroup overwrites it
            o_smem.reshape([TILE_M, HEAD_DIM]).store(out.to(out_desc.dtype))
            fence_async_shared()  # the generic-proxy stores, visible to the TMA's async proxy...
            _thread_barrier()  # ...from every warp before the store is issued
            _tma_store(out_desc, [bh // H, bh % H, row0, 0], o_smem)
        else:  # plain masked stores
            row = row0 + gl.arange(0, TILE_M, layout=row_o)
            o_ptr = out_ptr + (bh // H).to(gl.int64) * so_b + (bh % H).to(gl.int64) * so_h
            ptrs = o_ptr + gl.expand_dims(row.to(gl.int64) * so_s, 1) + gl.expand_dims(d, 0)
            gl.store(ptrs, out.to(out_ptr.dtype.element_ty), mask=gl.expand_dims(row < Sq, 1))
        i += 1
    if OUT_TMA:
        tma.store_wait(0)  # the last store has read shared memory before the CTA exits


@gluon.jit
def _allocate_barriers(STAGES: gl.constexpr, CONSUMERS: gl.constexpr):
    """The mbarriers of a CTA, initialized: (ready, empty) for Q's two buffers, then for K's and
    V^T's STAGES ring slots. Ready: the producer's expect plus the TMA bytes. Empty: Gluon lowers
    mbarrier.arrive to one elected thread after a bar.sync of its partition, so each of the
    CONSUMERS warpgroups arrives once."""
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=CONSUMERS)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=CONSUMERS)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=CONSUMERS)
    fence_async_shared()  # barrier inits visible to the async proxy (TMA) before first use
    return q_ready, q_empty, k_ready, k_empty, v_ready, v_empty


@gluon.jit(do_not_specialize_on_alignment=["Skv"])  # a 16-divisible Skv spilled 588 B (NOTES 47)
def _gluon_attention_kernel(q_desc, k_desc, kb_desc, vt_desc, vtb_desc, kd_desc, out_ptr, out_desc, q_descale_ptr,
                            k_descale_ptr, v_descale_ptr, v_mean_ptr, sm_scale_log2, Sq, Skv, H, BH, so_b, so_h, so_s,
                            sqd_bh, kd_pad, HAS_V_MEAN: gl.constexpr, PER_TOKEN: gl.constexpr,
                            QUANTIZE_Q: gl.constexpr, Q8_LAYOUT: gl.constexpr, STAGES: gl.constexpr,
                            CONSUMERS: gl.constexpr, CONSUMER_REGS: gl.constexpr, PRELOAD_KEY_SCALES: gl.constexpr,
                            WIDE: gl.constexpr, V_MEAN_IN_SHARED: gl.constexpr, OUT_TMA: gl.constexpr,
                            KEY_GROUP: gl.constexpr, num_warps: gl.constexpr):
    """Persistent: grid (min(tiles, SMs),), tile t = 64 CONSUMERS query rows t % n_m of head
    t // n_m (a wave of CTAs shares few heads' K and V in L2). Q8 / K8 as (B*H*S, D) rows, V^T as (B*H*D,
    S_blocks) rows. Descales fp32: (B*H,) each, or with PER_TOKEN Q's rows of (B*H, *) with
    stride sqd_bh, K's by TMA (kd_desc: 1 x TILE_N boxes, 1 x 256 with WIDE, of (B*H, ...) rows
    whose key 0 is column kd_pad; per head any descriptor, unread) and V's (B*H, D); v_mean fp32 (B*H, D) if
    HAS_V_MEAN; out a (B, H, Sq, D) view with unit last stride. QUANTIZE_Q: q_desc maps the
    caller's bf16/fp16 (B, H, Sq, D) view in (1, 1, 64, D) boxes instead, q_descale_ptr is
    unread, and the consumers quantize each row (Q8_LAYOUT: their e4m3 buffers' layout).
    WIDE: key blocks of 192 keys, K and V^T in 128-key boxes (k_desc, vt_desc) and 64-key ones
    (kb_desc, vtb_desc; without WIDE any descriptors, unread); V^T keeps its 128-key padding.
    OUT_TMA: out_desc maps ``out`` in (1, 1, 64, D) boxes and the consumers store through shared
    memory by TMA (otherwise any descriptor, unread, and plain stores through out_ptr).
    num_warps = 4: the default partition is consumer warpgroup 0; CONSUMER_REGS: the registers
    setmaxnreg gives each consumer warpgroup."""
    WG_M: gl.constexpr = q_desc.block_type.shape[-2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[-1]
    TILE_N: gl.constexpr = k_desc.block_type.shape[0]
    gl.static_assert(WG_M == 64)
    gl.static_assert(vt_desc.block_type.shape[0] == HEAD_DIM)
    gl.static_assert(vt_desc.block_type.shape[1] == TILE_N)

    n_m = gl.cdiv(Sq, CONSUMERS * WG_M)
    n_tiles = n_m * BH
    if WIDE:
        KEYS: gl.constexpr = TILE_N + kb_desc.block_type.shape[0]
        gl.static_assert(vtb_desc.block_type.shape[1] == kb_desc.block_type.shape[0])
    else:
        KEYS: gl.constexpr = TILE_N
    n_blocks = gl.cdiv(Skv, KEYS)
    key_pad = n_blocks * KEYS - Skv  # padding columns before the first key (block 0's mask)
    vt_shift = key_pad - (gl.cdiv(Skv, TILE_N) * TILE_N - Skv)  # V^T is padded for 128-key blocks

    # Shared memory at D = 128: Q 2 tiles x 2 x 8 KB (QUANTIZE_Q: 2 x 2 x 16 KB of bf16, and 2 x
    # 8 KB of e4m3) + STAGES x (K 16 KB + V^T 16 KB (+ K descales 512 B)), with WIDE x 3/2 (K
    # descales 1 KB); at D = 64 half, x 3/2 for Q.
    q_bufs = gl.allocate_shared_memory(q_desc.dtype, [2 * CONSUMERS] + q_desc.block_type.shape, q_desc.layout)
    if QUANTIZE_Q:
        q8_bufs = gl.allocate_shared_memory(gl.float8e4nv, [CONSUMERS, WG_M, HEAD_DIM], Q8_LAYOUT)
    else:
        q8_bufs = q_bufs  # unread: the consumers take their e4m3 Q from q_bufs
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    vt_bufs = gl.allocate_shared_memory(vt_desc.dtype, [STAGES] + vt_desc.block_type.shape, vt_desc.layout)
    if WIDE:
        kb_bufs = gl.allocate_shared_memory(kb_desc.dtype, [STAGES] + kb_desc.block_type.shape, kb_desc.layout)
        vtb_bufs = gl.allocate_shared_memory(vtb_desc.dtype, [STAGES] + vtb_desc.block_type.shape, vtb_desc.layout)
    else:
        kb_bufs = k_bufs  # unread
        vtb_bufs = vt_bufs  # unread
    if HAS_V_MEAN and V_MEAN_IN_SHARED:  # one row per consumer warpgroup
        vm_bufs = gl.allocate_shared_memory(gl.float32, [CONSUMERS, HEAD_DIM],
                                            gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0]))
    else:
        vm_bufs = k_bufs  # unread
    # key groups with 192-key blocks: 0.5-1.2 KB of spills in the main loop (NOTES 49)
    gl.static_assert(not (KEY_GROUP and WIDE))
    if PER_TOKEN:  # the key descales of a block (per key, or 8 key-group ones)
        gl.static_assert(kd_desc.block_type.shape[1] >= KEYS or KEY_GROUP > 0)
        ks_bufs = gl.allocate_shared_memory(kd_desc.dtype, [STAGES] + kd_desc.block_type.shape, kd_desc.layout)
    else:
        ks_bufs = k_bufs  # unread
    if OUT_TMA:  # one (1, 1, 64, D) output box per consumer warpgroup
        o_bufs = gl.allocate_shared_memory(out_desc.dtype, [CONSUMERS] + out_desc.block_type.shape, out_desc.layout)
    else:
        o_bufs = k_bufs  # unread
    q_ready, q_empty, k_ready, k_empty, v_ready, v_empty = _allocate_barriers(STAGES, CONSUMERS)

    # Worker partitions take scalars, pointers and shared-memory / TMA descriptors, no register
    # tensors. Worker warps and registers are literals: the other consumer warpgroups (4 warps,
    # CONSUMER_REGS registers) and the producer (1 warp, 24); the default partition keeps what
    # they leave.
    # Constexprs go apart: a tuple kept in a variable turns them into runtime values (triton 3.6).
    consumer = (q_bufs, q8_bufs, k_bufs, kb_bufs, vt_bufs, vtb_bufs, ks_bufs, vm_bufs, o_bufs, q_ready, q_empty,
                k_ready, k_empty, v_ready, v_empty, out_ptr, out_desc, v_mean_ptr, q_descale_ptr, k_descale_ptr,
                v_descale_ptr, sqd_bh, so_b, so_h, so_s, H, Sq, n_m, n_tiles, n_blocks, key_pad, sm_scale_log2)
    producer = (q_desc, k_desc, kb_desc, vt_desc, vtb_desc, kd_desc, q_bufs, k_bufs, kb_bufs, vt_bufs, vtb_bufs,
                ks_bufs, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, Sq, Skv, H, n_m, n_tiles, n_blocks,
                key_pad, kd_pad, vt_shift)
    if CONSUMERS == 2:
        gl.warp_specialize([(_consumer, (consumer, HAS_V_MEAN, PER_TOKEN, QUANTIZE_Q, CONSUMERS, PRELOAD_KEY_SCALES,
                                         WIDE, V_MEAN_IN_SHARED, OUT_TMA, KEY_GROUP, num_warps, 0)),
                            (_consumer, (consumer, HAS_V_MEAN, PER_TOKEN, QUANTIZE_Q, CONSUMERS, PRELOAD_KEY_SCALES,
                                         WIDE, V_MEAN_IN_SHARED, OUT_TMA, KEY_GROUP, num_warps, 1)),
                            (_producer, (producer, PER_TOKEN, QUANTIZE_Q, CONSUMERS, WIDE, KEY_GROUP))], [4, 1],
                           [CONSUMER_REGS, 24])
    else:
        gl.warp_specialize([(_consumer, (consumer, HAS_V_MEAN, PER_TOKEN, QUANTIZE_Q, CONSUMERS, PRELOAD_KEY_SCALES,
                                         WIDE, V_MEAN_IN_SHARED, OUT_TMA, KEY_GROUP, num_warps, 0)),
                            (_consumer, (consumer, HAS_V_MEAN, PER_TOKEN, QUANTIZE_Q, CONSUMERS, PRELOAD_KEY_SCALES,
                                         WIDE, V_MEAN_IN_SHARED, OUT_TMA, KEY_GROUP, num_warps, 1)),
                            (_consumer, (consumer, HAS_V_MEAN, PER_TOKEN, QUANTIZE_Q, CONSUMERS, PRELOAD_KEY_SCALES,
                                         WIDE, V_MEAN_IN_SHARED, OUT_TMA, KEY_GROUP, num_warps, 2)),
                            (_producer, (producer, PER_TOKEN, QUANTIZE_Q, CONSUMERS, WIDE, KEY_GROUP))], [4, 4, 1],
                           [CONSUMER_REGS, CONSUMER_REGS, 24])


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------
def _triton_version() -> tuple[int, int]:
    """(major, minor) of the installed Triton ("3.7.0+git..." -> (3, 7))."""
    major, minor = triton.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def gluon_api_reason() -> str | None:
    """Why the installed Triton cannot compile this kernel (None: it can): Gluon's Hopper API as
    3.6 to 3.9 have it (3.5's ``warp_specialize`` takes other arguments)."""
    if _IMPORT_ERROR is not None:
        return f"triton {triton.__version__} has no usable Gluon Hopper API ({_IMPORT_ERROR!r})"
    if _triton_version() < MIN_GLUON_TRITON:
        return (f"the Gluon kernel needs triton >= {'.'.join(map(str, MIN_GLUON_TRITON))} (Gluon's "
                f"warp_specialize API); found {triton.__version__}")
    return None


def untested_triton_reason() -> str | None:
    """Why the installed Triton is not one this kernel has run with on a GPU (None: it is)."""
    if triton.__version__.startswith(TESTED_TRITON):
        return None
    return (f"the Gluon kernel has run on GPUs with triton {', '.join(v + 'x' for v in TESTED_TRITON)} only "
            f"(found {triton.__version__}, which compiles it but has not run it on a GPU)")


def gluon_unavailable_reason(device: torch.device | None = None, allow_untested_triton: bool = False) -> str | None:
    """Why this kernel cannot run here (None: it can): Gluon's Hopper API, an sm_90 GPU and, unless
    ``allow_untested_triton``, a Triton version it has been run with on a GPU (TESTED_TRITON)."""
    if (reason := gluon_api_reason()) is not None:
        return reason
    if not allow_untested_triton and (reason := untested_triton_reason()) is not None:
        return reason
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return "the Gluon kernel needs a CUDA GPU"
    if torch.cuda.get_device_capability(device) != (9, 0):
        return "the Gluon kernel uses Hopper's wgmma and TMA: it needs an sm_90 GPU (H100, H200)"
    return None


def gluon_unsupported_reason(head_dim: int, seq_kv: int, is_causal: bool, return_lse: bool,
                             has_k_bias: bool) -> str | None:
    """Why a call's numerics or shape are outside this kernel (None: inside); per-head and
    per-token scales are both served."""
    if is_causal or return_lse or has_k_bias:
        return "causal masks, LSE and smooth-Q's key bias"
    if head_dim not in DISPATCHED_HEAD_DIMS:
        return f"head dim {head_dim} (the Gluon kernel is faster at {DISPATCHED_HEAD_DIMS})"
    if seq_kv < MIN_KEYS:
        return f"{seq_kv} keys (the Triton kernel is as fast or faster below {MIN_KEYS})"
    return None


def _key_descale_box(keys: int) -> int:
    """Per-token key descales loaded per block: a power of two (Gluon's shared tiles) >= keys."""
    return 1 << (keys - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _layouts(head_dim: int, keys: int = BLOCK_N):
    """Shared layouts of Q's, K's and V^T's 128-key tiles, and of the key descales of a block of
    ``keys`` keys."""
    fp8 = gl.float8e4nv
    return (gl.NVMMASharedLayout.get_default_for([WG_M, head_dim], fp8),
            gl.NVMMASharedLayout.get_default_for([BLOCK_N, head_dim], fp8),
            gl.NVMMASharedLayout.get_default_for([head_dim, BLOCK_N], fp8),
            gl.NVMMASharedLayout.get_default_for([1, _key_descale_box(keys)], gl.float32))


@functools.lru_cache(maxsize=None)
def _group_descale_layout():
    """Shared layout of a key block's row of 8 key-group descales (the key-group probe)."""
    return gl.NVMMASharedLayout.get_default_for([1, 8], gl.float32)


@functools.lru_cache(maxsize=None)
def _tail_layouts(head_dim: int):
    """Shared layouts of K's and V^T's 64-key tiles (a wide block's tail)."""
    fp8 = gl.float8e4nv
    return (gl.NVMMASharedLayout.get_default_for([TAIL_N, head_dim], fp8),
            gl.NVMMASharedLayout.get_default_for([head_dim, TAIL_N], fp8))


@functools.lru_cache(maxsize=None)
def _row_box_layout(head_dim: int, dtype: torch.dtype):
    """Shared layout of (1, 1, 64, D) bf16/fp16 boxes of a caller's (B, H, S, D) view: the query
    the kernel quantizes itself, the output it stores by TMA."""
    return gl.NVMMASharedLayout.get_default_for([1, 1, WG_M, head_dim],
                                                gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)


def _tma_view_reason(x: torch.Tensor) -> str | None:
    """Why a TMA map cannot address this (B, H, S, D) view (None: it can): it needs a 16-byte
    aligned base and strides, and unit channel stride."""
    if x.stride(3) != 1 or x.data_ptr() % 16 or any(st * x.element_size() % 16 for st in x.stride()[:3]):
        return f"strides {tuple(x.stride())} (a TMA map needs unit channel stride and 16-byte rows)"
    return None


def query_in_kernel_reason(q: torch.Tensor) -> str | None:
    """Why the kernel cannot read and quantize this bf16/fp16 (B, H, Sq, D) query view itself
    (None: it can)."""
    if q.dtype not in (torch.bfloat16, torch.float16):
        return f"query dtype {q.dtype}"
    reason = _tma_view_reason(q)
    return None if reason is None else f"query {reason}"


def key_block(head_dim: int, per_token: bool, seq_kv: int) -> int:
    """Keys per online-softmax step of a call: KEYS_PER_BLOCK's (KEYS_PER_BLOCK_TOKEN's) when the
    call has two such blocks (the kernel peels its second) and their padding costs less than
    their speed gains (WIDE_KEY_COST), else 128."""
    keys = (KEYS_PER_BLOCK_TOKEN if per_token else KEYS_PER_BLOCK)[head_dim]
    if seq_kv <= keys:
        return BLOCK_N
    padded = -(-seq_kv // keys) * keys
    return keys if padded * WIDE_KEY_COST <= -(-seq_kv // BLOCK_N) * BLOCK_N else BLOCK_N


def persistent_grid(seq_kv: int) -> bool:
    """Whether a call loops over tiles in one CTA per SM (the next tile's loads and start overlap
    this one's end) or launches one CTA per tile: see PERSISTENT_MAX_KEYS."""
    return seq_kv <= PERSISTENT_MAX_KEYS


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _key_descale_desc(k_descale: torch.Tensor, keys: int, layout):
    """(TMA map of per-token key descales, kd_pad) for blocks of ``keys`` keys: block j's
    descales start at column keys * j - kd_pad of row b*H + h (a box of _key_descale_box(keys);
    columns past the row read as zeros). A TMA box must start on 16 bytes in its innermost
    dimension (an fp32 start at 4 n + 1 is an illegal instruction on H100/H200), so the
    quantizer's rows (16-float aligned) serve as they are when their padded first block starts on
    4 keys, and a right-aligned copy (zeros first, whole blocks: kd_pad = 0) otherwise."""
    B, H, Skv = k_descale.shape
    key_pad = -Skv % keys
    box = [1, _key_descale_box(keys)]
    if key_pad % 4 == 0 and k_descale.stride(1) % 4 == 0 and k_descale.data_ptr() % 16 == 0:
        return TensorDescriptor.from_tensor(k_descale.view(B * H, Skv), box, layout), key_pad
    aligned = torch.nn.functional.pad(k_descale, (key_pad, 0)).view(B * H, key_pad + Skv)
    return TensorDescriptor.from_tensor(aligned, box, layout), 0


@functools.lru_cache(maxsize=64)
def _checked_fields(dtype: torch.dtype, shape: tuple, strides: tuple, block_shape: tuple, layout) -> dict:
    """The fields, all but the base, of a checked descriptor of that geometry: a pure function of
    it (no tensor kept). Triton's checks read nothing of the base but its dtype and its 16-byte
    alignment, which :func:`_desc` asserts per call."""
    desc = TensorDescriptor(base=torch.empty(0, dtype=dtype), shape=shape, strides=strides, block_shape=block_shape,
                            layout=layout)
    return {name: value for name, value in vars(desc).items() if name != "base"}


def _desc(t: torch.Tensor, shape: tuple, strides: tuple, block_shape: tuple, layout):
    """TMA descriptor of ``t``'s memory seen as ``shape`` / ``strides``, with the fields checked
    once per geometry (:func:`_checked_fields`) and ``t`` as the base. Host time 5.5 -> 2 us a
    descriptor on a slow CPU, three a call: no view made (the launch reads only the base's address
    and dtype) and Triton's checks not repeated."""
    assert t.data_ptr() % 16 == 0, "a TMA base starts on 16 bytes"
    desc = TensorDescriptor.__new__(TensorDescriptor)
    vars(desc).update(_checked_fields(t.dtype, shape, strides, block_shape, layout), base=t)
    return desc


def _rows_desc(t: torch.Tensor, block_shape: tuple, layout):
    """TMA descriptor of contiguous ``t`` as the matrix of its last dim's rows."""
    cols = t.shape[-1]
    return _desc(t, (t.numel() // cols, cols), (cols, 1), block_shape, layout)


def launch_gluon_attention(q: torch.Tensor, k8: torch.Tensor, v8t: torch.Tensor, q_descale: torch.Tensor,
                           k_descale: torch.Tensor, v_descale: torch.Tensor, out: torch.Tensor, sm_scale: float,
                           v_mean: torch.Tensor | None = None, persistent: bool | None = None,
                           key_group: int = 0, k_group_descale: torch.Tensor | None = None) -> None:
    """Write ``out``, a (B, H, Sq, D) view with unit last stride (bf16 or fp16), from Q, K8
    (B, H, S, D) contiguous e4m3, V^T (B, H, D, S_blocks) in :func:`mma_key_order`, right-aligned,
    fp32 descales: per head (B, H) each, or per token for Q (B, H, Sq) and K (B, H, Skv) (unit
    last stride) with per-channel V (B, H, D); if V was smoothed, its mean ``v_mean`` (B, H, D)
    fp32. ``q``: contiguous e4m3 with ``q_descale``, or the caller's bf16/fp16 (B, H, Sq, D)
    view (:func:`query_in_kernel_reason` None; ``q_descale`` unread), which the kernel quantizes
    with one scale per row whatever K's granularity. ``persistent``: one CTA per SM looping over
    tiles, or one per tile (None: the measured choice for the shape, :func:`persistent_grid`).
    ``key_group`` (probe, NOTES 49; D = 128, 128-key blocks): per token, K's descales are constant
    over groups of that many keys counted from the last key, and the kernel applies one per group
    instead of one per key; ``k_group_descale``: :func:`key_group_descales` of them, if at hand."""
    B, H, Sq, D = q.shape
    Skv = k8.shape[2]
    assert D in HEAD_DIMS and v8t.shape == (B, H, D, mma_row_length(Skv)), (q.shape, k8.shape, v8t.shape)
    assert Skv > BLOCK_N, f"the kernel peels its second key block: {Skv} keys"
    quantize_q = q.dtype != torch.float8_e4m3fn
    per_token = k_descale.dim() == 3
    keys = BLOCK_N if key_group else key_block(D, per_token, Skv)  # grouped: 192 keys spill (NOTES 49)
    if quantize_q:
        assert query_in_kernel_reason(q) is None, query_in_kernel_reason(q)
        q_descale = k_descale  # unread: any real tensor
    elif per_token:
        assert q_descale.shape == (B, H, Sq) and q_descale.stride(2) == 1
        assert q_descale.stride(0) == H * q_descale.stride(1)
    else:
        assert q_descale.numel() == B * H
    if per_token:
        assert k_descale.shape == (B, H, Skv) and v_descale.shape == (B, H, D) and v_descale.is_contiguous()
        assert k_descale.stride(2) == 1 and k_descale.stride(0) == H * k_descale.stride(1)
    else:
        assert k_descale.numel() == v_descale.numel() == B * H
    assert k8.is_contiguous() and v8t.is_contiguous() and out.stride(3) == 1
    wide = keys > BLOCK_N
    ql, kl, vl, kdl = _layouts(D, keys)
    if quantize_q:
        q_desc = _desc(q, tuple(q.shape), tuple(q.stride()), (1, 1, WG_M, D), _row_box_layout(D, q.dtype))
    else:
        assert q.is_contiguous()
        q_desc = _rows_desc(q, (WG_M, D), ql)
    k_desc = _rows_desc(k8, (BLOCK_N, D), kl)
    vt_desc = _rows_desc(v8t, (D, BLOCK_N), vl)
    if wide:
        kbl, vtbl = _tail_layouts(D)
        kb_desc, vtb_desc = _rows_desc(k8, (TAIL_N, D), kbl), _rows_desc(v8t, (D, TAIL_N), vtbl)
    else:
        kb_desc, vtb_desc = k_desc, vt_desc  # unread
    if key_group:
        assert per_token and D == 128 and key_group in (32, 64), (per_token, D, key_group)
        groups = key_group_descales(k_descale, keys, key_group) if k_group_descale is None else k_group_descale
        kd_desc, kd_pad = _rows_desc(groups, (1, 8), _group_descale_layout()), 0
    else:
        kd_desc, kd_pad = _key_descale_desc(k_descale, keys, kdl) if per_token else (k_desc, 0)
    out_tma = OUTPUT_BY_TMA and _tma_view_reason(out) is None
    out_desc = (_desc(out, tuple(out.shape), tuple(out.stride()), (1, 1, WG_M, D), _row_box_layout(D, out.dtype))
                if out_tma else k_desc)
    has_mean = v_mean is not None
    wg = WARP_GROUPS[D]
    tiles = -(-Sq // wg.block_m) * B * H
    if persistent is None:
        persistent = persistent_grid(Skv)
    _gluon_attention_kernel[(min(tiles, _sm_count(q.device)) if persistent else tiles,)](
        q_desc, k_desc, kb_desc, vt_desc, vtb_desc, kd_desc, out, out_desc, q_descale, k_descale, v_descale,
        v_mean if has_mean else v_descale, sm_scale * LOG2E, Sq, Skv, H, B * H, out.stride(0), out.stride(1),
        out.stride(2),
        q_descale.stride(1) if per_token and not quantize_q else 0, kd_pad,
        HAS_V_MEAN=has_mean, PER_TOKEN=per_token, QUANTIZE_Q=quantize_q, Q8_LAYOUT=ql, STAGES=NUM_STAGES,
        CONSUMERS=wg.consumers, CONSUMER_REGS=wg.consumer_regs, PRELOAD_KEY_SCALES=PRELOAD_KEY_SCALES[D],
        WIDE=wide, V_MEAN_IN_SHARED=V_MEAN_IN_SHARED[wide], OUT_TMA=out_tma, KEY_GROUP=key_group, num_warps=4,
        maxnreg=wg.maxnreg)


def key_group_descales(k_descale: torch.Tensor, keys: int, group: int) -> torch.Tensor:
    """Per-token key descales (B, H, Skv), constant over groups of ``group`` keys counted from the
    last key, as the kernel stages them: one per group, right-aligned into whole blocks of
    ``keys`` keys, each block's groups in a row of 8 floats (one 32-byte TMA box), (B*H, blocks
    x 8); padding groups 1 (a masked score times 1 stays -inf)."""
    B, H, Skv = k_descale.shape
    per_block = keys // group
    groups = -(-Skv // group)
    blocks = -(-Skv // keys)
    last_keys = torch.arange(Skv - 1 - group * (groups - 1), Skv, group, device=k_descale.device)
    flat = torch.ones(B * H, blocks * per_block, dtype=torch.float32, device=k_descale.device)
    flat[:, blocks * per_block - groups:] = k_descale.reshape(B * H, Skv)[:, last_keys]
    out = torch.ones(B * H, blocks, 8, dtype=torch.float32, device=k_descale.device)
    out[:, :, :per_block] = flat.view(B * H, blocks, per_block)
    return out.view(B * H, blocks * 8)


def compile_for_hopper(head_dim: int = 128, has_v_mean: bool = False, per_token: bool = False,
                       quantize_q: bool = False, keys: int | None = None, key_group: int = 0):
    """The kernel compiled for sm_90 as a launch specializes it, with no GPU (the installed
    Triton's compiler and bundled ptxas): for offline checks of registers, spills and schedule
    (benchmarks/gluon_attention.py, kernel_resources.py) and for CI's check that a newer Triton
    still compiles it. ``keys`` per block: KEYS_PER_BLOCK's by default. Settings are read as a
    launch reads them (module globals)."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    keys = keys or key_block(head_dim, per_token, 1 << 20)
    wide = keys > BLOCK_N
    ql, kl, vl, kdl = _layouts(head_dim, keys)
    kbl, vtbl = _tail_layouts(head_dim)

    def desc(block, layout, dtype="fp8e4nv"):
        return f"tensordesc<{dtype}[{', '.join(map(str, block))}],{layout!r}>"

    fn = _gluon_attention_kernel
    names = fn.arg_names
    q_box = (1, 1, WG_M, head_dim)
    wg = WARP_GROUPS[head_dim]
    row_box = desc(q_box, _row_box_layout(head_dim, torch.bfloat16), "bf16")
    k_desc, vt_desc = desc((BLOCK_N, head_dim), kl), desc((head_dim, BLOCK_N), vl)
    if key_group:
        kd_desc = desc((1, 8), _group_descale_layout(), "fp32")
    elif per_token:
        kd_desc = desc((1, _key_descale_box(keys)), kdl, "fp32")
    else:  # per head the launch passes K's map again
        kd_desc = k_desc
    signature = {"q_desc": row_box if quantize_q else desc((WG_M, head_dim), ql), "k_desc": k_desc,
                 "vt_desc": vt_desc, "kd_desc": kd_desc,
                 # without WIDE the launch passes K's and V^T's maps again
                 "kb_desc": desc((TAIL_N, head_dim), kbl) if wide else k_desc,
                 "vtb_desc": desc((head_dim, TAIL_N), vtbl) if wide else vt_desc,
                 "out_ptr": "*bf16", "sm_scale_log2": "fp32", "out_desc": row_box if OUTPUT_BY_TMA else k_desc,
                 **{n: "*fp32" for n in ("q_descale_ptr", "k_descale_ptr", "v_descale_ptr", "v_mean_ptr")},
                 **{n: "i32" for n in ("Sq", "Skv", "H", "BH", "sqd_bh", "kd_pad")},
                 **{n: "i64" for n in ("so_b", "so_h", "so_s")}}
    constexprs = dict(HAS_V_MEAN=has_v_mean, PER_TOKEN=per_token, QUANTIZE_Q=quantize_q, Q8_LAYOUT=ql,
                      STAGES=NUM_STAGES, CONSUMERS=wg.consumers, CONSUMER_REGS=wg.consumer_regs,
                      PRELOAD_KEY_SCALES=PRELOAD_KEY_SCALES[head_dim], WIDE=wide,
                      V_MEAN_IN_SHARED=V_MEAN_IN_SHARED[wide], OUT_TMA=OUTPUT_BY_TMA, KEY_GROUP=key_group,
                      num_warps=4)
    signature.update({n: "constexpr" for n in constexprs})
    # Skv is never specialized on alignment (the kernel's do_not_specialize_on_alignment)
    aligned = ("out_ptr", "q_descale_ptr", "k_descale_ptr", "v_descale_ptr", "v_mean_ptr", "so_b", "so_h", "so_s",
               "sqd_bh")
    src = GluonASTSource(fn=fn, signature=signature,
                         constexprs={(names.index(n),): v for n, v in constexprs.items()},
                         attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=wg.maxnreg))
