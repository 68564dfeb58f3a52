"""FP8 flash-attention forward in Gluon for Hopper (sm_90): an UNMEASURED PROTOTYPE.

It was written and compile-checked on a machine without a GPU; nothing here has run on an H100/H200 yet.
It targets triton 3.6's Gluon (``triton.experimental.gluon``), the Triton on the GPU machine; other
Triton versions are refused in ``main`` (the Gluon API changes between releases).

Why: our Triton kernel (kernels/attention.py) reaches 0.76x of FlashAttention-3's FP8 kernel. Triton
3.6 waits for Q K^T (``wgmma.wait_group 0``) right after issuing it, so the softmax never overlaps the
tensor cores, and its automatic warp specialization hangs. Gluon lets us write FA3's schedule by hand:

* a 1-warp TMA producer partition streams K and V^T tiles (128 keys) into a ring of NUM_STAGES
  shared-memory buffers, each with a ready and an empty mbarrier; Q is loaded once by TMA;
* the consumer is the default partition with 8 warps = two warpgroups of 64 query rows
  (BLOCK_M = 128 per CTA);
* in the consumer loop, block j's Q K^T and block j-1's P V are both issued asynchronously, then
  ``warpgroup_mma_wait(num_outstanding=1)`` waits for Q K^T only: block j's exp2s run while P V is
  still on the tensor cores (FA3's intra-warpgroup overlap). The loop is rotated so that P V's
  ``wait_group 0`` opens the next iteration: in straight-line code ptxas hoisted it above the exps.

Why one 8-warp default partition rather than two 4-warp consumer partitions: the default partition
is the only one that may take tensor arguments, both warpgroups then share one copy of the code and
of the K/V barriers (one arrive per release), and with warps_per_cta [8, 1] each warpgroup's rows
and wgmmas are its own. The cost, visible in the schedule: Gluon lowers each mbarrier.arrive to one
elected thread behind a ``bar.sync 0, 256``, so the two warpgroups meet 3 times per key block; FA3
lets them drift apart (and ping-pongs them with named barriers). Two consumer partitions (default
+ a 4-warp worker, empty barriers with count=2) would remove that coupling: the next step to try.

Numerics mirror the per-head path of kernels/attention.py: s = (Q8 K8^T) * sm_scale * log2(e) *
q_descale * k_descale in log2 units, exact running max, p = exp2(s - m), l from unquantized p,
acc += e4m3(p * 256) @ V8 (FP8 wgmma, fp32 accumulate), out = acc / (l * 256) * v_descale, bf16.
Non-causal, no masks: S must be a multiple of 128. D = 128 (64 should work; compile-check it).

Run it:

    # here, no GPU: compile for sm_90, print registers/stack and the main loop's schedule
    PYTHONPATH=/tmp/tri36/site .ci-venv/bin/python benchmarks/gluon_attention.py --compile-only
    # on the H200 (triton 3.6): correctness vs fp32 torch attention, TFLOP/s, our Triton kernel too
    python benchmarks/gluon_attention.py --shape 24x8192x128

What to look for:

* ``--compile-only``: STACK 0 (no spills), setmaxnreg 240 for the consumers / 24 for the producer
  (the kernel-wide "regs" is the 168 launch bound; the consumer code uses more after setmaxnreg).
  Loop schedule: ``mma x4`` (Q K^T) ``mma x4`` (P V) ``wait1``, then the ``ex2`` run at the end of
  the body and ``wait0`` only at the top of the next iteration, in the PTX and also in the SASS
  (after ptxas's scheduling, which is what runs). ``wait0`` directly before ``ex2`` in the SASS line
  would mean the overlap is lost; so would ptxas warnings that wgmma is "serialized".
* GPU mode: rel. L2 about 0.03-0.07 against fp32 attention on the dequantized e4m3 inputs (the
  output buffer starts as NaN, so rows never written show up as NaN), and TFLOP/s next to our Triton
  kernel's. If it hangs, suspect the mbarrier phases / arrive counts first (see the comments).
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
CONSUMER_WARPS = 8
PRODUCER_REGS = 24  # the minimum setmaxnreg allows; the producer only issues TMA
# Register budget for the whole CTA, per thread of 12 warps (8 consumer + the producer's warpgroup):
# 168 * 384 threads = 64512 registers; the producer's warpgroup keeps 24 * 128, so the consumers
# get (64512 - 3072) / 256 = 240 each, as FA3 gives its consumer warpgroups.
MAXNREG = 168
SUPPORTED_TRITON = "3.6."


# --------------------------------------------------------------------------------------------
# Producer partition (1 warp): TMA loads of Q once, then K_j and V^T_j into the ring.
# --------------------------------------------------------------------------------------------
@gluon.jit
def _producer(q_desc, k_desc, vt_desc, q_smem, k_bufs, vt_bufs, q_bar, k_ready, k_empty, v_ready, v_empty,
              q_row, kv_row, vt_row, n_blocks):
    TILE_N: gl.constexpr = k_desc.block_type.shape[0]
    NUM_STAGES: gl.constexpr = k_bufs.type.shape[0]

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [q_row, 0], q_bar, q_smem)

    for j in range(n_blocks):
        stage = j % NUM_STAGES
        # Empty barriers start "phase 1 complete", so the first lap (parity 1) does not block: the
        # ring fills NUM_STAGES tiles ahead before waiting for the consumer.
        parity = ((j // NUM_STAGES) & 1) ^ 1
        # K and V^T get separate barriers: Q K^T of block j can start before V^T_j has landed.
        mbarrier.wait(k_empty.index(stage), parity)
        mbarrier.expect(k_ready.index(stage), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [kv_row + j * TILE_N, 0], k_ready.index(stage), k_bufs.index(stage))
        mbarrier.wait(v_empty.index(stage), parity)
        mbarrier.expect(v_ready.index(stage), vt_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(vt_desc, [vt_row, j * TILE_N], v_ready.index(stage), vt_bufs.index(stage))


# --------------------------------------------------------------------------------------------
# Consumer partition (default, 8 warps = 2 warpgroups x 64 rows): MMAs and online softmax.
# --------------------------------------------------------------------------------------------
@gluon.jit
def _online_softmax(s, m_i, l_i, qk_scale):
    """One block of the online softmax, log2 units; the scale rides on the exp2's FFMA."""
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)  # first block: exp2(-inf) = 0, and l = acc = 0 anyway
    l_i = l_i * alpha + gl.sum(p, axis=1)  # the row sum uses unquantized P
    return p, alpha, l_i, m_new


