"""FP8 flash-attention forward in Gluon for Hopper (sm_90): an UNMEASURED PROTOTYPE.

It was written and compile-checked on a machine without a GPU; nothing here has run on an H100/H200 yet.
It targets triton 3.6's Gluon (``triton.experimental.gluon``), the Triton on the GPU machine; other
Triton versions are refused in ``main`` (the Gluon API changes between releases).

Why: our Triton kernel (kernels/attention.py) reaches 0.76x of FlashAttention-3's FP8 kernel. Triton
3.6 waits for Q K^T (``wgmma.wait_group 0``) right after issuing it, so the softmax never overlaps the
tensor cores, and its automatic warp specialization hangs. Gluon lets us write FA3's schedule by hand:

* a 1-warp TMA producer partition streams K and V^T tiles (128 keys) into a ring of NUM_STAGES
  shared-memory buffers, each with a ready and an empty mbarrier; Q is loaded once by TMA;
* 8 consumer warps = two warpgroups of 64 query rows (BLOCK_M = 128 per CTA): the 8-warp default
  partition, or two 4-warp partitions (see Variants);
* in the consumer loop, block j's Q K^T and block j-1's P V are both issued asynchronously, then
  ``warpgroup_mma_wait(num_outstanding=1)`` waits for Q K^T only: block j's exp2s run while P V is
  still on the tensor cores (FA3's intra-warpgroup overlap). The loop is rotated so that P V's
  ``wait_group 0`` opens the next iteration: in straight-line code ptxas hoisted it above the exps.

Variants (compile-time; ``gluon_fp8_attention(..., consumers=, per_token=)``, ``--variants``):

* ``consumers="shared"`` (default): one 8-warp default partition runs both warpgroups (warps_per_cta
  [8, 1]: each warpgroup's rows and wgmmas are its own). Cost, visible in the schedule: Gluon lowers
  each mbarrier.arrive to one elected thread behind a ``bar.sync 0, 256``, so the two warpgroups meet
  3 times per key block; FA3 lets them drift apart.
* ``consumers="split"``: two 4-warp consumer partitions (default = warpgroup 0, a worker = warpgroup 1,
  240 registers each), so each arrive waits only on its own 128 threads; the empty barriers count 2
  arrives (one elected thread per partition). Workers take no register tensors: both get the same
  scalars / descriptors and pick their 64-row Q and O tiles ([2, 64, D] in shared memory, 64-row TMA
  descriptors) by a constexpr WG. Block 1 is peeled (S >= 256): without that ptxas serializes every
  wgmma of the kernel once the rotated loop sits in a worker partition (see _consumer).
* ``per_token=True``: Q and K descales per token ((B*H*S,) fp32, amax/448 per row), V per head.
  As in kernels/attention.py: s *= k_scale[None, :] (the block's 128 K scales, plain global loads in
  the score tile's column layout), then the per-row softmax scale sm_scale*log2(e)*q_descale[row].
  Cost: 16 extra 8-byte loads and 64 extra FMULs per thread per key block.

Numerics mirror kernels/attention.py: s = (Q8 K8^T) * sm_scale * log2(e) * q_descale * k_descale in
log2 units (per head, or per row/column), exact running max, p = exp2(s - m), l from unquantized p,
acc += e4m3(p * 256) @ V8 (FP8 wgmma, fp32 accumulate), out = acc / (l * 256) * v_descale, bf16.
Non-causal, no masks: S must be a multiple of 128. D = 128 (64 compiles too).

Run it:

    # here, no GPU: compile for sm_90, print registers/stack and the main loop's schedule
    PYTHONPATH=/tmp/tri36/site .ci-venv/bin/python benchmarks/gluon_attention.py --compile-only
    # on the H200 (triton 3.6): correctness vs fp32 torch attention, TFLOP/s, our Triton kernel too
    python benchmarks/gluon_attention.py --shapes 2x512x128,24x8192x128 --stages 2,3  # all four variants
    python benchmarks/gluon_attention.py --variants shared-head,split-head   # or some of them

What to look for:

* ``--compile-only`` (all four variants): STACK 0 (no spills), setmaxnreg 240 for the consumers / 24
  for the producer (the kernel-wide "regs" is the 168 launch bound; the consumer code uses more after
  setmaxnreg; "split" also shows the worker's idle 120 and the default's 256 before the fork), no
  ptxas "serialized" warning, arrives guarded by ``tid % 256 == 0`` ("shared") or ``tid % 128 == 0``
  ("split"), and one loop line per consumer partition: ``bar.sync/128`` there, never ``/256``.
  Loop schedule: ``mma x4`` (Q K^T) ``mma x4`` (P V) ``wait1``, then the ``ex2`` run at the end of
  the body and ``wait0`` only at the top of the next iteration, in the PTX and also in the SASS
  (after ptxas's scheduling, which is what runs). ``wait0`` directly before ``ex2`` in the SASS line
  would mean the overlap is lost; so would ptxas warnings that wgmma is "serialized". Per-token:
  ``ldg x16`` (the K scales) before the MMAs, so they land while the tensor cores run.
* GPU mode: rel. L2 about 0.03-0.07 against fp32 attention on the dequantized e4m3 inputs (the
  output buffer starts as NaN, so rows never written show up as NaN: with "split", a half-tile of
  NaN rows points at warpgroup 1's store), and TFLOP/s next to our Triton kernel's (per-head and
  per-token). If it hangs, suspect the mbarrier phases / arrive counts first (see the comments):
  "split" hanging but "shared" not means the count-2 empty barriers miss an arrive.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile

import triton

try:  # Gluon is experimental: keep a missing/changed API from breaking unrelated imports.
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_init, warpgroup_mma_wait)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    _GLUON_ERROR = None
except Exception as exc:  # noqa: BLE001 - reported by _require_gluon()
    _GLUON_ERROR = exc

    class _NoGluon:  # lets the @gluon.jit definitions below be parsed; never called
        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

    gluon = _NoGluon()

LOG2E = math.log2(math.e)
BLOCK_M = 128  # query rows per CTA: two consumer warpgroups of 64
BLOCK_N = 128  # keys per K / V^T tile
CONSUMER_WARPS = 8  # both variants: 8 consumer warps in all (one 8-warp partition, or 2 x 4)
PRODUCER_REGS = 24  # the minimum setmaxnreg allows; the producer only issues TMA
# Register budget for the whole CTA, per thread of 12 warps (8 consumer + the producer's warpgroup):
# 168 * 384 threads = 64512 registers; the producer's warpgroup keeps 24 * 128, so the consumers
# get (64512 - 3072) / 256 = 240 each, as FA3 gives its consumer warpgroups.
MAXNREG = 168
CONSUMER_REGS = 240  # "split": the worker consumer asks for it; the default partition gets the rest
SUPPORTED_TRITON = "3.6."
VARIANTS = {"shared-head": ("shared", False), "split-head": ("split", False),
            "shared-token": ("shared", True), "split-token": ("split", True)}
# Options a variant name may add, e.g. "split-head+pingpong+exp2p" (``parse_variant``).
OPTIONS = {"pingpong": "warpgroups take turns to issue MMAs ('split' only)",
           "exp2p": "P's 256 folded into the exp2 (no FMUL per score)",
           "permv": "V^T's keys stored in the P operand's register order (no shuffles for P)"}


def parse_variant(name: str) -> dict:
    """'<consumers>-<head|token>[+option...]' -> gluon_fp8_attention's keyword arguments."""
    base, *opts = name.split("+")
    if base not in VARIANTS or any(o not in OPTIONS for o in opts):
        raise ValueError(f"unknown variant {name!r}: one of {list(VARIANTS)}, then any of "
                         f"{['+' + o for o in OPTIONS]}")
    consumers, per_token = VARIANTS[base]
    if "pingpong" in opts and consumers != "split":
        raise ValueError(f"{name!r}: +pingpong needs the 'split' consumers")
    return dict(consumers=consumers, per_token=per_token, pingpong="pingpong" in opts, p_in_exp2="exp2p" in opts,
                key_permuted_v="permv" in opts)


