"""torch custom ops around the Triton kernels, with fake implementations for torch.compile.

``torch.ops.accel.quantize_qkv`` and ``torch.ops.accel.fp8_attention`` are opaque to Dynamo, so a
module calling ``accel.fp8_sdpa`` compiles with ``fullgraph=True``; the fake implementations give
the output shapes, dtypes and strides without running anything.

The functions of this module call the op when something must see it as one (Dynamo tracing,
fake or other subclass tensors, autograd recording: its error names the op) and otherwise its
Python body directly: torch's dispatcher costs ~50 us of host time per op call, as much as the
quantization's own Python (benchmarks/NOTES.md 35).
"""

from __future__ import annotations

import functools

import torch

from .attention import LOG2E, launch_attention
from .gluon_attention import launch_gluon_attention
from .norm_rope import norm_rope_quantize as _launch_norm_rope
from .numerics import key_bias, value_granularity
from .quantize import (GRANULARITIES, V_TOKEN_ALIGN, QuantizeJob, padded_head_dim, quantize_many,
                       transposed_row_length)

LAYOUTS = ("bhsd", "bshd")
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _direct(args, kwargs) -> bool:
    """Whether an op call may run as its Python body: eager, plain tensors, nothing to record."""
    if torch.compiler.is_compiling():
        return False
    grad = torch.is_grad_enabled()
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor) and (type(a) not in _PLAIN_TENSORS or (grad and a.requires_grad)):
            return False
    return True


def _custom_op(name: str):
    """Register the decorated function as the custom op ``accel::name``; return a function that
    calls the op, or the function itself where :func:`_direct` allows. ``.op``: the op."""
    def register(fn):
        op = torch.library.custom_op(f"accel::{name}", mutates_args=())(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            return fn(*args, **kwargs) if _direct(args, kwargs) else op(*args, **kwargs)

        call.op = op
        return call
    return register


@_custom_op("quantize_qkv")
def quantize_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, granularity: str, smooth_k: bool, smooth_v: bool,
    transpose_v: bool, smooth_q: bool = False, v_key_order: str = "natural",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor]:
    """e4m3 copies and fp32 descales of (B, H, S, D) views of Q, K and V, in one op call.

    Q and K use ``granularity``; V uses one scale per head for ``"head"`` and one per channel
    for ``"token"``. ``smooth_q`` / ``smooth_k`` / ``smooth_v`` subtract Q's / K's / V's channel
    mean. ``transpose_v`` writes V as (B, H, Dp, S_pad) for our kernels, its tokens in
    ``v_key_order`` ("natural": the Triton kernel; "mma": the Gluon kernel). Returns (q8, k8, v8,
    q_descale, k_descale, v_descale, v_mean, k_bias): shapes as
    :func:`accel.kernels.quantize.quantize_fp8`; v_mean is (B, H, Dp) fp32, to add back to the
    output, or empty without ``smooth_v``; k_bias is smooth-Q's per-key correction (B, H, Skv)
    fp32 (:func:`accel.kernels.numerics.key_bias`), or empty without ``smooth_q``.
    """
    (q8, qd, q_mean), (k8, kd, _), (v8, vd, v_mean) = quantize_many([
        QuantizeJob(q, granularity, smooth_q),
        QuantizeJob(k, granularity, smooth_k),
        QuantizeJob(v, value_granularity(granularity), smooth_v, transpose_v, v_key_order),
    ])

    def empty():  # outputs must not alias each other
        return q8.new_empty((0,), dtype=torch.float32)

    k_bias = key_bias(k, q_mean[..., : q.shape[-1]]) if smooth_q else empty()
    return q8, k8, v8, qd, kd, vd, (v_mean if smooth_v else empty()), k_bias


def _quantized_fake(x, granularity, transpose, key_order="natural"):
    B, H, S, D = x.shape
    Dp = padded_head_dim(D)
    if transpose:
        x8 = x.new_empty((B, H, Dp, transposed_row_length(S, key_order)), dtype=torch.float8_e4m3fn)
    else:
        x8 = x.new_empty((B, H, S, Dp), dtype=torch.float8_e4m3fn)
    if granularity == "token":
        s_pad = (S + V_TOKEN_ALIGN - 1) // V_TOKEN_ALIGN * V_TOKEN_ALIGN
        descale = x.new_empty_strided((B, H, S), (H * s_pad, s_pad, 1), dtype=torch.float32)
    else:
        descale = x.new_empty((B, H, Dp) if granularity == "channel" else (B, H), dtype=torch.float32)
    return x8, descale