@gluon.jit
def _to_p8(p, p_layout: gl.constexpr):
    # P <= 1, times 256 (P_SCALE): no saturation needed. As a register A operand of the P V wgmma,
    # P never goes through shared memory.
    return gl.convert_layout((p * 256.0).to(gl.float8e4nv), p_layout)


@gluon.jit
def _consumer(q_smem, k_bufs, vt_bufs, o_smem, o_desc, q_bar, k_ready, k_empty, v_ready, v_empty,
              q_row, n_blocks, qk_scale, v_descale, num_warps: gl.constexpr):
    TILE_M: gl.constexpr = q_smem.type.shape[0]
    HEAD_DIM: gl.constexpr = q_smem.type.shape[1]
    TILE_N: gl.constexpr = k_bufs.type.shape[1]
    NUM_STAGES: gl.constexpr = k_bufs.type.shape[0]

    # warps_per_cta [8, 1]: each warpgroup owns 64 full rows, so row max / row sum stay inside a
    # warp (quad shuffles, no shared memory) and each warpgroup's wgmma is independent of the other.
    # instr_shape: m16, n = the whole tile, k = 32 (256 bits of e4m3).
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, TILE_N, 32])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=4)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)

    m_i = gl.full([TILE_M], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([TILE_M], gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([TILE_M, HEAD_DIM], gl.float32, o_layout)
    s_init = gl.zeros([TILE_M, TILE_N], gl.float32, s_layout)  # ignored: use_acc=False

    # Stage 0 - prologue: Q, then S_0 = Q K_0^T and its softmax (nothing to overlap with yet).
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_ready.index(0), 0)
    s = warpgroup_mma(q_smem, k_bufs.index(0).permute((1, 0)), s_init, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
    mbarrier.arrive(k_empty.index(0), count=1)
    p, alpha, l_i, m_i = _online_softmax(s, m_i, l_i, qk_scale)
    acc = warpgroup_mma_init(acc)  # the loop carries acc as an in-flight wgmma accumulator

    # Stage 1 - steady state. Iteration j: finish block j-1 (retire P_{j-2} V_{j-2}, rescale,
    # quantize P_{j-1}), then run S_j = Q K_j^T and acc += P_{j-1} V_{j-1} together.
    # Trick 3 (loop rotation): the wait_group 0 for P V sits at the top of the next iteration, across
    # the loop's back edge from block j's exp2s. In one basic block ptxas hoists that wait above
    # all the exps (checked in SASS with the straight-line order), which serializes softmax and MMA.
    for j in range(1, n_blocks):
        stage = j % NUM_STAGES
        prev = (j - 1) % NUM_STAGES
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        # V^T_{j-2}'s slot is free once P_{j-2} V_{j-2} has retired (no P V before j = 2).
        mbarrier.arrive(v_empty.index((j - 2 + NUM_STAGES) % NUM_STAGES), count=1, pred=j >= 2)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
        p8 = _to_p8(p, p_layout)
        # Trick 1 (early Q K^T): issue block j's scores before block j-1's P V, so both MMA groups
        # queue back to back on the tensor cores.
        mbarrier.wait(k_ready.index(stage), (j // NUM_STAGES) & 1)
        s = warpgroup_mma(q_smem, k_bufs.index(stage).permute((1, 0)), s_init, use_acc=False, is_async=True)
        mbarrier.wait(v_ready.index(prev), ((j - 1) // NUM_STAGES) & 1)
        acc = warpgroup_mma(p8, vt_bufs.index(prev).permute((1, 0)), acc, is_async=True)
        # Trick 2 (wait_group 1): wgmma groups retire in order, so <= 1 outstanding means S_j is done
        # while P V (the newer group) keeps running under the softmax below.
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s, ))
        # K_j is no longer read: hand its slot back so the producer's next TMA overlaps the softmax.
        mbarrier.arrive(k_empty.index(stage), count=1)
        p, alpha, l_i, m_i = _online_softmax(s, m_i, l_i, qk_scale)  # exp2s overlap P_{j-1} V_{j-1}

    # Stage 2 - drain: retire P_{n-2} V_{n-2}, then the last block's P V.
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    mbarrier.arrive(v_empty.index((n_blocks - 2 + NUM_STAGES) % NUM_STAGES), count=1, pred=n_blocks >= 2)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
    p8 = _to_p8(p, p_layout)
    last = (n_blocks - 1) % NUM_STAGES
    mbarrier.wait(v_ready.index(last), ((n_blocks - 1) // NUM_STAGES) & 1)
    acc = warpgroup_mma(p8, vt_bufs.index(last).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    mbarrier.arrive(v_empty.index(last), count=1)

    # Stage 3 - epilogue: normalize, descale V, bf16 through shared memory and one TMA store.
    inv = v_descale / (gl.convert_layout(l_i, row_o) * 256.0)
    out = (acc * gl.expand_dims(inv, 1)).to(o_desc.dtype)
    o_smem.store(out)
    fence_async_shared()  # order the generic-proxy smem writes before the async-proxy TMA read
    tma.async_copy_shared_to_global(o_desc, [q_row, 0], o_smem)
    tma.store_wait(pendings=0)


@gluon.jit
def gluon_attention_kernel(q_desc, k_desc, vt_desc, o_desc, q_descale_ptr, k_descale_ptr, v_descale_ptr,
                           sm_scale_log2, S, NUM_STAGES: gl.constexpr, num_warps: gl.constexpr):
    """Grid (S // 128, B*H). Q/K/O: (B*H*S, D) rows; V^T: (B*H*D, S) rows; descales (B*H,) fp32."""
    TILE_M: gl.constexpr = q_desc.block_type.shape[0]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[1]
    TILE_N: gl.constexpr = k_desc.block_type.shape[0]
    gl.static_assert(TILE_M == 16 * num_warps, "one 64-row slab per consumer warpgroup")
    gl.static_assert(vt_desc.block_type.shape[0] == HEAD_DIM)
    gl.static_assert(vt_desc.block_type.shape[1] == TILE_N)

    pid_m = gl.program_id(0)
    bh = gl.program_id(1)
    q_row = bh * S + pid_m * TILE_M
    kv_row = bh * S
    vt_row = bh * HEAD_DIM
    n_blocks = S // TILE_N
    qk_scale = sm_scale_log2 * gl.load(q_descale_ptr + bh) * gl.load(k_descale_ptr + bh)
    v_descale = gl.load(v_descale_ptr + bh)

    # Shared memory: Q 16 KB + NUM_STAGES x (K 16 KB + V^T 16 KB) + O 32 KB (D = 128, 3 stages: 144 KB).
    q_smem = gl.allocate_shared_memory(q_desc.dtype, q_desc.block_type.shape, q_desc.layout)
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [NUM_STAGES] + k_desc.block_type.shape, k_desc.layout)
    vt_bufs = gl.allocate_shared_memory(vt_desc.dtype, [NUM_STAGES] + vt_desc.block_type.shape, vt_desc.layout)
    o_smem = gl.allocate_shared_memory(o_desc.dtype, o_desc.block_type.shape, o_desc.layout)

    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        # ready: one arrive (the producer's expect) + the TMA bytes. empty: one arrive from the
        # consumer partition: Gluon lowers mbarrier.arrive to one elected thread after a bar.sync of
        # the partition's 256 threads (see the schedule), so count=1 covers both warpgroups.
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=1)
    fence_async_shared()  # barrier inits visible to the async proxy (TMA) before first use

    gl.warp_specialize([
        (_consumer, (q_smem, k_bufs, vt_bufs, o_smem, o_desc, q_bar, k_ready, k_empty, v_ready, v_empty,
                     q_row, n_blocks, qk_scale, v_descale, num_warps)),
        (_producer, (q_desc, k_desc, vt_desc, q_smem, k_bufs, vt_bufs, q_bar, k_ready, k_empty, v_ready, v_empty,
                     q_row, kv_row, vt_row, n_blocks)),
    ], [1], [24])  # worker warps, worker registers (= PRODUCER_REGS; a literal, kernels can't read globals)


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------
def _layouts(head_dim: int):
    q = gl.NVMMASharedLayout.get_default_for([BLOCK_M, head_dim], gl.float8e4nv)
    k = gl.NVMMASharedLayout.get_default_for([BLOCK_N, head_dim], gl.float8e4nv)
    vt = gl.NVMMASharedLayout.get_default_for([head_dim, BLOCK_N], gl.float8e4nv)
    o = gl.NVMMASharedLayout.get_default_for([BLOCK_M, head_dim], gl.bfloat16)
    return q, k, vt, o


def gluon_fp8_attention(q8, k8, v8t, q_descale, k_descale, v_descale, sm_scale, out=None, num_stages=2):
    """q8, k8: (B*H*S, D) e4m3; v8t: (B*H*D, S) e4m3 (V^T per head); descales (B*H,) fp32.
    Returns out (B*H*S, D) bf16 (written into ``out`` if given)."""
    import torch

    _require_gluon()
    n_rows, head_dim = q8.shape
    bh = q_descale.numel()
    seq = n_rows // bh
    assert head_dim in (64, 128), head_dim
    assert seq * bh == n_rows and seq % BLOCK_M == 0 and seq % BLOCK_N == 0, "S must be a multiple of 128"
    assert k8.shape == q8.shape and v8t.shape == (bh * head_dim, seq), (k8.shape, v8t.shape)
    for t in (q8, k8, v8t):
        assert t.dtype == torch.float8_e4m3fn and t.is_contiguous()
    for t in (q_descale, k_descale, v_descale):
        assert t.dtype == torch.float32 and t.numel() == bh and t.is_contiguous()
    if out is None:
        out = torch.empty(n_rows, head_dim, device=q8.device, dtype=torch.bfloat16)
    ql, kl, vl, ol = _layouts(head_dim)
    q_desc = TensorDescriptor.from_tensor(q8, [BLOCK_M, head_dim], ql)
    k_desc = TensorDescriptor.from_tensor(k8, [BLOCK_N, head_dim], kl)
    vt_desc = TensorDescriptor.from_tensor(v8t, [head_dim, BLOCK_N], vl)
    o_desc = TensorDescriptor.from_tensor(out, [BLOCK_M, head_dim], ol)
    grid = (seq // BLOCK_M, bh)
    gluon_attention_kernel[grid](q_desc, k_desc, vt_desc, o_desc, q_descale, k_descale, v_descale,
                                 sm_scale * LOG2E, seq, NUM_STAGES=num_stages,
                                 num_warps=CONSUMER_WARPS, maxnreg=MAXNREG)
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
def compile_for_hopper(head_dim: int = 128, num_stages: int = 2):
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    _require_gluon()
    ql, kl, vl, ol = _layouts(head_dim)

    def desc(dtype, block, layout):
        return f"tensordesc<{dtype}[{block[0]}, {block[1]}],{layout!r}>"

    fn = gluon_attention_kernel
    signature = {
        "q_desc": desc("fp8e4nv", (BLOCK_M, head_dim), ql),
        "k_desc": desc("fp8e4nv", (BLOCK_N, head_dim), kl),
        "vt_desc": desc("fp8e4nv", (head_dim, BLOCK_N), vl),
        "o_desc": desc("bf16", (BLOCK_M, head_dim), ol),
        "q_descale_ptr": "*fp32", "k_descale_ptr": "*fp32", "v_descale_ptr": "*fp32",
        "sm_scale_log2": "fp32", "S": "i32", "NUM_STAGES": "constexpr", "num_warps": "constexpr",
    }
    names = fn.arg_names
    constexprs = {(names.index("NUM_STAGES"),): num_stages, (names.index("num_warps"),): CONSUMER_WARPS}
    # What a launch specializes: 16-byte aligned pointers, S divisible by 16.
    aligned = ("q_descale_ptr", "k_descale_ptr", "v_descale_ptr", "S")
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = GluonASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=CONSUMER_WARPS, maxnreg=MAXNREG))


def _nvidia_tool(name: str) -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def ptxas_warnings(kernel) -> list[str]:
    """ptxas -v on the PTX again, keeping what it says about wgmma serialization / spills."""
    with tempfile.TemporaryDirectory() as d:
        ptx = os.path.join(d, "k.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        r = subprocess.run([_nvidia_tool("ptxas"), "-v", "-arch=sm_90a", ptx, "-o", os.path.join(d, "k.cubin")],
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


def main_loop_schedule(text: str, ops, loops) -> str:
    """The compressed op sequence of the loop holding both MMAs and exp2s (the consumer's)."""
    lines = text.splitlines()
    best, best_len = None, None
    for a, b in loops(lines):
        toks = [t for t in (_classify(ln, ops) for ln in lines[a:b + 1]) if t]
        if "mma" in toks and "ex2" in toks and (best_len is None or b - a < best_len):
            best, best_len = toks, b - a  # the innermost such loop
    return _compress(best) if best else "(no loop with both wgmma and ex2 found)"


def _sass(kernel) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        return subprocess.run([_nvidia_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout


def compile_only(head_dim: int, num_stages: int) -> None:
    from kernel_resources import resources  # benchmarks/: cuobjdump's registers and stack

    k = compile_for_hopper(head_dim, num_stages)
    regs, stack = resources(k)
    ptx = k.asm["ptx"]
    print(f"triton {triton.__version__}, sm_90, D = {head_dim}, NUM_STAGES = {num_stages}, "
          f"{CONSUMER_WARPS} consumer warps + 1 producer warp, maxnreg {MAXNREG}")
    print(f"regs {regs}  stack {stack} B  shared {k.metadata.shared} B")
    setmax = sorted(set(re.findall(r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", ptx)))
    print("setmaxnreg:", ", ".join(f"{d} {n}" for d, n in setmax) or "none")
    for w in ptxas_warnings(k):
        print("ptxas:", w)
    print("\nPTX main loop (consumer), in program order:")
    print("  " + main_loop_schedule(ptx, _PTX_OPS, _ptx_loops))
    sass = _sass(k)
    print("\nSASS main loop (consumer), after ptxas scheduling (wait0x1 = WARPGROUP.DEPBAR.LE gsb0, 0x1):")
    print("  " + main_loop_schedule(sass, _SASS_OPS, _sass_loops))
    print("\nRead it as: Q K^T (mma x4) and P V (mma x4) issue back to back; 'wait1' retires Q K^T only; "
          "the ex2 run follows while P V is in flight; P V's 'wait0' opens the next iteration (the loop "
          "is rotated). 'wait0' right before the ex2s would mean no overlap. bar.sync = the 8 consumer "
          "warps meeting before an mbarrier arrive / wait.")


# --------------------------------------------------------------------------------------------
# GPU mode: correctness and speed
# --------------------------------------------------------------------------------------------
def _quantize_per_head(x):
    """(BH, S, D) fp32 -> e4m3 with one amax/448 scale per head; returns (x8, descale (BH,))."""
    import torch

    scale = x.abs().amax(dim=(1, 2)).clamp_min(1e-12) / 448.0
    x8 = (x / scale[:, None, None]).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return x8, scale.float().contiguous()


def _reference(q8, k8, v8, qd, kd, vd, sm_scale):
    """fp32 attention on the dequantized e4m3 inputs, one head at a time (S x S fp32 per head)."""
    import torch

    out = torch.empty(q8.shape, device=q8.device, dtype=torch.float32)
    for h in range(q8.shape[0]):
        q, k, v = q8[h].float() * qd[h], k8[h].float() * kd[h], v8[h].float() * vd[h]
        out[h] = torch.softmax((q @ k.T) * sm_scale, dim=-1) @ v
    return out


def gpu_run(heads: int, seq: int, head_dim: int, num_stages: int) -> None:
    import torch
    from triton.testing import do_bench

    _require_gluon()
    dev = "cuda"
    sm_scale = head_dim ** -0.5
    # Activation-like inputs, fresh each run; a few outlier channels as in DiT activations.
    q = torch.randn(heads, seq, head_dim, device=dev) * 2.0
    k = torch.randn(heads, seq, head_dim, device=dev) * 2.0
    v = torch.randn(heads, seq, head_dim, device=dev)
    q[..., :4] *= 4.0
    k[..., :4] *= 4.0
    (q8, qd), (k8, kd), (v8, vd) = (_quantize_per_head(t) for t in (q, k, v))
    v8t = v8.transpose(1, 2).contiguous()  # (BH, D, S)
    q2, k2, vt2 = q8.view(-1, head_dim), k8.view(-1, head_dim), v8t.view(-1, seq)

    out = torch.full((heads * seq, head_dim), float("nan"), device=dev, dtype=torch.bfloat16)
    gluon_fp8_attention(q2, k2, vt2, qd, kd, vd, sm_scale, out=out, num_stages=num_stages)
    torch.cuda.synchronize()
    ref = _reference(q8, k8, v8, qd, kd, vd, sm_scale).view(-1, head_dim)
    o = out.float()
    nan_rows = torch.isnan(o).any(dim=1).sum().item()
    rel = ((o - ref).norm() / ref.norm()).item()
    print(f"shape H={heads} S={seq} D={head_dim}, NUM_STAGES={num_stages}")
    print(f"gluon: rel. L2 {rel:.4f} (expect ~0.03-0.07), rows with NaN {nan_rows}")

    flops = 4.0 * heads * seq * seq * head_dim
    ms = do_bench(lambda: gluon_fp8_attention(q2, k2, vt2, qd, kd, vd, sm_scale, out=out, num_stages=num_stages))
    print(f"gluon: {ms:.3f} ms  {flops / ms * 1e-9:.1f} TFLOP/s")

    try:  # our Triton kernel on the same e4m3 inputs, (B, H, ...) views with B = 1
        from accel.kernels.attention import launch_attention

        o4 = torch.empty(1, heads, seq, head_dim, device=dev, dtype=torch.bfloat16)
        args = (q8[None], k8[None], v8t[None], qd[None], kd[None], vd[None], o4, head_dim, sm_scale)
        launch_attention(*args)
        torch.cuda.synchronize()
        rel_t = ((o4.view(-1, head_dim).float() - ref).norm() / ref.norm()).item()
        ms_t = do_bench(lambda: launch_attention(*args))
        print(f"triton (accel): rel. L2 {rel_t:.4f}  {ms_t:.3f} ms  {flops / ms_t * 1e-9:.1f} TFLOP/s  "
              f"-> gluon/triton speed {ms_t / ms:.2f}x")
    except Exception as exc:  # noqa: BLE001 - optional comparison
        print(f"triton (accel) comparison skipped: {exc!r}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compile-only", action="store_true", help="compile for sm_90 here (no GPU) and report")
    p.add_argument("--shape", default="24x8192x128", help="HxSxD (B*H heads), S a multiple of 128")
    p.add_argument("--stages", type=int, default=2, choices=[2, 3], help="K/V ring depth")
    args = p.parse_args(argv)
    heads, seq, head_dim = (int(x) for x in args.shape.lower().split("x"))
    try:
        _require_gluon()
    except RuntimeError as exc:
        sys.exit(str(exc))
    if args.compile_only:
        compile_only(head_dim, args.stages)
    else:
        if seq % 128:
            sys.exit("S must be a multiple of 128")
        gpu_run(heads, seq, head_dim, args.stages)


if __name__ == "__main__":
    main()
