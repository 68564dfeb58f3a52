"""FlashAttention-3's FP8 kernel (``flash_attn_interface``) fed by our quantization kernel.

FA3 takes one descale per (batch, head) for each of Q, K and V, so only ``granularity="head"``;
smooth_k happens in our quantization (exact: softmax is shift-invariant per row).
"""

from __future__ import annotations

import torch

from .base import AttentionCall, Backend, to_layout
from .env import cuda_fp8_reason, fa3_reason, is_hopper, triton_reason

FA3_FP8_HEAD_DIMS = (64, 128, 256)


def head_granularity_reason(call: AttentionCall, name: str) -> str | None:
    """Checks shared by the backends built on FA3's per-head FP8 kernel."""
    if call.granularity != "head":
        return f"{name} supports only granularity='head' (got {call.granularity!r})"
    if call.smooth_q:
        return f"{name} has no per-key score correction, which smooth_q needs"
    if call.head_dim not in FA3_FP8_HEAD_DIMS:
        return f"{name} FP8 supports head dims {FA3_FP8_HEAD_DIMS}, got {call.head_dim}"
    if call.is_causal and call.query.shape[2] != call.key.shape[2]:
        return f"{name} aligns causal masks bottom-right; torch's is_causal is top-left"
    if call.device.type != "cuda":
        return f"{name} needs CUDA tensors, got {call.device.type}"
    reason = cuda_fp8_reason(call.device)
    if reason is None and not is_hopper(call.device.index or 0):
        reason = f"{name} FP8 runs on Hopper (sm_90) only"
    return reason


def quantize_for_fa3(call: AttentionCall):
    """Per-head e4m3 Q, K, V in (B, H, S, D) contiguous memory, their (B, H) descales, and V's
    channel mean (B, H, D) when smoothing V (else empty)."""
    from accel.kernels import ops

    return ops.quantize_qkv(call.query, call.key, call.value, "head", call.smooth_k, call.smooth_v, False)[:7]


def add_value_mean(out_bhsd: torch.Tensor, v_mean: torch.Tensor) -> torch.Tensor:
    """Undo smooth-V on a (B, H, S, D) output the backend just wrote: add V's channel mean back
    (rows of P sum to 1), in place (the sum is taken in fp32 and rounded once, with no fp32 copy
    of the output)."""
    if not v_mean.numel():
        return out_bhsd
    return out_bhsd.add_(v_mean[:, :, None, : out_bhsd.shape[-1]])


class FA3Backend(Backend):
    name = "fa3"

    def unavailable_reason(self) -> str | None:
        return fa3_reason() or triton_reason()

    def unsupported_reason(self, call: AttentionCall) -> str | None:
        return head_granularity_reason(call, "FlashAttention-3")

    def run(self, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        q8, k8, v8, qd, kd, vd, v_mean = quantize_for_fa3(call)
        return _fa3_fp8(q8, k8, v8, qd, kd, vd, v_mean, call)

    prequantized_qk = True

    def run_prequantized(self, q8, q_descale, k8, k_descale, call: AttentionCall) -> torch.Tensor:
        from accel.kernels import ops

        v8, vd, v_mean = ops.quantize_value(call.value, "head", call.smooth_v, False)
        return _fa3_fp8(q8, k8, v8, q_descale, k_descale, vd, v_mean, call)[0]


def _fa3_fp8(q8, k8, v8, qd, kd, vd, v_mean, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor | None]:
    """FA3's FP8 kernel on contiguous (B, H, S, D) e4m3 tensors with (B, H) descales."""
    import flash_attn_interface

    # FA3 reads (B, S, H, D) with a unit last stride: our contiguous (B, H, S, D) viewed as such.
    out, lse = flash_attn_interface.flash_attn_func(
        q8.transpose(1, 2), k8.transpose(1, 2), v8.transpose(1, 2),
        softmax_scale=call.scale, causal=call.is_causal,
        q_descale=qd, k_descale=kd, v_descale=vd, return_attn_probs=True,
    )[:2]
    out = add_value_mean(out.transpose(1, 2), v_mean).to(call.value.dtype)  # FA3 writes bf16
    return to_layout(out, call.layout), (lse if call.return_lse else None)
