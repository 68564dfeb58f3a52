"""Our kernels: the Triton kernel (every granularity, any head dim up to 128, causal or not,
LSE) and, on Hopper where it applies (D = 64 or 128, from 512 keys, per-head or per-token scales),
the Gluon kernel with FlashAttention-3's schedule."""

from __future__ import annotations

import torch

from .base import AttentionCall, Backend
from .env import cuda_fp8_reason, triton_interpreting, triton_reason

MAX_HEAD_DIM = 128


class TritonBackend(Backend):
    name = "triton"
    prequantized_qk = True

    def unavailable_reason(self) -> str | None:
        return triton_reason()

    def unsupported_reason(self, call: AttentionCall) -> str | None:
        if call.head_dim > MAX_HEAD_DIM:
            return f"head_dim {call.head_dim} > {MAX_HEAD_DIM} is not supported by the Triton kernel"
        if call.device.type == "cuda":
            return cuda_fp8_reason(call.device)
        if call.device.type == "cpu" and triton_interpreting():
            return None
        return (f"tensors are on {call.device.type}; the Triton kernels need a CUDA GPU "
                "(or TRITON_INTERPRET=1 for the slow CPU interpreter)")

    def run(self, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        from accel.kernels import ops  # imports triton: only when this backend runs
        from accel.kernels.dispatch import v_key_order

        kernel = kernel_for(call)
        if _query_in_kernel(kernel, call):
            # The kernel quantizes each query tile it loads, one scale per row, which spares two
            # passes over Q (statistics, cast): most of the work when Sq >> Skv.
            k8, v8t, kd, vd, v_mean = ops.quantize_kv(call.key, call.value, call.granularity, call.smooth_k,
                                                      call.smooth_v, True, v_key_order(kernel))
            q8, qd, k_bias = call.query, kd, None  # qd unread: kd spares an allocation
        else:
            q8, k8, v8t, qd, kd, vd, v_mean, k_bias = ops.quantize_qkv(
                call.query, call.key, call.value, call.granularity, call.smooth_k, call.smooth_v, True,
                call.smooth_q, v_key_order(kernel))
        out, lse = ops.fp8_attention(
            q8, k8, v8t, qd, kd, vd, v_mean, call.head_dim, call.scale, call.is_causal,
            call.query.dtype, call.layout, call.return_lse, k_bias, kernel,
        )
        return out, (lse if call.return_lse else None)

    def run_prequantized(self, q8, q_descale, k8, k_descale, call: AttentionCall) -> torch.Tensor:
        from accel.kernels import ops
        from accel.kernels.dispatch import v_key_order

        kernel = kernel_for(call)
        v8t, vd, v_mean = ops.quantize_value(call.value, call.granularity, call.smooth_v, True, v_key_order(kernel))
        out, _ = ops.fp8_attention(q8, k8, v8t, q_descale, k_descale, vd, v_mean, call.head_dim, call.scale,
                                   call.is_causal, call.value.dtype, call.layout, False, None, kernel)
        return out


def _query_in_kernel(kernel: str, call: AttentionCall) -> bool:
    """Whether ``kernel`` quantizes Q itself (one scale per query row) for this call: up to
    QUANTIZE_Q_IN_KERNEL_MAX_KEYS keys (the kernels' main loops are slower with it), the Gluon
    kernel wherever TMA can read the query, the Triton kernel per token."""
    from accel.kernels import configs
    from accel.kernels.gluon_attention import query_in_kernel_reason

    if call.smooth_q or call.key.shape[2] > configs.QUANTIZE_Q_IN_KERNEL_MAX_KEYS:
        return False  # smooth-Q: Q's mean comes off before quantizing, a pass over Q anyway
    if kernel == "gluon":
        return query_in_kernel_reason(call.query) is None
    return call.granularity == "token"


def kernel_for(call: AttentionCall) -> str:
    """Our Gluon kernel (FA3's schedule, Hopper) where it serves the call, else
    our Triton kernel: both quantization and attention follow this one answer."""
    from accel.kernels.dispatch import attention_kernel

    return attention_kernel(call.device, call.head_dim, call.key.shape[2], call.granularity, call.is_causal,
                            call.return_lse, call.smooth_q)
