"""torch's experimental FP8 SDPA op (``_scaled_dot_product_attention_quantized``, PyTorch issue
181181) on FlashAttention-3, fed by our quantization kernel.

Running it activates torch's FA3 flash-attention implementation for the whole process
(``torch.nn.attention.activate_flash_attention_impl("FA3")``), which also changes what bf16
``scaled_dot_product_attention`` uses; ``backend="auto"`` therefore never picks it.
"""

from __future__ import annotations

import functools

import torch

from .base import AttentionCall, Backend, to_layout
from .env import torch_quantized_reason, triton_reason
from .fa3 import add_value_mean, head_granularity_reason, quantize_for_fa3


def _activate_fa3() -> None:
    """FA3 as torch's flash-attention implementation, again if something restored the default
    since (torchao's low-precision wrapper does after every forward)."""
    current = getattr(torch.nn.attention, "current_flash_attention_impl", None)
    if current is None:
        _activate_fa3_once()
    elif current() != "FA3":
        torch.nn.attention.activate_flash_attention_impl("FA3")


@functools.cache
def _activate_fa3_once() -> None:  # a torch without current_flash_attention_impl
    torch.nn.attention.activate_flash_attention_impl("FA3")


class TorchQuantizedBackend(Backend):
    name = "torch"

    def unavailable_reason(self) -> str | None:
        return torch_quantized_reason() or triton_reason()

    def unsupported_reason(self, call: AttentionCall) -> str | None:
        if call.return_lse:
            return "torch's FP8 SDPA op does not return the log-sum-exp"
        return head_granularity_reason(call, "torch's FP8 SDPA op")

    def run(self, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        from torch.nn.attention.experimental._scaled_dot_product_attention_quantized import (
            _scaled_dot_product_attention_quantized,
        )

        _activate_fa3()
        q8, k8, v8, qd, kd, vd, v_mean = quantize_for_fa3(call)
        out = _scaled_dot_product_attention_quantized(
            q8, k8, v8, is_causal=call.is_causal, scale=call.scale,
            q_descale=qd, k_descale=kd, v_descale=vd,
        )
        return to_layout(add_value_mean(out, v_mean).to(call.query.dtype), call.layout), None
