"""What every FP8 attention backend receives and must provide."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionCall:
    """One validated ``fp8_sdpa`` call. ``query``/``key``/``value`` are (B, H, S, D) views of the
    caller's tensors (never copies); ``layout`` is the layout the output must come back in."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    is_causal: bool
    scale: float
    layout: str
    granularity: str
    smooth_k: bool
    return_lse: bool
    smooth_v: bool = False
    smooth_q: bool = False

    @property
    def head_dim(self) -> int:
        return self.query.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.query.device


class Backend:
    """An FP8 attention implementation. Subclasses set ``name`` and implement the three methods."""

    name: str = ""
    #: whether :meth:`run_prequantized` serves Q and K from the fused norm + RoPE + quantization kernel
    prequantized_qk: bool = False

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run in this process at all (missing package, no GPU), or None."""
        raise NotImplementedError

    def unsupported_reason(self, call: AttentionCall) -> str | None:
        """Why this backend cannot serve ``call`` (device, granularity, head dim...), or None."""
        raise NotImplementedError

    def run(self, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output in ``call.layout`` and the input dtype, and the natural-log log-sum-exp of the
        scores the backend computed, (B, H, Sq) fp32, when ``call.return_lse`` (else None)."""
        raise NotImplementedError

    def run_prequantized(self, q8: torch.Tensor, q_descale: torch.Tensor, k8: torch.Tensor,
                         k_descale: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        """Attention whose Q and K arrive quantized: contiguous e4m3 (B, H, S, D) with the
        descales of ``call.granularity`` (K smoothed if ``call.smooth_k``), as
        :func:`accel.kernels.ops.norm_rope_quantize` writes them. ``call`` describes the attention
        (shapes, numerics) and brings V; its query and key are not read. Output in
        ``call.layout`` and V's dtype. Only where ``prequantized_qk``."""
        raise NotImplementedError(f"backend {self.name!r} takes no pre-quantized Q and K")


def to_layout(out_bhsd: torch.Tensor, layout: str) -> torch.Tensor:
    """View a (B, H, S, D) result in the caller's layout."""
    return out_bhsd.transpose(1, 2) if layout == "bshd" else out_bhsd
