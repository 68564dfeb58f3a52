"""Probe (NOTES 45): the Gluon kernel with 192-key blocks (a 128-key and a 64-key wgmma per block,
one online-softmax step for both) against the product kernel's 128-key blocks, per head, D = 128.

FA3 takes 224-key blocks for FP8 at D = 128; Gluon tensors are powers of two, so a wide block
here is two sub-blocks. Per 128 keys it saves a third of the per-block work that does not scale
with the keys: the accumulator's rescale (64 FMUL a thread), the row-max and row-sum shuffles,
the barrier waits. The product kernel's helpers are reused; this file holds only what differs.

    # no GPU: registers, spills and the main loop's SASS for sm_90 (triton 3.6 importable)
    PYTHONPATH=/tmp/tri36/site:benchmarks python benchmarks/gluon_wide_probe.py --compile-only
    # H100/H200: error against fp64 exact attention and TFLOP/s against the product kernel and FA3
    python benchmarks/gluon_wide_probe.py --shapes 24x4608x4608,24x8192x8192,12x32760x32760

Measured at 0.66-0.74x of the product everywhere but 12x32760, where it matched FA3 (NOTES 45).
Kept for that open question (NOTES 46: FA3's lead is its wide key block): `gpu_session.sh 25`
profiles it beside the product at a slow and a fast shape (``profile_attention.py --kernels
gluon-head,wide-head`` under Nsight Compute).
"""

from __future__ import annotations

import argparse
import sys

import torch
import triton

from accel.kernels import gluon_attention as ga

if ga._IMPORT_ERROR is None:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (mbarrier, tma, warpgroup_mma, warpgroup_mma_init,
                                                                  warpgroup_mma_wait)
else:
    sys.exit(f"no Gluon API here: {ga._IMPORT_ERROR!r}")

WIDE_N = 192  # keys per block: sub-block a (128) + sub-block b (64)


