"""Pure-torch emulation of the FP8 numerics of the Triton kernels; runs anywhere, CPU included.

It quantizes exactly as the kernels do (same scales, same saturating round-to-nearest-even casts)
and runs the same online softmax over the same key blocks, so the two agree to fp32 rounding
(bit for bit under Triton's CPU interpreter). Slow: for tests and for running the numerics on
machines without an FP8 GPU.
"""

from __future__ import annotations

import math

import torch

from accel.kernels.configs import default_config
from accel.kernels.numerics import (E4M3_MAX, P_SCALE, descale_from_amax, key_bias, scale_from_amax,
                                    value_granularity)

from .base import AttentionCall, Backend, to_layout

_QUERY_CHUNK = 1024  # bounds the fp32 score matrix held at once


def quantize_reference(
    x: torch.Tensor, granularity: str, smooth: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 copy of a (B, H, S, D) tensor and its descale: (B, H), (B, H, S) or (B, H, D) for
    ``"head"``, ``"token"``, ``"channel"``. ``smooth`` subtracts the channel mean over tokens."""
    xf = x.float()
    if smooth:
        xf = xf - xf.mean(dim=2, keepdim=True)
    if granularity == "head":
        amax = xf.abs().amax(dim=(2, 3))
        scale = scale_from_amax(amax)[:, :, None, None]
    elif granularity == "token":
        amax = xf.abs().amax(dim=3)
        scale = scale_from_amax(amax)[..., None]
    elif granularity == "channel":
        amax = xf.abs().amax(dim=2)
        scale = scale_from_amax(amax)[:, :, None, :]
    else:
        raise ValueError(f"unknown granularity {granularity!r}")
    x8 = (xf * scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return x8, descale_from_amax(amax)


def attention_reference(
    q8: torch.Tensor,
    k8: torch.Tensor,
    v8: torch.Tensor,
    q_descale: torch.Tensor,
    k_descale: torch.Tensor,
    v_descale: torch.Tensor,
    sm_scale: float,
    is_causal: bool = False,
    block_n: int | None = None,
    k_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 attention on quantized (B, H, S, D) inputs, key block by key block like the kernel
    (``block_n`` defaults to the kernel's for this head dim and granularity). Descales as the
    kernels take them: per head, per token for Q and K, or Q per token against K per head.
    ``k_bias`` (B, H, Skv), unscaled: smooth-Q's per-key correction. Returns fp32 (out, lse)."""
    key_per_token = k_descale.dim() == 3
    block_n = block_n or default_config(q8.shape[-1], per_token=key_per_token).block_n
    qk_scale = sm_scale * math.log2(math.e)
    k = k8.float()
    v = v8.float()
    Sq, Skv = q8.shape[2], k8.shape[2]
    v_descale = v_descale[:, :, None, :] if v_descale.dim() == 3 else v_descale[:, :, None, None]
    bias = None if k_bias is None else (k_bias * qk_scale)[:, :, None, :]  # log2 units, as the kernel
    outs, lses = [], []
    for start in range(0, Sq, _QUERY_CHUNK):
        stop = min(start + _QUERY_CHUNK, Sq)
        if key_per_token:
            q_scale = q_descale[:, :, start:stop, None] * qk_scale
        elif q_descale.dim() == 3:  # Q per row against K per head, as the kernels quantize Q themselves
            q_scale = q_descale[:, :, start:stop, None] * (qk_scale * k_descale)[:, :, None, None]
        else:
            q_scale = (qk_scale * q_descale * k_descale)[:, :, None, None]
        q = q8[:, :, start:stop].float()
        rows = torch.arange(start, stop, device=q.device)[:, None]
        m = torch.full((*q.shape[:3], 1), float("-inf"), device=q.device)
        row_sum = torch.zeros_like(m)
        acc = torch.zeros(*q.shape[:3], v.shape[-1], device=q.device)
        # Same fp32 operations in the same order as the kernel's loop.
        for n0 in range(0, Skv, block_n):
            n1 = min(n0 + block_n, Skv)
            s = q @ k[:, :, n0:n1].transpose(-1, -2)
            if key_per_token:
                s = s * k_descale[:, :, None, n0:n1]
            if bias is not None:
                s = s * q_scale + bias[..., n0:n1]
            if is_causal:
                s = s.masked_fill(torch.arange(n0, n1, device=s.device)[None, :] > rows, float("-inf"))
            if bias is not None:
                m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
                p = torch.exp2(s - m_new)
            else:
                m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True) * q_scale)
                p = torch.exp2(s * q_scale - m_new)
            alpha = torch.exp2(m - m_new)
            row_sum = row_sum * alpha + p.sum(dim=-1, keepdim=True)
            p8 = (p * P_SCALE).to(torch.float8_e4m3fn).float()
            acc = acc * alpha + p8 @ v[:, :, n0:n1]
            m = m_new
        outs.append(acc * (1.0 / (row_sum * P_SCALE)) * v_descale)
        lses.append((m + torch.log2(row_sum)).squeeze(-1) * math.log(2.0))
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


class ReferenceBackend(Backend):
    name = "reference"

    def unavailable_reason(self) -> str | None:
        return None

    def unsupported_reason(self, call: AttentionCall) -> str | None:
        return None

    def run(self, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        q8, qd = quantize_reference(call.query, call.granularity, smooth=call.smooth_q)
        k8, kd = quantize_reference(call.key, call.granularity, smooth=call.smooth_k)
        v8, vd = quantize_reference(call.value, value_granularity(call.granularity), smooth=call.smooth_v)
        k_bias = key_bias(call.key, call.query.float().mean(dim=2)) if call.smooth_q else None
        out, lse = attention_reference(q8, k8, v8, qd, kd, vd, call.scale, call.is_causal, k_bias=k_bias)
        if call.smooth_v:  # rows of P sum to 1: the subtracted mean comes back exactly
            out = out + call.value.float().mean(dim=2, keepdim=True)
        out = to_layout(out.to(call.query.dtype), call.layout)
        return out, (lse if call.return_lse else None)