def key_permutation(seq: int):
    """Index tensor pi (S,): V^T stored as v8t[..., pi] for ``key_permuted_v`` (see _to_p8)."""
    import torch

    k = torch.arange(32)
    chunk = 16 * (k >> 4) + 8 * ((k & 3) >> 1) + 2 * ((k >> 2) & 3) + (k & 1)
    assert seq % 32 == 0
    return (torch.arange(0, seq, 32)[:, None] + chunk[None, :]).reshape(-1)


# --------------------------------------------------------------------------------------------
# Producer partition (1 warp): TMA loads of Q once, then K_j and V^T_j into the ring.
# --------------------------------------------------------------------------------------------
@gluon.jit
def _producer(q_desc, k_desc, vt_desc, q_smem, k_bufs, vt_bufs, q_bar, k_ready, k_empty, v_ready, v_empty,
              q_row, kv_row, vt_row, n_blocks):
    TILE_N: gl.constexpr = k_desc.block_type.shape[0]
    NUM_STAGES: gl.constexpr = k_bufs.type.shape[0]
    SPLIT: gl.constexpr = len(q_smem.type.shape) == 3  # [2, 64, D]: "split" consumers

    if SPLIT:  # one 64-row Q tile per consumer warpgroup, both on q_bar
        WG_M: gl.constexpr = q_desc.block_type.shape[0]
        mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [q_row, 0], q_bar, q_smem.index(0))
        tma.async_copy_global_to_shared(q_desc, [q_row + WG_M, 0], q_bar, q_smem.index(1))
    else:
        mbarrier.expect(q_bar, q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [q_row, 0], q_bar, q_smem)

    for j in range(n_blocks):
        stage = j % NUM_STAGES
        # Empty barriers start "phase 1 complete", so the first lap (parity 1) does not block: the
        # ring fills NUM_STAGES tiles ahead before waiting for the consumer(s).
        parity = ((j // NUM_STAGES) & 1) ^ 1
        # K and V^T get separate barriers: Q K^T of block j can start before V^T_j has landed.
        mbarrier.wait(k_empty.index(stage), parity)
        mbarrier.expect(k_ready.index(stage), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [kv_row + j * TILE_N, 0], k_ready.index(stage), k_bufs.index(stage))
        mbarrier.wait(v_empty.index(stage), parity)
        mbarrier.expect(v_ready.index(stage), vt_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(vt_desc, [vt_row, j * TILE_N], v_ready.index(stage), vt_bufs.index(stage))


# --------------------------------------------------------------------------------------------
# Consumer partition(s): MMAs and online softmax. "shared": the default partition, 8 warps = 2
# warpgroups x 64 rows. "split": this function twice, 4 warps each (default + a worker), WG = 0 / 1.
# --------------------------------------------------------------------------------------------
@gluon.jit
def _online_softmax(s, m_i, l_i, qk_scale, ROW_SCALE: gl.constexpr, P_IN_EXP2: gl.constexpr):
    """One block of the online softmax, log2 units; the scale rides on the exp2's FFMA.
    ROW_SCALE: qk_scale is a per-row vector (per-token Q scales), else one scalar per head.
    P_IN_EXP2: p comes out times 256 (P_SCALE) as exp2(x + 8), saving one FMUL per score (FA3's
    max_offset); l then sums 256 p, and the epilogue divides by it alone."""
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)  # qk_scale > 0: max commutes with it
    bias = m_new - 8.0 if P_IN_EXP2 else m_new
    if ROW_SCALE:
        p = gl.exp2(s * gl.expand_dims(qk_scale, 1) - gl.expand_dims(bias, 1))
    else:
        p = gl.exp2(s * qk_scale - gl.expand_dims(bias, 1))
    alpha = gl.exp2(m_i - m_new)  # first block: exp2(-inf) = 0, and l = acc = 0 anyway
    l_i = l_i * alpha + gl.sum(p, axis=1)  # the row sum uses unquantized P
    return p, alpha, l_i, m_new


@gluon.jit
def _to_p8(p, p_layout: gl.constexpr, P_IN_EXP2: gl.constexpr, KEY_PERMUTED_V: gl.constexpr):
    # P <= 1, times 256 (P_SCALE; already in p with P_IN_EXP2): no saturation needed. As a register
    # A operand of the P V wgmma, P never goes through shared memory.
    if not P_IN_EXP2:
        p = p * 256.0
    p8 = p.to(gl.float8e4nv)
    if KEY_PERMUTED_V:
        # Trick 6 (FA3's): the scores' accumulator layout gives thread t of a quad the keys
        # {8i + 2t + e} of each 32-key chunk; the fp8 A operand wants k = {4t + e4 + 16c}. Reading
        # column k of P as key pi(k) = 16c + 8(e4 // 2) + 2t + e4 % 2 keeps every value in its own
        # thread (no shuffles: assert_trivial checks it); V^T's keys are stored in the same order
        # (key_permutation), so P V is unchanged. In bits, k = (c, t1, t0, h, l) reads key
        # (c, h, t1, t0, l): a reshape and a transpose.
        M: gl.constexpr = p8.shape[0]
        N: gl.constexpr = p8.shape[1]
        p8 = gl.reshape(gl.permute(gl.reshape(p8, [M, N // 32, 2, 2, 2, 2, 2]), [0, 1, 2, 4, 5, 3, 6]), [M, N])
        return gl.convert_layout(p8, p_layout, assert_trivial=True)
    return gl.convert_layout(p8, p_layout)


@gluon.jit
def _turn_wait(sched, WG: gl.constexpr, i, PINGPONG: gl.constexpr):
    # Trick 5 (ping-pong, "split" only): the two consumer warpgroups take turns to issue their MMAs
    # (FA3's warp-scheduler barrier), so one's softmax runs while the other's MMAs hold the tensor
    # cores, instead of both softmaxes colliding on the exp unit. Issue i of warpgroup 0 waits for
    # warpgroup 1's issue i-1 (its first passes: a fresh barrier's "previous phase" is complete);
    # issue i of warpgroup 1 waits for warpgroup 0's issue i.
    if PINGPONG:
        mbarrier.wait(sched.index(WG), (i & 1) ^ (1 - WG))


@gluon.jit
def _turn_pass(sched, WG: gl.constexpr, PINGPONG: gl.constexpr):
    if PINGPONG:
        mbarrier.arrive(sched.index(1 - WG), count=1)


@gluon.jit
def _key_scales(k_descale_ptr, key0, cols):
    # Per-token K: the 128 scales of this key block (512 B, L1/L2-resident after the first warp),
    # loaded straight into the score tile's column slice layout: no shuffle, no shared memory.
    return gl.load(k_descale_ptr + key0 + cols)


@gluon.jit
def _kv_step(j, acc, p, alpha, l_i, m_i, q_smem, k_bufs, vt_bufs, k_ready, k_empty, v_ready, v_empty, sched, s_init,
             qk_scale, k_descale_ptr, kv_row, cols, PER_TOKEN: gl.constexpr, p_layout: gl.constexpr,
             row_o: gl.constexpr, WG: gl.constexpr, PINGPONG: gl.constexpr, P_IN_EXP2: gl.constexpr,
             KEY_PERMUTED_V: gl.constexpr):
    """Steady-state iteration j: finish block j-1 (retire P_{j-2} V_{j-2}, rescale, quantize P_{j-1}),
    then run S_j = Q K_j^T and acc += P_{j-1} V_{j-1} together; returns with P_{j-1} V_{j-1} in flight."""
    TILE_N: gl.constexpr = k_bufs.type.shape[1]
    NUM_STAGES: gl.constexpr = k_bufs.type.shape[0]
    stage = j % NUM_STAGES
    prev = (j - 1) % NUM_STAGES
    if PER_TOKEN:  # issued first: the loads land while the MMAs below run
        k_scale = _key_scales(k_descale_ptr, kv_row + j * TILE_N, cols)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    # V^T_{j-2}'s slot is free once P_{j-2} V_{j-2} has retired (no P V before j = 2).
    mbarrier.arrive(v_empty.index((j - 2 + NUM_STAGES) % NUM_STAGES), count=1, pred=j >= 2)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
    p8 = _to_p8(p, p_layout, P_IN_EXP2, KEY_PERMUTED_V)
    # Trick 1 (early Q K^T): issue block j's scores before block j-1's P V, so both MMA groups
    # queue back to back on the tensor cores.
    mbarrier.wait(k_ready.index(stage), (j // NUM_STAGES) & 1)
    _turn_wait(sched, WG, j, PINGPONG)
    s = warpgroup_mma(q_smem, k_bufs.index(stage).permute((1, 0)), s_init, use_acc=False, is_async=True)
    mbarrier.wait(v_ready.index(prev), ((j - 1) // NUM_STAGES) & 1)
    acc = warpgroup_mma(p8, vt_bufs.index(prev).permute((1, 0)), acc, is_async=True)
    _turn_pass(sched, WG, PINGPONG)
    # Trick 2 (wait_group 1): wgmma groups retire in order, so <= 1 outstanding means S_j is done
    # while P V (the newer group) keeps running under the softmax below.
    s = warpgroup_mma_wait(num_outstanding=1, deps=(s, ))
    # K_j is no longer read: hand its slot back so the producer's next TMA overlaps the softmax.
    mbarrier.arrive(k_empty.index(stage), count=1)
    if PER_TOKEN:
        s = s * gl.expand_dims(k_scale, 0)
    p, alpha, l_i, m_i = _online_softmax(s, m_i, l_i, qk_scale, PER_TOKEN, P_IN_EXP2)  # overlaps P_{j-1} V_{j-1}
    return acc, p, alpha, l_i, m_i


@gluon.jit
def _consumer(q_smem, k_bufs, vt_bufs, o_smem, o_desc, q_bar, k_ready, k_empty, v_ready, v_empty, sched,
              q_row, kv_row, n_blocks, qk_scale, v_descale, q_descale_ptr, k_descale_ptr,
              WG: gl.constexpr, SPLIT: gl.constexpr, PER_TOKEN: gl.constexpr, PINGPONG: gl.constexpr,
              P_IN_EXP2: gl.constexpr, KEY_PERMUTED_V: gl.constexpr, num_warps: gl.constexpr):
    if SPLIT:  # this warpgroup's own 64-row slab: its Q tile, its O tile, rows q_row + 64 * WG
        q_smem = q_smem.index(WG)
        o_smem = o_smem.index(WG)
        q_row = q_row + WG * q_smem.type.shape[0]
    TILE_M: gl.constexpr = q_smem.type.shape[0]
    HEAD_DIM: gl.constexpr = q_smem.type.shape[1]
    TILE_N: gl.constexpr = k_bufs.type.shape[1]
    NUM_STAGES: gl.constexpr = k_bufs.type.shape[0]
    gl.static_assert(TILE_M == 16 * num_warps, "one 64-row slab per consumer warpgroup")

    # warps_per_cta [num_warps, 1]: each warpgroup owns 64 full rows, so row max / row sum stay inside
    # a warp (quad shuffles, no shared memory) and each warpgroup's wgmma is independent of the other.
    # instr_shape: m16, n = the whole tile, k = 32 (256 bits of e4m3).
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, TILE_N, 32])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=4)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    cols = gl.arange(0, TILE_N, layout=gl.SliceLayout(0, s_layout))  # per-token: K-scale offsets

    if PER_TOKEN:  # per-row softmax scale: sm_scale * log2(e) * q_descale[row] (qk_scale = the first two)
        rows = gl.arange(0, TILE_M, layout=gl.SliceLayout(1, s_layout))
        qk_scale = qk_scale * gl.load(q_descale_ptr + q_row + rows)
    m_i = gl.full([TILE_M], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([TILE_M], gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([TILE_M, HEAD_DIM], gl.float32, o_layout)
    s_init = gl.zeros([TILE_M, TILE_N], gl.float32, s_layout)  # ignored: use_acc=False

    # Stage 0 - prologue: Q, then S_0 = Q K_0^T and its softmax (nothing to overlap with yet).
    if PER_TOKEN:
        k_scale = _key_scales(k_descale_ptr, kv_row, cols)
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_ready.index(0), 0)
    _turn_wait(sched, WG, 0, PINGPONG)
    s = warpgroup_mma(q_smem, k_bufs.index(0).permute((1, 0)), s_init, use_acc=False, is_async=True)
    _turn_pass(sched, WG, PINGPONG)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
    # One elected thread per consumer partition arrives: k_empty / v_empty count 1 ("shared") or 2.
    mbarrier.arrive(k_empty.index(0), count=1)
    if PER_TOKEN:
        s = s * gl.expand_dims(k_scale, 0)  # per-column K scales on the score tile
    p, alpha, l_i, m_i = _online_softmax(s, m_i, l_i, qk_scale, PER_TOKEN, P_IN_EXP2)
    acc = warpgroup_mma_init(acc)  # the loop carries acc as an in-flight wgmma accumulator

    # Stage 1 - steady state. Iteration j: finish block j-1 (retire P_{j-2} V_{j-2}, rescale,
    # quantize P_{j-1}), then run S_j = Q K_j^T and acc += P_{j-1} V_{j-1} together.
    # Trick 3 (loop rotation): the wait_group 0 for P V sits at the top of the next iteration, across
    # the loop's back edge from block j's exp2s. In one basic block ptxas hoists that wait above
    # all the exps (checked in SASS with the straight-line order), which serializes softmax and MMA.
    if SPLIT:
        # Trick 4 (peel block 1, "split" only, needs S >= 256): without it ptxas serializes every wgmma
        # of the kernel ("C7512 ... insufficient register resources", even at 256 registers) once the
        # rotated loop sits in a worker partition, which Gluon places inside its dispatch loop; the
        # default partition alone is fine. Found by experiment; our reading: peeled, the loop is
        # entered or skipped with P V in flight on both paths.
        acc, p, alpha, l_i, m_i = _kv_step(1, acc, p, alpha, l_i, m_i, q_smem, k_bufs, vt_bufs, k_ready, k_empty,
                                           v_ready, v_empty, sched, s_init, qk_scale, k_descale_ptr, kv_row, cols,
                                           PER_TOKEN, p_layout, row_o, WG, PINGPONG, P_IN_EXP2,
                                           KEY_PERMUTED_V)
        first = 2
    else:
        first = 1
    for j in range(first, n_blocks):
        acc, p, alpha, l_i, m_i = _kv_step(j, acc, p, alpha, l_i, m_i, q_smem, k_bufs, vt_bufs, k_ready, k_empty,
                                           v_ready, v_empty, sched, s_init, qk_scale, k_descale_ptr, kv_row, cols,
                                           PER_TOKEN, p_layout, row_o, WG, PINGPONG, P_IN_EXP2,
                                           KEY_PERMUTED_V)

    # Stage 2 - drain: retire P_{n-2} V_{n-2}, then the last block's P V.
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    mbarrier.arrive(v_empty.index((n_blocks - 2 + NUM_STAGES) % NUM_STAGES), count=1, pred=n_blocks >= 2)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
    p8 = _to_p8(p, p_layout, P_IN_EXP2, KEY_PERMUTED_V)
    last = (n_blocks - 1) % NUM_STAGES
    mbarrier.wait(v_ready.index(last), ((n_blocks - 1) // NUM_STAGES) & 1)
    _turn_wait(sched, WG, n_blocks, PINGPONG)
    acc = warpgroup_mma(p8, vt_bufs.index(last).permute((1, 0)), acc, is_async=True)
    _turn_pass(sched, WG, PINGPONG)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    mbarrier.arrive(v_empty.index(last), count=1)

    # Stage 3 - epilogue: normalize, descale V, bf16 through shared memory and one TMA store of this
    # partition's rows (128, or 64 per warpgroup with "split": o_desc's tile is then 64 rows).
    inv = v_descale / (gl.convert_layout(l_i, row_o) * (1.0 if P_IN_EXP2 else 256.0))
    out = (acc * gl.expand_dims(inv, 1)).to(o_desc.dtype)
    o_smem.store(out)
    fence_async_shared()  # order the generic-proxy smem writes before the async-proxy TMA read
    tma.async_copy_shared_to_global(o_desc, [q_row, 0], o_smem)
    tma.store_wait(pendings=0)


@gluon.jit
def gluon_attention_kernel(q_desc, k_desc, vt_desc, o_desc, q_descale_ptr, k_descale_ptr, v_descale_ptr,
                           sm_scale_log2, S, NUM_STAGES: gl.constexpr, SPLIT: gl.constexpr,
                           PER_TOKEN: gl.constexpr, PINGPONG: gl.constexpr, P_IN_EXP2: gl.constexpr,
                           KEY_PERMUTED_V: gl.constexpr, num_warps: gl.constexpr):
    """Grid (S // 128, B*H). Q/K/O: (B*H*S, D) rows; V^T: (B*H*D, S) rows. Descales fp32: V (B*H,);
    Q, K (B*H,) or, PER_TOKEN, (B*H*S,). SPLIT: Q/O descriptors have 64-row tiles, num_warps = 4."""
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[1]
    TILE_N: gl.constexpr = k_desc.block_type.shape[0]
    # CTA rows: one 128-row Q/O tile, or ("split") two 64-row tiles, one per consumer warpgroup.
    TILE_M: gl.constexpr = q_desc.block_type.shape[0] * (2 if SPLIT else 1)
    gl.static_assert(TILE_M == 128)
    gl.static_assert(vt_desc.block_type.shape[0] == HEAD_DIM)
    gl.static_assert(vt_desc.block_type.shape[1] == TILE_N)

    pid_m = gl.program_id(0)
    bh = gl.program_id(1)
    q_row = bh * S + pid_m * TILE_M
    kv_row = bh * S
    vt_row = bh * HEAD_DIM
    n_blocks = S // TILE_N
    if PER_TOKEN:  # the descales are read per row / per key block in the consumer(s)
        qk_scale = sm_scale_log2
    else:
        qk_scale = sm_scale_log2 * gl.load(q_descale_ptr + bh) * gl.load(k_descale_ptr + bh)
    v_descale = gl.load(v_descale_ptr + bh)

    # Shared memory: Q 16 KB + NUM_STAGES x (K 16 KB + V^T 16 KB) + O 32 KB (D = 128, 3 stages: 144 KB).
    # "split" holds the same bytes as [2, 64, D] tiles, one per warpgroup.
    if SPLIT:
        q_smem = gl.allocate_shared_memory(q_desc.dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    else:
        q_smem = gl.allocate_shared_memory(q_desc.dtype, q_desc.block_type.shape, q_desc.layout)
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [NUM_STAGES] + k_desc.block_type.shape, k_desc.layout)
    vt_bufs = gl.allocate_shared_memory(vt_desc.dtype, [NUM_STAGES] + vt_desc.block_type.shape, vt_desc.layout)
    if SPLIT:
        o_smem = gl.allocate_shared_memory(o_desc.dtype, [2] + o_desc.block_type.shape, o_desc.layout)
    else:
        o_smem = gl.allocate_shared_memory(o_desc.dtype, o_desc.block_type.shape, o_desc.layout)

    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    sched = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())  # ping-pong turns
    mbarrier.init(q_bar, count=1)
    mbarrier.init(sched.index(0), count=1)
    mbarrier.init(sched.index(1), count=1)
    for i in gl.static_range(NUM_STAGES):
        # ready: one arrive (the producer's expect) + the TMA bytes. empty: one arrive per consumer
        # partition: Gluon lowers mbarrier.arrive to one elected thread after a bar.sync of the
        # partition's threads (see the schedule), so count=1 covers an 8-warp partition ("shared"),
        # and "split" needs count=2, one from each 4-warp partition.
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2 if SPLIT else 1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=2 if SPLIT else 1)
    fence_async_shared()  # barrier inits visible to the async proxy (TMA) before first use

    # Workers may take scalars and shared-memory / TMA descriptors only (no register tensors), so the
    # per-token scales are loaded inside each consumer. (Literal tuples: Gluon's tuple "+" drops the
    # constexpr wrapping that a worker's arguments need.)
    # Worker warps and registers are literals (kernels can't read Python globals): 24 = PRODUCER_REGS,
    # 240 = CONSUMER_REGS. "split": the default partition (warpgroup 0, num_warps = 4) keeps what the
    # worker consumer (warpgroup 1) and the producer leave.
    if SPLIT:
        gl.warp_specialize([
            (_consumer, (q_smem, k_bufs, vt_bufs, o_smem, o_desc, q_bar, k_ready, k_empty, v_ready, v_empty,
                         sched, q_row, kv_row, n_blocks, qk_scale, v_descale, q_descale_ptr, k_descale_ptr,
                         0, SPLIT, PER_TOKEN, PINGPONG, P_IN_EXP2, KEY_PERMUTED_V, num_warps)),
            (_consumer, (q_smem, k_bufs, vt_bufs, o_smem, o_desc, q_bar, k_ready, k_empty, v_ready, v_empty,
                         sched, q_row, kv_row, n_blocks, qk_scale, v_descale, q_descale_ptr, k_descale_ptr,
                         1, SPLIT, PER_TOKEN, PINGPONG, P_IN_EXP2, KEY_PERMUTED_V, num_warps)),
            (_producer, (q_desc, k_desc, vt_desc, q_smem, k_bufs, vt_bufs, q_bar, k_ready, k_empty, v_ready,
                         v_empty, q_row, kv_row, vt_row, n_blocks)),
        ], [4, 1], [240, 24])
    else:
        gl.warp_specialize([
            (_consumer, (q_smem, k_bufs, vt_bufs, o_smem, o_desc, q_bar, k_ready, k_empty, v_ready, v_empty,
                         sched, q_row, kv_row, n_blocks, qk_scale, v_descale, q_descale_ptr, k_descale_ptr,
                         0, SPLIT, PER_TOKEN, PINGPONG, P_IN_EXP2, KEY_PERMUTED_V, num_warps)),
            (_producer, (q_desc, k_desc, vt_desc, q_smem, k_bufs, vt_bufs, q_bar, k_ready, k_empty, v_ready,
                         v_empty, q_row, kv_row, vt_row, n_blocks)),
        ], [1], [24])


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------
def _variant(consumers: str) -> tuple[bool, int, int]:
    """(SPLIT, rows per Q/O TMA tile, kernel num_warps = the default partition's warps)."""
    if consumers not in ("shared", "split"):
        raise ValueError(f"consumers must be 'shared' or 'split', not {consumers!r}")
    split = consumers == "split"
    return split, BLOCK_M // 2 if split else BLOCK_M, CONSUMER_WARPS // 2 if split else CONSUMER_WARPS


def _layouts(head_dim: int, q_rows: int = BLOCK_M):
    q = gl.NVMMASharedLayout.get_default_for([q_rows, head_dim], gl.float8e4nv)
    k = gl.NVMMASharedLayout.get_default_for([BLOCK_N, head_dim], gl.float8e4nv)
    vt = gl.NVMMASharedLayout.get_default_for([head_dim, BLOCK_N], gl.float8e4nv)
    o = gl.NVMMASharedLayout.get_default_for([q_rows, head_dim], gl.bfloat16)
    return q, k, vt, o


def gluon_fp8_attention(q8, k8, v8t, q_descale, k_descale, v_descale, sm_scale, out=None, num_stages=2,
                        consumers="shared", per_token=False, pingpong=False, p_in_exp2=False, key_permuted_v=False):
    """q8, k8: (B*H*S, D) e4m3; v8t: (B*H*D, S) e4m3 (V^T per head); v_descale (B*H,) fp32;
    q_descale, k_descale (B*H,) fp32, or (B*H*S,) with ``per_token``. ``consumers``: "shared" (one
    8-warp consumer partition) or "split" (two 4-warp ones); ``pingpong``, ``p_in_exp2``,
    ``key_permuted_v`` (v8t's keys in key_permutation's order): see OPTIONS. Returns out (B*H*S, D)
    bf16 (written into ``out`` if given)."""
    import torch

    _require_gluon()
    split, q_rows, num_warps = _variant(consumers)
    n_rows, head_dim = q8.shape
    bh = v_descale.numel()
    seq = n_rows // bh
    assert head_dim in (64, 128), head_dim
    assert seq * bh == n_rows and seq % BLOCK_M == 0 and seq % BLOCK_N == 0, "S must be a multiple of 128"
    assert not split or seq >= 2 * BLOCK_N, "consumers='split' peels key block 1: S >= 256"
    assert k8.shape == q8.shape and v8t.shape == (bh * head_dim, seq), (k8.shape, v8t.shape)
    for t in (q8, k8, v8t):
        assert t.dtype == torch.float8_e4m3fn and t.is_contiguous()
    qk_len = n_rows if per_token else bh
    for t, n in ((q_descale, qk_len), (k_descale, qk_len), (v_descale, bh)):
        assert t.dtype == torch.float32 and t.numel() == n and t.is_contiguous(), (t.shape, n)
    if out is None:
        out = torch.empty(n_rows, head_dim, device=q8.device, dtype=torch.bfloat16)
    ql, kl, vl, ol = _layouts(head_dim, q_rows)
    q_desc = TensorDescriptor.from_tensor(q8, [q_rows, head_dim], ql)
    k_desc = TensorDescriptor.from_tensor(k8, [BLOCK_N, head_dim], kl)
    vt_desc = TensorDescriptor.from_tensor(v8t, [head_dim, BLOCK_N], vl)
    o_desc = TensorDescriptor.from_tensor(out, [q_rows, head_dim], ol)
    grid = (seq // BLOCK_M, bh)
    gluon_attention_kernel[grid](q_desc, k_desc, vt_desc, o_desc, q_descale, k_descale, v_descale,
                                 sm_scale * LOG2E, seq, NUM_STAGES=num_stages, SPLIT=split, PER_TOKEN=per_token,
                                 PINGPONG=pingpong, P_IN_EXP2=p_in_exp2, KEY_PERMUTED_V=key_permuted_v,
                                 num_warps=num_warps, maxnreg=MAXNREG)
    return out


def _require_gluon():
    if _GLUON_ERROR is not None:
        raise RuntimeError(f"triton.experimental.gluon is unavailable in triton {triton.__version__}: "
                           f"{_GLUON_ERROR!r}. This prototype needs triton 3.6 (e.g. PYTHONPATH=/tmp/tri36/site).")
    if not triton.__version__.startswith(SUPPORTED_TRITON):
        raise RuntimeError(f"this Gluon prototype is written against triton {SUPPORTED_TRITON}x's API; found "
                           f"triton {triton.__version__} (on the CPU box: PYTHONPATH=/tmp/tri36/site).")


# --------------------------------------------------------------------------------------------
# --compile-only: sm_90 offline compile, resources, loop schedule
# --------------------------------------------------------------------------------------------
def compile_for_hopper(head_dim: int = 128, num_stages: int = 2, consumers: str = "shared", per_token: bool = False,
                       pingpong: bool = False, p_in_exp2: bool = False, key_permuted_v: bool = False):
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    _require_gluon()
    split, q_rows, num_warps = _variant(consumers)
    ql, kl, vl, ol = _layouts(head_dim, q_rows)

    def desc(dtype, block, layout):
        return f"tensordesc<{dtype}[{block[0]}, {block[1]}],{layout!r}>"

    fn = gluon_attention_kernel
    signature = {
        "q_desc": desc("fp8e4nv", (q_rows, head_dim), ql),
        "k_desc": desc("fp8e4nv", (BLOCK_N, head_dim), kl),
        "vt_desc": desc("fp8e4nv", (head_dim, BLOCK_N), vl),
        "o_desc": desc("bf16", (q_rows, head_dim), ol),
        "q_descale_ptr": "*fp32", "k_descale_ptr": "*fp32", "v_descale_ptr": "*fp32",
        "sm_scale_log2": "fp32", "S": "i32", "NUM_STAGES": "constexpr", "SPLIT": "constexpr",
        "PER_TOKEN": "constexpr", "PINGPONG": "constexpr", "P_IN_EXP2": "constexpr",
        "KEY_PERMUTED_V": "constexpr", "num_warps": "constexpr",
    }
    names = fn.arg_names
    constexprs = {(names.index("NUM_STAGES"),): num_stages, (names.index("SPLIT"),): split,
                  (names.index("PER_TOKEN"),): per_token, (names.index("PINGPONG"),): pingpong,
                  (names.index("P_IN_EXP2"),): p_in_exp2, (names.index("KEY_PERMUTED_V"),): key_permuted_v,
                  (names.index("num_warps"),): num_warps}
    # What a launch specializes: 16-byte aligned pointers, S divisible by 16.
    aligned = ("q_descale_ptr", "k_descale_ptr", "v_descale_ptr", "S")
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = GluonASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, maxnreg=MAXNREG))


def ptxas_warnings(kernel) -> list[str]:
    """ptxas -v on the PTX again, keeping what it says about wgmma serialization / spills."""
    from kernel_resources import nvidia_tool

    with tempfile.TemporaryDirectory() as d:
        ptx = os.path.join(d, "k.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        r = subprocess.run([nvidia_tool("ptxas"), "-v", "-arch=sm_90a", ptx, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    lines = (r.stdout + r.stderr).splitlines()
    return [ln.strip() for ln in lines if re.search(r"warn|serializ|spill|Used \d+ registers", ln, re.I)]


# Instruction classes in the schedule summary, first match wins.
_PTX_OPS = [
    (r"wgmma\.fence", "fence"),
    (r"wgmma\.mma_async", "mma"),
    (r"wgmma\.commit_group", "commit"),
    (r"wgmma\.wait_group\.sync\.aligned\s+(\d+)", "wait{0}"),
    (r"ex2\.approx", "ex2"),
    (r"mbarrier\.try_wait", "mbar.wait"),
    (r"mbarrier\.arrive\.expect_tx", "mbar.expect"),
    (r"mbarrier\.arrive", "mbar.arrive"),
    (r"cp\.async\.bulk\.tensor", "tma"),
    (r"ld\.global", "ldg"),  # per-token: the K scales
    (r"bar\.sync\s+\d+,\s*(\d+)", "bar.sync/{0}"),  # /threads: 256 = both consumer warpgroups
    (r"bar\.sync|barrier\.sync", "bar.sync"),
    (r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", "setmaxnreg.{0} {1}"),
]
_SASS_OPS = [
    (r"\bWARPGROUP\.ARRIVE\b", "fence"),
    (r"\b[HQI]GMMA\.", "mma"),
    (r"\bWARPGROUP\.DEPBAR\.LE\s+gsb0,\s*(0x[0-9a-f]+)", "wait{0}"),
    (r"\bMUFU\.EX2\b", "ex2"),
    (r"\bSYNCS\.ARRIVE[^ ]*", "mbar.arrive"),
    (r"\bSYNCS\.PHASECHK[^ ]*", "mbar.wait"),
    (r"\bUTMALDG\b", "tma"),
    (r"\bLDG\.", "ldg"),
    (r"\bBAR\.SYNC(?:\.DEFER_BLOCKING)?\s+0x[0-9a-f]+,\s*(0x[0-9a-f]+)", "bar.sync/{0}"),
    (r"\bBAR\.SYNC\b|\bBAR\.SYNC\.DEFER_BLOCKING\b", "bar.sync"),
]


def _classify(line: str, ops) -> str | None:
    for pat, name in ops:
        m = re.search(pat, line)
        if m:
            return name.format(*(int(g, 0) if g and g[0].isdigit() else g for g in m.groups()))
    return None


def _compress(tokens: list[str]) -> str:
    out, i = [], 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == tokens[i]:
            j += 1
        out.append(tokens[i] if j - i == 1 else f"{tokens[i]} x{j - i}")
        i = j
    return " > ".join(out)


def _ptx_loops(lines: list[str]):
    """(first, last) line ranges closed by a backward branch to a label: the loop bodies."""
    labels = {m.group(1): i for i, ln in enumerate(lines) if (m := re.match(r"^\s*(\$L__BB\d+_\d+):", ln))}
    for i, ln in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);", ln)
        if m and labels.get(m.group(1), i) < i:
            yield labels[m.group(1)], i


def _sass_loops(lines: list[str]):
    """The same for cuobjdump -sass: lines start /*addr*/, branches name an address."""
    addr = {int(m.group(1), 16): i for i, ln in enumerate(lines) if (m := re.match(r"^\s*/\*([0-9a-f]+)\*/", ln))}
    for i, ln in enumerate(lines):
        m = re.search(r"\bBRA\s+(0x[0-9a-f]+)\s*;", ln)
        if m and addr.get(int(m.group(1), 16), i) < i:
            yield addr[int(m.group(1), 16)], i


def main_loop_schedules(text: str, ops, loops) -> list[str]:
    """The compressed op sequences of the loops holding both MMAs and exp2s, in text order: the
    shortest such loop, then any shorter-first others that overlap none already taken (one per
    consumer partition with "split"; ptxas's SASS also has longer loops spanning the rotated body)."""
    lines = text.splitlines()
    found = sorted(((a, b) for a, b in loops(lines)
                    if {"mma", "ex2"} <= {_classify(ln, ops) for ln in lines[a:b + 1]}), key=lambda r: r[1] - r[0])
    taken: list[tuple[int, int]] = []
    for a, b in found:
        if all(b < c or d < a for c, d in taken):
            taken.append((a, b))
    return [_compress([t for t in (_classify(ln, ops) for ln in lines[a:b + 1]) if t]) for a, b in sorted(taken)]


def arrive_guards(ptx: str) -> dict[str, int]:
    """How many consumer mbarrier.arrive sites (not the producer's expect_tx) are guarded by each
    'tid % N == 0' test: one elected thread per partition is what the empty barriers' counts assume."""
    lines = ptx.splitlines()
    tid = {m.group(1) for ln in lines if (m := re.search(r"mov\.u32\s+(%r\d+),\s*%tid\.x", ln))}
    masks = {m.group(1): int(m.group(3)) + 1 for ln in lines
             if (m := re.search(r"and\.b32\s+(%r\d+),\s*(%r\d+),\s*(\d+);", ln)) and m.group(2) in tid}
    preds = {}
    for ln in lines:
        if (m := re.search(r"setp\.eq\.b32\s+(%p\d+),\s*(%r\d+),\s*0;", ln)) and m.group(2) in masks:
            preds[m.group(1)] = [f"tid % {masks[m.group(2)]} == 0"]
        elif m := re.search(r"mov\.pred\s+(%p\d+),\s*0;", ln):
            preds[m.group(1)] = ["false (dead: the peeled block's v_empty)"]
        elif m := re.search(r"and\.pred\s+(%p\d+),\s*(%p\d+),\s*(%p\d+);", ln):
            preds[m.group(1)] = preds.get(m.group(2), []) + preds.get(m.group(3), [])
    out: dict[str, int] = {}
    for ln in lines:
        if m := re.search(r"@(%p\d+)\s+mbarrier\.arrive\.shared::cta", ln):
            key = " & ".join(preds.get(m.group(1), [])) or f"{m.group(1)} (not a tid test)"
            out[key] = out.get(key, 0) + 1
        elif re.search(r"^\s*mbarrier\.arrive\.shared::cta", ln):
            out["unguarded (every thread)"] = out.get("unguarded (every thread)", 0) + 1
    return out


def compile_only(head_dim: int, num_stages: int, variants: list[str]) -> None:
    from kernel_resources import cuobjdump, resources  # benchmarks/: cuobjdump's registers, stack, SASS

    print(f"triton {triton.__version__}, sm_90, D = {head_dim}, NUM_STAGES = {num_stages}, maxnreg {MAXNREG}")
    for name in variants:
        opts = parse_variant(name)
        consumers, per_token = opts["consumers"], opts["per_token"]
        k = compile_for_hopper(head_dim, num_stages, **opts)
        regs, stack = resources(k)
        ptx = k.asm["ptx"]
        layout = ("2 consumer partitions x 4 warps" if consumers == "split" else "1 consumer partition x 8 warps")
        print(f"\n=== {name}: {layout} + 1 producer warp; {'per-token' if per_token else 'per-head'} Q/K scales")
        print(f"regs {regs}  stack {stack} B  shared {k.metadata.shared} B")
        setmax = sorted(set(re.findall(r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", ptx)))
        print("setmaxnreg:", ", ".join(f"{d} {n}" for d, n in setmax) or "none")
        for w in ptxas_warnings(k):
            print("ptxas:", w)
        guards = arrive_guards(ptx)
        print("consumer mbarrier.arrive sites by guard:", ", ".join(f"{g}: {n}" for g, n in guards.items()))
        sass = cuobjdump(k, "-sass")
        for kind, text, ops, loops in (("PTX", ptx, _PTX_OPS, _ptx_loops), ("SASS", sass, _SASS_OPS, _sass_loops)):
            scheds = main_loop_schedules(text, ops, loops) or ["(no loop with both wgmma and ex2 found)"]
            for i, sched in enumerate(scheds):
                print(f"{kind} main loop {i + 1}/{len(scheds)}: {sched}")
    print("\nRead a loop as: Q K^T (mma x4) and P V (mma x4) issue back to back; 'wait1' retires Q K^T only; "
          "the ex2 run follows while P V is in flight; P V's 'wait0' opens the next iteration (the loop is "
          "rotated). 'wait0' right before the ex2s, or a 'serialized' ptxas warning, means no overlap. "
          "bar.sync/N: N threads meet before an mbarrier arrive / wait (256: both warpgroups, 'shared'; "
          "128: one warpgroup, 'split'). ldg: per-token K-scale loads. SASS wait0x1 = DEPBAR.LE gsb0, 0x1.")


# --------------------------------------------------------------------------------------------
# GPU mode: correctness and speed
# --------------------------------------------------------------------------------------------
def _quantize(x, per_token: bool):
    """(BH, S, D) fp32 -> e4m3 with amax/448 scales, one per head or (per_token) one per row;
    returns (x8, descale): (BH,) or (BH, S)."""
    import torch

    amax = x.abs().amax(dim=2, keepdim=True) if per_token else x.abs().amax(dim=(1, 2), keepdim=True)
    scale = amax.clamp_min(1e-12) / 448.0
    x8 = (x / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return x8, scale.reshape(x.shape[:2] if per_token else x.shape[:1]).float().contiguous()


def _reference(q8, k8, v8, qd, kd, vd, sm_scale, rows):
    """fp32 attention on the dequantized e4m3 inputs for the query ``rows`` of every head:
    (BH, len(rows), D). Descales: (BH,) per head or (BH, S) per token."""
    import torch

    def deq(x8, d, h, idx=slice(None)):
        return x8[h, idx].float() * (d[h, idx][:, None] if d.dim() == 2 else d[h])

    out = torch.empty(q8.shape[0], rows.numel(), q8.shape[2], device=q8.device, dtype=torch.float32)
    for h in range(q8.shape[0]):
        q, k, v = deq(q8, qd, h, rows), deq(k8, kd, h), deq(v8, vd, h)
        out[h] = torch.softmax((q @ k.T) * sm_scale, dim=-1) @ v
    return out


def _fa3_fp8(q8, k8, v8, qd, kd, vd):
    """FlashAttention-3's FP8 kernel on the same per-head e4m3 inputs ((BH, S, D) -> B = 1 views), or None."""
    try:
        import flash_attn_interface
    except ImportError:
        return None
    heads = q8.shape[0]
    q4, k4, v4 = (t[None].transpose(1, 2) for t in (q8, k8, v8))  # (1, S, H, D) strided views
    d4 = [t.view(1, heads) for t in (qd, kd, vd)]
    return lambda: flash_attn_interface.flash_attn_func(q4, k4, v4, q_descale=d4[0], k_descale=d4[1],
                                                        v_descale=d4[2])  # (1, S, H, D) bf16


def gpu_run(shapes: list[tuple[int, int, int]], stages: list[int], variants: list[str], records: list) -> None:
    """Per shape: quantize activation-like inputs (per head and per token), then for each variant and
    ring depth check the output (NaN-poisoned buffer, sampled rows against fp32 attention on the
    dequantized inputs) and time it; FA3 FP8 and our Triton kernel on the same e4m3 inputs."""
    import torch
    from triton.testing import do_bench

    from accel.kernels.attention import launch_attention
    from accel.testing import activation_like_qkv

    _require_gluon()
    dev = "cuda"
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")

    def bench(fn):
        return do_bench(fn, warmup=50, rep=200, return_mode="median")

    def rel(o, ref, rows):  # o: (BH, S, D) or any view of the same elements in that order
        o = o.reshape(ref.shape[0], -1, ref.shape[2])[:, rows].float()
        return ((o - ref).norm() / ref.norm()).item()

    for heads, seq, head_dim in shapes:
        sm_scale = head_dim ** -0.5
        flops = 4.0 * heads * seq * seq * head_dim
        q, k, v = (t[0].float() for t in activation_like_qkv(1, heads, seq, seq, head_dim, device=dev))
        rows = torch.randperm(seq, device=dev)[:256].sort().values
        v8, vd = _quantize(v, per_token=False)  # V: one scale per head in every variant
        v8t = v8.transpose(1, 2).contiguous()  # (BH, D, S)
        vt2 = v8t.view(-1, seq)
        vt2_permuted = v8t[:, :, key_permutation(seq).to(dev)].contiguous().view(-1, seq)
        tag = f"{heads}x{seq}x{head_dim}"
        for per_token in sorted({parse_variant(n)["per_token"] for n in variants}):
            gran = "token" if per_token else "head"
            (q8, qd), (k8, kd) = _quantize(q, per_token), _quantize(k, per_token)
            ref = _reference(q8, k8, v8, qd, kd, vd, sm_scale, rows)
            q2, k2, qd1, kd1 = q8.view(-1, head_dim), k8.view(-1, head_dim), qd.view(-1), kd.view(-1)
            base = {}
            fa3 = None if per_token else _fa3_fp8(q8, k8, v8, qd, kd, vd)
            if fa3 is not None:
                base["fa3-fp8"] = (rel(fa3()[0].transpose(0, 1), ref, rows), bench(fa3))
            o4 = torch.empty(1, heads, seq, head_dim, device=dev, dtype=torch.bfloat16)
            targs = (q8[None], k8[None], v8t[None], qd[None], kd[None], vd[None], o4, head_dim, sm_scale)
            launch_attention(*targs)
            base["triton"] = (rel(o4, ref, rows), bench(lambda: launch_attention(*targs)))
            for name, (err, ms) in base.items():
                print(f"{tag} {gran:<5} {name:<18} rel. L2 {err:.4f}  {ms:.3f} ms  {flops / ms * 1e-9:6.1f} TFLOP/s",
                      flush=True)
                records.append(dict(shape=[heads, seq, head_dim], granularity=gran, kernel=name, rel_l2=err, ms=ms,
                                    tflops=flops / ms * 1e-9))
            for name in variants:
                opts = parse_variant(name)
                if opts["per_token"] != per_token:
                    continue
                for ns in stages:
                    out = torch.full((heads * seq, head_dim), float("nan"), device=dev, dtype=torch.bfloat16)

                    def run():
                        vt = vt2_permuted if opts["key_permuted_v"] else vt2
                        return gluon_fp8_attention(q2, k2, vt, qd1, kd1, vd, sm_scale, out=out, num_stages=ns,
                                                   **opts)

                    run()
                    torch.cuda.synchronize()
                    nan_rows = torch.isnan(out.float()).any(dim=1).sum().item()
                    err = rel(out, ref, rows)
                    ms = bench(run)
                    ratios = "  ".join(f"{b[1] / ms:.2f}x {n}" for n, b in base.items())
                    print(f"{tag} {gran:<5} gluon {name} s{ns:<4} rel. L2 {err:.4f}  {ms:.3f} ms  "
                          f"{flops / ms * 1e-9:6.1f} TFLOP/s  NaN rows {nan_rows}  {ratios}", flush=True)
                    records.append(dict(shape=[heads, seq, head_dim], granularity=gran, kernel=f"gluon-{name}",
                                        stages=ns, rel_l2=err, nan_rows=nan_rows, ms=ms, tflops=flops / ms * 1e-9,
                                        **{f"vs_{n}": b[1] / ms for n, b in base.items()}))
            del q8, k8, q2, k2


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compile-only", action="store_true", help="compile for sm_90 here (no GPU) and report")
    p.add_argument("--shapes", default="24x8192x128",
                   help="comma-separated HxSxD (B*H heads), S a multiple of 128; the first may be a small check")
    p.add_argument("--stages", default="2", help="K/V ring depths, comma-separated (2, 3)")
    p.add_argument("--variants", default="all",
                   help=f"comma-separated, or 'all': {', '.join(VARIANTS)} (consumers-scales), each with any "
                        f"of {', '.join('+' + o for o in OPTIONS)}")
    p.add_argument("--json", help="GPU mode: write every measurement here")
    args = p.parse_args(argv)
    shapes = [tuple(int(x) for x in s.lower().split("x")) for s in args.shapes.split(",")]
    stages = [int(s) for s in args.stages.split(",")]
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    try:
        for v in variants:
            parse_variant(v)
    except ValueError as exc:
        sys.exit(str(exc))
    try:
        _require_gluon()
    except RuntimeError as exc:
        sys.exit(str(exc))
    if args.compile_only:
        for ns in stages:
            compile_only(shapes[0][2], ns, variants)
        return
    if any(s % 128 for _, s, _ in shapes):
        sys.exit("S must be a multiple of 128")
    records: list = []
    try:
        gpu_run(shapes, stages, variants, records)
    finally:
        if args.json:
            import json

            import torch

            with open(args.json, "w") as f:
                json.dump({"device": torch.cuda.get_device_name(), "triton": triton.__version__,
                           "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
