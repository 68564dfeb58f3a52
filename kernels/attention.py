"""FP8 flash-attention forward kernel (Triton) with per-head or per-token scales.

Inputs come from :func:`accel.kernels.quantize.quantize_fp8`: Q8 and K8 (B, H, S, Dp) e4m3, V8
transposed (B, H, Dp, S_pad) e4m3, and fp32 descales. Q may instead come as the caller's
bf16/fp16 (B, H, S, D) view: each program quantizes its own query tile (one scale per row,
exactly as the per-token quantization kernel would, whatever K's granularity), which saves a
whole pass over Q.
Per program: one BLOCK_M tile of queries against every key block, online softmax in fp32 with
exp2, P cast to e4m3, both products in FP8 with fp32 accumulators.
"""

from __future__ import annotations

import math
import torch
import triton
import triton.language as tl

from ._triton_utils import cast_e4m3, cdiv, to_e4m3, to_half
from .configs import AttentionConfig, default_config, interpreting
from .numerics import P_SCALE
from .quantize import row_scales

LOG2E = math.log2(math.e)


@triton.jit
def _attend_blocks(
    acc, l_i, m_i, q, q_scale, k_ptrs, vt_ptrs, k_descale_ptr, k_bias_ptr, lo, hi,
    offs_m, offs_n, Skv, sk_s,
    BLOCK_N: tl.constexpr, PER_TOKEN_QK: tl.constexpr, MASKED: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_K_BIAS: tl.constexpr, EMULATE_CAST: tl.constexpr,
):
    """Online softmax over key blocks [lo, hi). MASKED blocks check key bounds and causality;
    the others, all but the last block or two, skip that work."""
    for start_n in range(lo, hi, BLOCK_N):
        if MASKED:
            n_ok = start_n + offs_n < Skv
            k = tl.load(k_ptrs + start_n * sk_s, mask=n_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs + start_n * sk_s)
        s = tl.dot(q, tl.trans(k))
        if PER_TOKEN_QK:
            # Per-token scales form an outer product on the score tile: the key side here, the
            # query side (q_scale, positive) below, fused with the max subtraction.
            if MASKED:
                k_scale = tl.load(k_descale_ptr + start_n + offs_n, mask=n_ok, other=0.0)
            else:
                k_scale = tl.load(k_descale_ptr + start_n + offs_n)
            s = s * k_scale[None, :]
        if HAS_K_BIAS:
            # smooth-Q: each key's score gains mean(Q) . k_j (log2 units), added in full precision
            if MASKED:
                s = s * q_scale[:, None] + tl.load(k_bias_ptr + start_n + offs_n, mask=n_ok, other=0.0)[None, :]
            else:
                s = s * q_scale[:, None] + tl.load(k_bias_ptr + start_n + offs_n)[None, :]
        if MASKED:
            valid = n_ok[None, :]
            if IS_CAUSAL:
                valid = valid & (start_n + offs_n[None, :] <= offs_m[:, None])
            s = tl.where(valid, s, float("-inf"))
        # Log2 units. The row's largest score gets P = 1 exactly (256 in e4m3): peaked rows,
        # common in DiTs, keep their dominant term unrounded.
        if HAS_K_BIAS:  # s is already scaled
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp2(s - m_new[:, None])
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1) * q_scale)
            p = tl.exp2(s * q_scale[:, None] - m_new[:, None])  # one FFMA per score
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)  # the row sum uses unquantized P
        acc = acc * alpha[:, None]
        if MASKED:
            vt = tl.load(vt_ptrs + start_n, mask=n_ok[None, :], other=0.0)
        else:
            vt = tl.load(vt_ptrs + start_n)
        # P <= 1, times 256 (P_SCALE): no saturation needed before the cast.
        acc = tl.dot(cast_e4m3(p * 256.0, EMULATE_CAST), tl.trans(vt), acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fp8_attention_kernel(
    q_ptr, k_ptr, vt_ptr, q_descale_ptr, k_descale_ptr, v_descale_ptr, v_mean_ptr, k_bias_ptr, out_ptr,
    lse_ptr, qk_scale, Sq, Skv, H,
    sq_b, sq_h, sq_s, sq_d, sk_bh, sk_s, sv_bh, sv_d, sqd_bh, skd_bh,
    so_b, so_h, so_s, so_d,
    D_OUT: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PER_TOKEN_QK: tl.constexpr, QUANTIZE_Q: tl.constexpr, PER_CHANNEL_V: tl.constexpr, IS_CAUSAL: tl.constexpr,
    WRITE_LSE: tl.constexpr, HAS_V_MEAN: tl.constexpr, HAS_K_BIAS: tl.constexpr, OUT_BF16: tl.constexpr,
    EMULATE_CAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    m_ok = offs_m < Sq

    q_ptrs = q_ptr + b * sq_b + h * sq_h + offs_m[:, None] * sq_s + offs_d[None, :] * sq_d
    if QUANTIZE_Q:  # the caller's bf16/fp16 rows (channels past D_OUT read as zero), one scale each
        x = tl.load(q_ptrs, mask=m_ok[:, None] & (offs_d[None, :] < D_OUT), other=0.0).to(tl.float32)
        q_row_scale, q_row_descale = row_scales(x)
        q = to_e4m3(x * q_row_scale[:, None], EMULATE_CAST)
    else:
        q = tl.load(q_ptrs, mask=m_ok[:, None], other=0.0)
    k_ptrs = k_ptr + pid_bh * sk_bh + offs_n[:, None] * sk_s + offs_d[None, :]
    vt_ptrs = vt_ptr + pid_bh * sv_bh + offs_d[:, None] * sv_d + offs_n[None, :]
    # q_scale turns raw FP8 scores into log2 units: softmax scale * log2(e) * descales.
    if PER_TOKEN_QK:
        if QUANTIZE_Q:
            q_scale = tl.where(m_ok, q_row_descale, 1.0) * qk_scale
        else:
            q_scale = tl.load(q_descale_ptr + pid_bh * sqd_bh + offs_m, mask=m_ok, other=1.0) * qk_scale
        k_descale_ptr += pid_bh * skd_bh
    elif QUANTIZE_Q:  # Q's own row scales against K's one per head
        q_scale = tl.where(m_ok, q_row_descale, 1.0) * (qk_scale * tl.load(k_descale_ptr + pid_bh))
    else:
        qk_scale = qk_scale * tl.load(q_descale_ptr + pid_bh) * tl.load(k_descale_ptr + pid_bh)
        q_scale = tl.zeros([BLOCK_M], tl.float32) + qk_scale

    k_bias_ptr += pid_bh * Skv
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # Key blocks that need no bounds or causal check first, then the rest with checks.
    if IS_CAUSAL:  # top-left aligned, as torch's is_causal: query i sees keys 0..i
        hi = tl.minimum(Skv, (pid_m + 1) * BLOCK_M)
        full = tl.minimum(pid_m * BLOCK_M, Skv) // BLOCK_N * BLOCK_N
    else:
        hi = Skv
        full = Skv // BLOCK_N * BLOCK_N
    acc, l_i, m_i = _attend_blocks(
        acc, l_i, m_i, q, q_scale, k_ptrs, vt_ptrs, k_descale_ptr, k_bias_ptr, 0, full, offs_m, offs_n, Skv, sk_s,
        BLOCK_N, PER_TOKEN_QK, False, IS_CAUSAL, HAS_K_BIAS, EMULATE_CAST)
    acc, l_i, m_i = _attend_blocks(
        acc, l_i, m_i, q, q_scale, k_ptrs, vt_ptrs, k_descale_ptr, k_bias_ptr, full, hi, offs_m, offs_n, Skv, sk_s,
        BLOCK_N, PER_TOKEN_QK, True, IS_CAUSAL, HAS_K_BIAS, EMULATE_CAST)

    inv = 1.0 / (l_i * 256.0)
    if PER_CHANNEL_V:
        v_scale = tl.load(v_descale_ptr + pid_bh * HEAD_DIM + offs_d)
        out = acc * inv[:, None] * v_scale[None, :]
    else:
        out = acc * (inv * tl.load(v_descale_ptr + pid_bh))[:, None]
    if HAS_V_MEAN:  # smooth-V: the subtracted channel mean comes back exactly (rows of P sum to 1)
        out += tl.load(v_mean_ptr + pid_bh * HEAD_DIM + offs_d)[None, :]
    o_ptrs = out_ptr + b * so_b + h * so_h + offs_m[:, None] * so_s + offs_d[None, :] * so_d
    tl.store(o_ptrs, to_half(out, OUT_BF16, EMULATE_CAST), mask=m_ok[:, None] & (offs_d[None, :] < D_OUT))
    if WRITE_LSE:
        tl.store(lse_ptr + pid_bh * Sq + offs_m, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=m_ok)


def launch_attention(
    q: torch.Tensor,
    k8: torch.Tensor,
    v8t: torch.Tensor,
    q_descale: torch.Tensor,
    k_descale: torch.Tensor,
    v_descale: torch.Tensor,
    out: torch.Tensor,
    head_dim: int,
    sm_scale: float,
    is_causal: bool = False,
    lse: torch.Tensor | None = None,
    config: AttentionConfig | None = None,
    v_mean: torch.Tensor | None = None,
    k_bias: torch.Tensor | None = None,
) -> None:
    """Launch the kernel, writing ``out`` (any (B, H, Sq, head_dim) strided view) and, if given,
    ``lse`` (B, H, Sq) fp32, natural log. ``q``: e4m3 (B, H, Sq, Dp) with its descale, or the
    bf16/fp16 (B, H, Sq, head_dim) view itself (``q_descale`` unread), quantized in the kernel
    with one scale per row. Descales: (B, H) per head or (B, H, S) per token for Q and K; (B, H)
    or (B, H, Dp) per channel for V. ``v_mean`` (B, H, Dp): added to the output. ``k_bias``
    (B, H, Skv) fp32 contiguous, log2 units: added to each key's scores (smooth-Q)."""
    assert P_SCALE == 256.0  # the kernel hard-codes the power of two
    assert out.dtype in (torch.bfloat16, torch.float16), out.dtype
    B, H, Sq, _ = q.shape
    Skv, Dp = k8.shape[2], k8.shape[3]
    per_token = k_descale.dim() == 3
    quantize_q = q.dtype != torch.float8_e4m3fn
    if quantize_q:
        q_descale = k_descale  # unread: any real tensor (an empty one may have no address)
    cfg = config or default_config(Dp, per_token=per_token, query_in_kernel=quantize_q)
    grid = (cdiv(Sq, cfg.block_m), B * H)
    _fp8_attention_kernel[grid](
        q, k8, v8t, q_descale, k_descale, v_descale, out if v_mean is None else v_mean,
        k_descale if k_bias is None else k_bias, out, out if lse is None else lse,
        sm_scale * LOG2E, Sq, Skv, H,
        *q.stride(), k8.stride(1), k8.stride(2), v8t.stride(1), v8t.stride(2),
        q_descale.stride(1), k_descale.stride(1),
        *out.stride(),
        D_OUT=head_dim, HEAD_DIM=Dp, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        PER_TOKEN_QK=per_token, QUANTIZE_Q=quantize_q, PER_CHANNEL_V=v_descale.dim() == 3,
        IS_CAUSAL=is_causal, WRITE_LSE=lse is not None, HAS_V_MEAN=v_mean is not None,
        HAS_K_BIAS=k_bias is not None,
        OUT_BF16=out.dtype == torch.bfloat16,
        EMULATE_CAST=interpreting(),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