@gluon.jit
def _wide_producer(args, CONSUMERS: gl.constexpr):
    (q_desc, ka_desc, kb_desc, va_desc, vb_desc, q_bufs, ka_bufs, kb_bufs, va_bufs, vb_bufs, q_ready, q_empty,
     k_ready, k_empty, v_ready, v_empty, Sq, Skv, n_m, n_tiles, n_blocks, key_pad, vt_shift) = args
    STAGES: gl.constexpr = ka_bufs.type.shape[0]
    WG_M: gl.constexpr = q_desc.block_type.shape[0]
    HEAD_DIM: gl.constexpr = va_desc.block_type.shape[0]
    NA: gl.constexpr = ka_desc.block_type.shape[0]
    NW: gl.constexpr = NA + kb_desc.block_type.shape[0]
    i = 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        bh = t // n_m
        qb = i % 2
        mbarrier.wait(q_empty.index(qb), ((i // 2) & 1) ^ 1)
        mbarrier.expect(q_ready.index(qb), CONSUMERS * q_desc.block_type.nbytes)
        for c in gl.static_range(CONSUMERS):
            tma.async_copy_global_to_shared(q_desc, [bh * Sq + ((t % n_m) * CONSUMERS + c) * WG_M, 0],
                                            q_ready.index(qb), q_bufs.index(CONSUMERS * qb + c))
        kv_row = bh * Skv - key_pad
        for j in range(n_blocks):
            g = i * n_blocks + j
            stage = g % STAGES
            parity = ((g // STAGES) & 1) ^ 1
            mbarrier.wait(k_empty.index(stage), parity)
            mbarrier.expect(k_ready.index(stage), ka_desc.block_type.nbytes + kb_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(ka_desc, [kv_row + j * NW, 0], k_ready.index(stage), ka_bufs.index(stage))
            tma.async_copy_global_to_shared(kb_desc, [kv_row + j * NW + NA, 0], k_ready.index(stage),
                                            kb_bufs.index(stage))
            mbarrier.wait(v_empty.index(stage), parity)
            mbarrier.expect(v_ready.index(stage), va_desc.block_type.nbytes + vb_desc.block_type.nbytes)
            # V^T keeps the product's 128-key padding: columns shift by vt_shift (a multiple of 64,
            # so its 32-key mma-order chunks line up); block 0's negative columns read as zeros.
            tma.async_copy_global_to_shared(va_desc, [bh * HEAD_DIM, j * NW - vt_shift], v_ready.index(stage),
                                            va_bufs.index(stage))
            tma.async_copy_global_to_shared(vb_desc, [bh * HEAD_DIM, j * NW - vt_shift + NA], v_ready.index(stage),
                                            vb_bufs.index(stage))
        i += 1


@gluon.jit
def _fold(sa, sb, op: gl.constexpr):
    """sa's two 64-key halves and sb combined by ``op`` element-wise, in sb's layout: every value
    stays in its thread (the halves differ in a register bit), so one row reduction serves the
    192 keys instead of one per sub-block (4 shuffles fewer)."""
    M: gl.constexpr = sa.shape[0]
    NB: gl.constexpr = sb.shape[1]
    a2 = gl.reshape(sa, [M, 2, NB])
    lo, hi = gl.split(gl.permute(a2, [0, 2, 1]))
    lo = gl.convert_layout(lo, sb.type.layout, assert_trivial=True)
    hi = gl.convert_layout(hi, sb.type.layout, assert_trivial=True)
    if op == "max":
        return gl.maximum(gl.maximum(lo, hi), sb)
    return lo + hi + sb


@gluon.jit
def _softmax2(sa, sb, m_i, l_i, qk_scale, FOLD: gl.constexpr):
    """One 192-key block of the online softmax: the product's _online_softmax over both sub-blocks."""
    row_a: gl.constexpr = m_i.type.layout
    row_b: gl.constexpr = gl.SliceLayout(1, sb.type.layout)
    if FOLD:
        m_blk = gl.convert_layout(gl.max(_fold(sa, sb, "max"), axis=1), row_a, assert_trivial=True)
    else:
        m_blk = gl.maximum(gl.max(sa, axis=1), gl.convert_layout(gl.max(sb, axis=1), row_a, assert_trivial=True))
    m_new = gl.maximum(m_i, m_blk * qk_scale)
    pa = gl.exp2(sa * qk_scale - gl.expand_dims(m_new - 8.0, 1))
    pb = gl.exp2(sb * qk_scale - gl.expand_dims(gl.convert_layout(m_new - 8.0, row_b, assert_trivial=True), 1))
    alpha = gl.exp2(m_i - m_new)
    if FOLD:
        l_blk = gl.convert_layout(gl.sum(_fold(pa, pb, "sum"), axis=1), row_a, assert_trivial=True)
    else:
        l_blk = gl.sum(pa, axis=1) + gl.convert_layout(gl.sum(pb, axis=1), row_a, assert_trivial=True)
    l_i = l_i * alpha + l_blk
    return pa, pb, alpha, l_i, m_new


@gluon.jit
def _wide_step(j, g, acc, pa, pb, alpha, l_i, m_i, q_smem, ka_bufs, kb_bufs, va_bufs, vb_bufs, k_ready, k_empty,
               v_ready, v_empty, sa_init, sb_init, qk_scale, p_layout: gl.constexpr, row_o: gl.constexpr,
               FOLD: gl.constexpr):
    STAGES: gl.constexpr = ka_bufs.type.shape[0]
    stage = g % STAGES
    prev = (g - 1) % STAGES
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    mbarrier.arrive(v_empty.index((g - 2 + STAGES) % STAGES), count=1, pred=j >= 2)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
    p8a = ga._p_operand(pa, p_layout)
    p8b = ga._p_operand(pb, p_layout)
    mbarrier.wait(k_ready.index(stage), (g // STAGES) & 1)
    sa = warpgroup_mma(q_smem, ka_bufs.index(stage).permute((1, 0)), sa_init, use_acc=False, is_async=True)
    sb = warpgroup_mma(q_smem, kb_bufs.index(stage).permute((1, 0)), sb_init, use_acc=False, is_async=True)
    mbarrier.wait(v_ready.index(prev), ((g - 1) // STAGES) & 1)
    acc = warpgroup_mma(p8a, va_bufs.index(prev).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma(p8b, vb_bufs.index(prev).permute((1, 0)), acc, is_async=True)
    sa, sb = warpgroup_mma_wait(num_outstanding=2, deps=(sa, sb))  # both P V still in flight
    mbarrier.arrive(k_empty.index(stage), count=1)
    pa, pb, alpha, l_i, m_i = _softmax2(sa, sb, m_i, l_i, qk_scale, FOLD)
    return acc, pa, pb, alpha, l_i, m_i


@gluon.jit
def _wide_consumer(args, CONSUMERS: gl.constexpr, FOLD: gl.constexpr, num_warps: gl.constexpr, WG: gl.constexpr):
    (q_bufs, ka_bufs, kb_bufs, va_bufs, vb_bufs, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, out_ptr,
     q_descale_ptr, k_descale_ptr, v_descale_ptr, so_b, so_h, so_s, H, Sq, n_m, n_tiles, n_blocks, key_pad,
     sm_scale_log2) = args
    TILE_M: gl.constexpr = q_bufs.type.shape[1]
    HEAD_DIM: gl.constexpr = q_bufs.type.shape[2]
    NA: gl.constexpr = ka_bufs.type.shape[1]
    NB: gl.constexpr = kb_bufs.type.shape[1]
    STAGES: gl.constexpr = ka_bufs.type.shape[0]
    sa_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, NA, 32])
    sb_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, NB, 32])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=4)
    row_s: gl.constexpr = gl.SliceLayout(1, sa_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    col_o: gl.constexpr = gl.SliceLayout(0, o_layout)
    cols_a = gl.arange(0, NA, layout=gl.SliceLayout(0, sa_layout))
    cols_b = NA + gl.arange(0, NB, layout=gl.SliceLayout(0, sb_layout))
    d = gl.arange(0, HEAD_DIM, layout=col_o)
    sa_init = gl.zeros([TILE_M, NA], gl.float32, sa_layout)
    sb_init = gl.zeros([TILE_M, NB], gl.float32, sb_layout)

    i = 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        bh = t // n_m
        row0 = ((t % n_m) * CONSUMERS + WG) * TILE_M
        qb = i % 2
        base = i * n_blocks
        q_smem = q_bufs.index(CONSUMERS * qb + WG)
        qk_scale = sm_scale_log2 * gl.load(q_descale_ptr + bh) * gl.load(k_descale_ptr + bh)
        m_i = gl.full([TILE_M], float("-inf"), gl.float32, row_s)
        l_i = gl.zeros([TILE_M], gl.float32, row_s)
        acc = gl.zeros([TILE_M, HEAD_DIM], gl.float32, o_layout)

        stage0 = base % STAGES
        mbarrier.wait(q_ready.index(qb), (i // 2) & 1)
        mbarrier.wait(k_ready.index(stage0), (base // STAGES) & 1)
        sa = warpgroup_mma(q_smem, ka_bufs.index(stage0).permute((1, 0)), sa_init, use_acc=False, is_async=True)
        sb = warpgroup_mma(q_smem, kb_bufs.index(stage0).permute((1, 0)), sb_init, use_acc=False, is_async=True)
        sa, sb = warpgroup_mma_wait(num_outstanding=0, deps=(sa, sb))
        mbarrier.arrive(k_empty.index(stage0), count=1)
        sa = gl.where(gl.expand_dims(cols_a >= key_pad, 0), sa, float("-inf"))
        sb = gl.where(gl.expand_dims(cols_b >= key_pad, 0), sb, float("-inf"))
        pa, pb, alpha, l_i, m_i = _softmax2(sa, sb, m_i, l_i, qk_scale, FOLD)
        acc = warpgroup_mma_init(acc)

        acc, pa, pb, alpha, l_i, m_i = _wide_step(1, base + 1, acc, pa, pb, alpha, l_i, m_i, q_smem, ka_bufs,
                                                  kb_bufs, va_bufs, vb_bufs, k_ready, k_empty, v_ready, v_empty,
                                                  sa_init, sb_init, qk_scale, p_layout, row_o, FOLD)
        for j in range(2, n_blocks):
            acc, pa, pb, alpha, l_i, m_i = _wide_step(j, base + j, acc, pa, pb, alpha, l_i, m_i, q_smem, ka_bufs,
                                                      kb_bufs, va_bufs, vb_bufs, k_ready, k_empty, v_ready, v_empty,
                                                      sa_init, sb_init, qk_scale, p_layout, row_o, FOLD)
        mbarrier.arrive(q_empty.index(qb), count=1)

        last = base + n_blocks - 1
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        mbarrier.arrive(v_empty.index((last - 1) % STAGES), count=1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
        p8a = ga._p_operand(pa, p_layout)
        p8b = ga._p_operand(pb, p_layout)
        mbarrier.wait(v_ready.index(last % STAGES), (last // STAGES) & 1)
        acc = warpgroup_mma(p8a, va_bufs.index(last % STAGES).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma(p8b, vb_bufs.index(last % STAGES).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        mbarrier.arrive(v_empty.index(last % STAGES), count=1)

        inv_l = 1.0 / gl.convert_layout(l_i, row_o)
        out = acc * gl.expand_dims(gl.load(v_descale_ptr + bh) * inv_l, 1)
        row = row0 + gl.arange(0, TILE_M, layout=row_o)
        o_ptr = out_ptr + (bh // H).to(gl.int64) * so_b + (bh % H).to(gl.int64) * so_h
        ptrs = o_ptr + gl.expand_dims(row.to(gl.int64) * so_s, 1) + gl.expand_dims(d, 0)
        gl.store(ptrs, out.to(out_ptr.dtype.element_ty), mask=gl.expand_dims(row < Sq, 1))
        i += 1


# Skv's 16-divisibility made ptxas spill 588 B in the main loop (every 8192-, 16384- and 75600-key
# launch, the only slow shapes of NOTES 45; found under Nsight Compute, NOTES 47)
@gluon.jit(do_not_specialize_on_alignment=["Skv"])
def _wide_kernel(q_desc, ka_desc, kb_desc, va_desc, vb_desc, out_ptr, q_descale_ptr, k_descale_ptr, v_descale_ptr,
                 sm_scale_log2, Sq, Skv, H, BH, so_b, so_h, so_s, vt_pad, STAGES: gl.constexpr,
                 CONSUMERS: gl.constexpr, CONSUMER_REGS: gl.constexpr, FOLD: gl.constexpr, num_warps: gl.constexpr):
    WG_M: gl.constexpr = q_desc.block_type.shape[0]
    NW: gl.constexpr = ka_desc.block_type.shape[0] + kb_desc.block_type.shape[0]
    n_m = gl.cdiv(Sq, CONSUMERS * WG_M)
    n_tiles = n_m * BH
    n_blocks = gl.cdiv(Skv, NW)
    key_pad = n_blocks * NW - Skv
    vt_shift = key_pad - vt_pad  # V^T's 128-key padding against this block size's

    q_bufs = gl.allocate_shared_memory(q_desc.dtype, [2 * CONSUMERS] + q_desc.block_type.shape, q_desc.layout)
    ka_bufs = gl.allocate_shared_memory(ka_desc.dtype, [STAGES] + ka_desc.block_type.shape, ka_desc.layout)
    kb_bufs = gl.allocate_shared_memory(kb_desc.dtype, [STAGES] + kb_desc.block_type.shape, kb_desc.layout)
    va_bufs = gl.allocate_shared_memory(va_desc.dtype, [STAGES] + va_desc.block_type.shape, va_desc.layout)
    vb_bufs = gl.allocate_shared_memory(vb_desc.dtype, [STAGES] + vb_desc.block_type.shape, vb_desc.layout)
    q_ready, q_empty, k_ready, k_empty, v_ready, v_empty = ga._allocate_barriers(STAGES, CONSUMERS)

    consumer = (q_bufs, ka_bufs, kb_bufs, va_bufs, vb_bufs, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty,
                out_ptr, q_descale_ptr, k_descale_ptr, v_descale_ptr, so_b, so_h, so_s, H, Sq, n_m, n_tiles,
                n_blocks, key_pad, sm_scale_log2)
    producer = (q_desc, ka_desc, kb_desc, va_desc, vb_desc, q_bufs, ka_bufs, kb_bufs, va_bufs, vb_bufs, q_ready,
                q_empty, k_ready, k_empty, v_ready, v_empty, Sq, Skv, n_m, n_tiles, n_blocks, key_pad, vt_shift)
    gl.warp_specialize([(_wide_consumer, (consumer, CONSUMERS, FOLD, num_warps, 0)),
                        (_wide_consumer, (consumer, CONSUMERS, FOLD, num_warps, 1)),
                        (_wide_producer, (producer, CONSUMERS))], [4, 1], [CONSUMER_REGS, 24])


def _wide_layouts(head_dim: int):
    fp8 = gl.float8e4nv
    return {n: (gl.NVMMASharedLayout.get_default_for([n, head_dim], fp8),
                gl.NVMMASharedLayout.get_default_for([head_dim, n], fp8)) for n in (128, 64)}


def launch_wide(q8, k8, v8t, q_descale, k_descale, v_descale, out, sm_scale, fold=False):
    """The product launcher's per-head contract (Q8 contiguous, V^T from key_order="mma")."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    B, H, Sq, D = q8.shape
    Skv = k8.shape[2]
    assert Skv > WIDE_N and k_descale.numel() == B * H
    wg = ga.WARP_GROUPS[D]
    lay = _wide_layouts(D)
    ql = ga._layouts(D)[0]
    rows = lambda t: t.view(-1, t.shape[-1])  # noqa: E731
    q_desc = TensorDescriptor.from_tensor(rows(q8), [ga.WG_M, D], ql)
    ka = TensorDescriptor.from_tensor(rows(k8), [128, D], lay[128][0])
    kb = TensorDescriptor.from_tensor(rows(k8), [64, D], lay[64][0])
    va = TensorDescriptor.from_tensor(rows(v8t), [D, 128], lay[128][1])
    vb = TensorDescriptor.from_tensor(rows(v8t), [D, 64], lay[64][1])
    tiles = -(-Sq // wg.block_m) * B * H
    _wide_kernel[(min(tiles, ga._sm_count(q8.device)),)](
        q_desc, ka, kb, va, vb, out, q_descale, k_descale, v_descale, sm_scale * ga.LOG2E, Sq, Skv, H, B * H,
        out.stride(0), out.stride(1), out.stride(2), v8t.shape[-1] - Skv, STAGES=ga.NUM_STAGES,
        CONSUMERS=wg.consumers, CONSUMER_REGS=wg.consumer_regs, FOLD=fold, num_warps=4, maxnreg=wg.maxnreg)


def compile_only(fold: bool) -> None:
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    import gluon_attention as bench  # benchmarks/
    from kernel_resources import cuobjdump, resources

    D = 128
    wg = ga.WARP_GROUPS[D]
    lay = _wide_layouts(D)
    ql = ga._layouts(D)[0]

    def desc(block, layout):
        return f"tensordesc<fp8e4nv[{', '.join(map(str, block))}],{layout!r}>"

    fn = _wide_kernel
    names = fn.arg_names
    signature = {"q_desc": desc((64, D), ql), "ka_desc": desc((128, D), lay[128][0]),
                 "kb_desc": desc((64, D), lay[64][0]), "va_desc": desc((D, 128), lay[128][1]),
                 "vb_desc": desc((D, 64), lay[64][1]), "out_ptr": "*bf16", "sm_scale_log2": "fp32",
                 **{n: "*fp32" for n in ("q_descale_ptr", "k_descale_ptr", "v_descale_ptr")},
                 **{n: "i32" for n in ("Sq", "Skv", "H", "BH", "vt_pad")},
                 **{n: "i64" for n in ("so_b", "so_h", "so_s")},
                 **{n: "constexpr" for n in ("STAGES", "CONSUMERS", "CONSUMER_REGS", "FOLD", "num_warps")}}
    constexprs = {(names.index("STAGES"),): ga.NUM_STAGES, (names.index("CONSUMERS"),): wg.consumers,
                  (names.index("CONSUMER_REGS"),): wg.consumer_regs, (names.index("FOLD"),): fold,
                  (names.index("num_warps"),): 4}
    attrs = {(names.index(n),): [["tt.divisibility", 16]]
             for n in ("out_ptr", "q_descale_ptr", "k_descale_ptr", "v_descale_ptr", "so_b", "so_h", "so_s", "Sq")}
    k = triton.compile(GluonASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                       target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=wg.maxnreg))
    regs, stack = resources(k)
    print(f"wide blocks ({WIDE_N} keys), FOLD={fold}, D = {D}: regs {regs}  stack {stack} B  "
          f"shared {k.metadata.shared} B")
    for w in bench.ptxas_warnings(k):
        print("ptxas:", w)
    sass = cuobjdump(k, "-sass")
    for i, sched in enumerate(bench.main_loop_schedules(sass, bench._SASS_OPS, bench._sass_loops) or ["(none)"]):
        print(f"SASS main loop {i + 1}: {sched}")
    hist = bench.loop_histogram(sass)
    print(f"SASS instructions per {WIDE_N}-key block and thread: {sum(hist.values())} "
          f"({sum(hist.values()) * 128 / WIDE_N:.0f} per 128 keys):",
          ", ".join(f"{op} {n}" for op, n in hist.most_common(14)))


def gpu_run(shapes) -> None:
    from triton.testing import do_bench

    from accel.backends.env import fa3_reason
    from accel.kernels import ops
    from accel.testing import activation_like_qkv, exact_attention, rel_l2

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    fa3 = fa3_reason() is None
    if fa3:
        import flash_attn_interface
    for heads, sq, skv, d in shapes:
        flops = 4.0 * heads * sq * skv * d
        q, k, v = activation_like_qkv(1, heads, sq, skv, d, device="cuda")
        q8, k8, _, qd, kd, _, _, _ = ops.quantize_qkv(q, k, v, "head", True, False, False)
        v8t, vd, _ = ops.quantize_value(v, "head", False, True, "mma")
        v8, _, _ = ops.quantize_value(v, "head", False, False)
        rows = torch.randperm(sq, device="cuda")[:256]
        ref, _ = exact_attention(q, k, v, rows=rows)
        out = torch.empty_like(q)
        runs = {"product-128": lambda: ga.launch_gluon_attention(q8, k8, v8t, qd, kd, vd, out, d ** -0.5,
                                                                 persistent=True),
                "wide-192": lambda: launch_wide(q8, k8, v8t, qd, kd, vd, out, d ** -0.5),
                "wide-192-fold": lambda: launch_wide(q8, k8, v8t, qd, kd, vd, out, d ** -0.5, fold=True)}
        if fa3:
            runs["fa3-fp8"] = lambda: flash_attn_interface.flash_attn_func(
                *(t.transpose(1, 2) for t in (q8, k8, v8)), q_descale=qd, k_descale=kd, v_descale=vd)
        ms = {}
        for name, run in runs.items():
            out.fill_(float("nan"))
            res = run()
            torch.cuda.synchronize()
            got = out if name != "fa3-fp8" else (res[0] if isinstance(res, tuple) else res).transpose(1, 2)
            err = rel_l2(got[:, :, rows], ref)
            nan_rows = torch.isnan(got).any(dim=-1).sum().item()
            ms[name] = do_bench(run, warmup=50, rep=200, return_mode="median")
            print(f"{heads}x{sq}x{skv} D={d} {name:<12} rel. L2 {err:.4f}  NaN rows {nan_rows}  {ms[name]:8.3f} ms "
                  f"{flops / ms[name] * 1e-9:7.1f} TFLOP/s", flush=True)
        for w in ("wide-192", "wide-192-fold"):
            print(f"{heads}x{sq}x{skv} D={d} {w} speed: {ms['product-128'] / ms[w]:.3f}x product"
                  + (f", {ms['fa3-fp8'] / ms[w]:.3f}x FA3 (product {ms['fa3-fp8'] / ms['product-128']:.3f}x)"
                     if fa3 else ""), flush=True)


def main() -> None:
    from accel.benchmarking.attention import parse_shapes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compile-only", action="store_true")
    p.add_argument("--shapes", default="24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,"
                                       "40x75600x75600x128,12x32760x512x128,3x257x257x128,2x300x1000x128")
    args = p.parse_args()
    if args.compile_only:
        compile_only(False)
        compile_only(True)
    else:
        gpu_run(parse_shapes(args.shapes))


if __name__ == "__main__":
    main()