@quantize_qkv.op.register_fake
def _quantize_qkv_fake(q, k, v, granularity, smooth_k, smooth_v, transpose_v, smooth_q=False,
                       v_key_order="natural"):
    q8, qd = _quantized_fake(q, granularity, False)
    k8, kd = _quantized_fake(k, granularity, False)
    v8, vd = _quantized_fake(v, value_granularity(granularity), transpose_v, v_key_order)
    B, H, Skv, D = v.shape
    v_mean = v.new_empty((B, H, padded_head_dim(D)) if smooth_v else (0,), dtype=torch.float32)
    k_bias = v.new_empty((B, H, Skv) if smooth_q else (0,), dtype=torch.float32)
    return q8, k8, v8, qd, kd, vd, v_mean, k_bias


@_custom_op("quantize_kv")
def quantize_kv(
    k: torch.Tensor, v: torch.Tensor, granularity: str, smooth_k: bool, smooth_v: bool, transpose_v: bool,
    v_key_order: str = "natural",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """K and V alone, when the attention kernel quantizes Q itself: (k8, v8, k_descale,
    v_descale, v_mean or empty), as :func:`quantize_qkv` gives them."""
    (k8, kd, _), (v8, vd, v_mean) = quantize_many([
        QuantizeJob(k, granularity, smooth_k),
        QuantizeJob(v, value_granularity(granularity), smooth_v, transpose_v, v_key_order),
    ])
    return k8, v8, kd, vd, (v_mean if smooth_v else kd.new_empty((0,)))


@quantize_kv.op.register_fake
def _quantize_kv_fake(k, v, granularity, smooth_k, smooth_v, transpose_v, v_key_order="natural"):
    k8, kd = _quantized_fake(k, granularity, False)
    v8, vd = _quantized_fake(v, value_granularity(granularity), transpose_v, v_key_order)
    B, H, _, D = v.shape
    return k8, v8, kd, vd, v.new_empty((B, H, padded_head_dim(D)) if smooth_v else (0,), dtype=torch.float32)


@_custom_op("quantize_value")
def quantize_value(v: torch.Tensor, granularity: str, smooth_v: bool, transpose: bool = True,
                   key_order: str = "natural") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """V alone (when Q and K come from :func:`norm_rope_quantize`): (v8, v_descale, v_mean or
    empty); ``granularity`` is that of Q and K. ``transpose``: (B, H, Dp, S_pad), as our kernels
    read V (tokens in ``key_order``, as :func:`quantize_qkv`); else (B, H, S, Dp), as
    FlashAttention-3 does."""
    v8, vd, mean = quantize_many([QuantizeJob(v, value_granularity(granularity), smooth_v, transpose,
                                              key_order)])[0]
    return v8, vd, (mean if smooth_v else v8.new_empty((0,), dtype=torch.float32))


@quantize_value.op.register_fake
def _quantize_value_fake(v, granularity, smooth_v, transpose=True, key_order="natural"):
    v8, vd = _quantized_fake(v, value_granularity(granularity), transpose, key_order)
    B, H, _, D = v.shape
    return v8, vd, v.new_empty((B, H, padded_head_dim(D)) if smooth_v else (0,), dtype=torch.float32)


@_custom_op("norm_rope_quantize")
def norm_rope_quantize(
    x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor, heads: int,
    granularity: str, smooth: bool, per_head_norm: bool = False, prefix: torch.Tensor | None = None,
    prefix_weight: torch.Tensor | None = None, prefix_eps: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RMSNorm + RoPE + e4m3 quantization in one pass over the projection output (B, S, H*D):
    see :func:`accel.kernels.norm_rope.norm_rope_quantize`. Wan: the norm across heads; FLUX:
    ``per_head_norm``, and in double-stream blocks the text tokens as ``prefix`` with their own
    norm. The mean is empty unless ``smooth``."""
    joint = None if prefix is None else (prefix, prefix_weight, prefix_eps)
    x8, descale, mean = _launch_norm_rope(x, weight, eps, cos, sin, heads, granularity, smooth,
                                          per_head_norm=per_head_norm, prefix=joint)
    return x8, descale, (mean if mean is not None else x8.new_empty((0,), dtype=torch.float32))


@norm_rope_quantize.op.register_fake
def _norm_rope_quantize_fake(x, weight, eps, cos, sin, heads, granularity, smooth, per_head_norm=False,
                             prefix=None, prefix_weight=None, prefix_eps=0.0):
    B, S, HD = x.shape
    S += 0 if prefix is None else prefix.shape[1]
    D = HD // heads
    x8 = x.new_empty((B, heads, S, D), dtype=torch.float8_e4m3fn)
    if granularity == "token":
        s_pad = (S + V_TOKEN_ALIGN - 1) // V_TOKEN_ALIGN * V_TOKEN_ALIGN
        descale = x.new_empty_strided((B, heads, S), (heads * s_pad, s_pad, 1), dtype=torch.float32)
    else:
        descale = x.new_empty((B, heads), dtype=torch.float32)
    return x8, descale, x.new_empty((B, heads, D) if smooth else (0,), dtype=torch.float32)


def _new_output(q8: torch.Tensor, head_dim: int, out_dtype: torch.dtype, layout: str) -> torch.Tensor:
    """Output tensor in the caller's layout; returned as a (B, H, S, D) view for the kernel."""
    B, H, Sq, _ = q8.shape
    if layout == "bshd":
        return q8.new_empty((B, Sq, H, head_dim), dtype=out_dtype)
    return q8.new_empty((B, H, Sq, head_dim), dtype=out_dtype)


@_custom_op("fp8_attention")
def fp8_attention(
    q8: torch.Tensor,
    k8: torch.Tensor,
    v8t: torch.Tensor,
    q_descale: torch.Tensor,
    k_descale: torch.Tensor,
    v_descale: torch.Tensor,
    v_mean: torch.Tensor,
    head_dim: int,
    sm_scale: float,
    is_causal: bool,
    out_dtype: torch.dtype,
    layout: str,
    return_lse: bool,
    k_bias: torch.Tensor | None = None,
    kernel: str = "triton",
) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 attention on quantized inputs. ``q8`` may instead be the bf16/fp16 (B, H, Sq, D) query
    itself: the kernel quantizes it with one scale per row, whatever K's granularity
    (``q_descale`` is then unread: any tensor, e.g. ``k_descale``; the Gluon kernel needs
    :func:`accel.kernels.gluon_attention.query_in_kernel_reason` None). Returns ``(out, lse)``:
    out in ``layout`` and ``out_dtype``; lse (B, H, Sq) fp32 when ``return_lse``, else an empty
    tensor. A non-empty
    ``v_mean`` (B, H, Dp) is added to the output (V was smoothed: softmax rows sum to 1); a
    non-empty ``k_bias`` (B, H, Skv), in unscaled score units, to each key's scores (smooth-Q).
    ``kernel``: "triton", or "gluon" (Hopper; per-head or per-token scales, no causal mask, LSE or key bias;
    V^T quantized with ``key_order="mma"``: :func:`accel.kernels.dispatch.attention_kernel`)."""
    out = _new_output(q8, head_dim, out_dtype, layout)
    B, H, Sq, _ = q8.shape
    lse = q8.new_empty((B, H, Sq) if return_lse else (0,), dtype=torch.float32)
    if kernel == "gluon":
        launch_gluon_attention(q8, k8, v8t, q_descale, k_descale, v_descale,
                               out.transpose(1, 2) if layout == "bshd" else out, sm_scale,
                               v_mean=v_mean if v_mean.numel() else None)
        return out, lse
    launch_attention(
        q8, k8, v8t, q_descale, k_descale, v_descale,
        out.transpose(1, 2) if layout == "bshd" else out,
        head_dim, sm_scale, is_causal, lse if return_lse else None,
        v_mean=v_mean if v_mean.numel() else None,
        k_bias=k_bias * (sm_scale * LOG2E) if k_bias is not None and k_bias.numel() else None,
    )
    return out, lse


@fp8_attention.op.register_fake
def _fp8_attention_fake(q8, k8, v8t, q_descale, k_descale, v_descale, v_mean, head_dim, sm_scale,
                        is_causal, out_dtype, layout, return_lse, k_bias=None, kernel="triton"):
    B, H, Sq, _ = q8.shape
    out = _new_output(q8, head_dim, out_dtype, layout)
    return out, q8.new_empty((B, H, Sq) if return_lse else (0,), dtype=torch.float32)


__all__ = ["GRANULARITIES", "LAYOUTS", "fp8_attention", "norm_rope_quantize", "quantize_kv", "quantize_qkv",
           "quantize_value", "value_granularity"]
