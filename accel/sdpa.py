"""``accel.fp8_sdpa``: FP8 scaled-dot-product attention with per-head or per-token scales."""

from __future__ import annotations

import math

import torch

from ._warnings import warn_once
from .backends import BACKEND_NAMES, AttentionCall, select_backend
from .backends.bf16 import sdpa_high_precision
from .backends.env import triton_interpreting
from .kernels.numerics import hadamard_matrix, rows_dot

LAYOUTS = ("bhsd", "bshd")
GRANULARITIES = ("head", "token")
_INPUT_DTYPES = (torch.bfloat16, torch.float16)
_GPU_BACKENDS = ("triton", "fa3", "torch")
_NAMES = ("query", "key", "value")


def fp8_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    layout: str = "bhsd",
    granularity: str = "head",
    smooth_k: bool = True,
    smooth_v: bool = False,
    smooth_q: bool = False,
    hadamard: bool = False,
    backend: str = "auto",
    return_lse: bool = False,
    strict: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention with Q, K, V and P in FP8 (e4m3), output in the input dtype.

    Args:
        query, key, value: bf16 or fp16, 4-D, any strides (never copied). ``layout="bhsd"`` is
            torch's (batch, heads, tokens, head_dim); ``"bshd"`` is diffusers' (batch, tokens,
            heads, head_dim). Key/value may have another token count than the query.
        attn_mask: not supported in FP8; a call with a mask runs bf16 SDPA (one warning), or
            raises with ``strict=True``.
        is_causal: causal mask, top-left aligned like ``torch.nn.functional.scaled_dot_product_attention``.
        scale: softmax scale; default ``1 / sqrt(head_dim)``.
        granularity: ``"head"``: one scale per (batch, head) for each of Q, K, V (FlashAttention-3's
            contract; where our Hopper kernel quantizes Q itself, up to 2048 keys, Q gets one per
            token instead: as accurate, and no pass over Q of its own). ``"token"``: one per
            (batch, head, token) for Q and K and one per (batch, head, channel) for V; more
            accurate on outlier-heavy activations.
        smooth_k: subtract K's per-(batch, head) channel mean before quantizing. Exact (it shifts
            each query row's scores by a constant) and much more accurate when K has a channel
            offset, as diffusion transformers' keys do.
        smooth_v: subtract V's per-(batch, head) channel mean before quantizing and add it to the
            output. Exact (softmax rows sum to 1); pays off when V has channel offsets.
        smooth_q: subtract Q's per-(batch, head) channel mean before quantizing and add each
            key's lost term, mean(Q) . k_j, back to its scores in fp32. Exact; costs one more
            read of K and an add per score (19-29% of the call on an H200). Our Triton kernel
            and the reference only.
        hadamard: rotate Q, K and V by a Hadamard matrix over the head dim before quantizing
            (QK^T is unchanged; the output is rotated back), spreading channel outliers over all
            channels. Power-of-two head dims; the rotations run as bf16/fp16 matmuls around the
            FP8 call. It usually hurts in FP8: e4m3 keeps the same relative precision at every
            magnitude and stores each row's largest value exactly, so outlier channels cost
            little unrotated; rotated, every product carries the rounding. Measured on an H200:
            2x the error on activation-like inputs, 8-60% slower (benchmarks/NOTES.md 18).
        backend: ``"triton"`` (ours), ``"fa3"`` (FlashAttention-3, head granularity),
            ``"torch"`` (torch's experimental FP8 SDPA op on FA3), ``"reference"`` (pure torch,
            any device, slow) or ``"auto"``: the fastest one that can serve the call.
        return_lse: also return the natural-log log-sum-exp of each query row's scaled scores,
            (batch, heads, query tokens) fp32, as ring attention needs to merge partial results.
        strict: raise instead of falling back to bf16 when no FP8 backend can serve the call.

    Returns:
        The attention output in the input's dtype and layout, or ``(output, lse)``.

    Raises:
        TypeError, ValueError: invalid inputs; the message says how to fix them.
        RuntimeError: ``strict=True`` and no FP8 backend can serve the call.
    """
    q, k, v = _validate(query, key, value, layout, granularity, backend, attn_mask, is_causal)
    head_dim = q.shape[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    elif not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number or None, got {scale!r}")
    if hadamard:
        return _rotated(query, key, value, attn_mask=attn_mask, is_causal=is_causal, scale=scale, layout=layout,
                        granularity=granularity, smooth_k=smooth_k, smooth_v=smooth_v, smooth_q=smooth_q,
                        backend=backend, return_lse=return_lse, strict=strict)
    call = AttentionCall(q, k, v, bool(is_causal), float(scale), layout, granularity,
                         bool(smooth_k), bool(return_lse), bool(smooth_v), bool(smooth_q))

    if q.numel() == 0:  # empty batch, heads or queries: nothing to attend
        out = torch.empty_like(query)
        lse = q.new_empty(q.shape[:3], dtype=torch.float32)
        return (out, lse) if return_lse else out

    chosen, reason = (None, "attention masks are not supported in FP8") if attn_mask is not None \
        else select_backend(call, backend)
    if chosen is None:
        if strict:
            raise RuntimeError(f"fp8_sdpa: {reason}. Pass strict=False to run bf16 SDPA instead.")
        warn_once(f"accel.fp8_sdpa: {reason}; running {q.dtype} scaled_dot_product_attention instead.")
        out, lse = sdpa_high_precision(q, k, v, attn_mask, call.is_causal, call.scale, call.return_lse)
        out = out.transpose(1, 2) if layout == "bshd" else out
        return (out, lse) if return_lse else out

    out, lse = chosen.run(call)
    if not return_lse:
        return out
    if call.smooth_k:
        # Smoothing shifted row i's scores by -scale * q_i . mean(K): add it back so the LSE is
        # that of the true scores (ring attention merges shards whose K means differ).
        lse = lse + call.scale * rows_dot(q, k.mean(dim=2, dtype=torch.float32))
    return out, lse


def _rotated(query, key, value, *, scale, **kwargs):
    """fp8_sdpa on Hadamard-rotated Q, K, V. With the +-1 matrix H (H @ H = D * I), (QH)(KH)^T
    = D * QK^T, so the softmax scale is divided by D; softmax(.)(VH) H / D is the output."""
    head_dim = query.shape[-1]
    if head_dim & (head_dim - 1):
        raise ValueError(f"fp8_sdpa: hadamard=True needs a power-of-two head_dim, got {head_dim}; "
                         "pass hadamard=False")
    rotation = hadamard_matrix(head_dim, query.device, query.dtype)
    result = fp8_sdpa(query @ rotation, key @ rotation, value @ rotation, scale=scale / head_dim, **kwargs)
    out, lse = result if kwargs["return_lse"] else (result, None)
    out = (out @ rotation) / head_dim  # exact: a power of two
    return (out, lse) if kwargs["return_lse"] else out


def _validate(query, key, value, layout, granularity, backend, attn_mask, is_causal):
    """Check the inputs; return (B, H, S, D) views of query, key, value. The checks read each
    shape and dtype once, in the caller's layout (host time: 17 -> 11 us a call on a slow CPU)."""
    tensors = (query, key, value)
    for name, t in zip(_NAMES, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"fp8_sdpa: {name} must be a torch.Tensor, got {type(t).__name__}")
    dtype = query.dtype
    if dtype not in _INPUT_DTYPES or key.dtype != dtype or value.dtype != dtype:
        got = ", ".join(f"{n} {t.dtype}" for n, t in zip(_NAMES, tensors))
        raise TypeError(
            f"fp8_sdpa takes query, key and value all bfloat16 or all float16 (got {got}); "
            "cast them with .to(torch.bfloat16)"
        )
    device = query.device
    if key.device != device or value.device != device:
        devices = {t.device for t in tensors}
        raise ValueError(
            f"fp8_sdpa: query, key and value are on different devices {sorted(map(str, devices))}; "
            "move them to one device with .to(device)"
        )
    if layout not in LAYOUTS:
        raise ValueError(f"fp8_sdpa: layout must be one of {LAYOUTS}, got {layout!r}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"fp8_sdpa: granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if backend not in BACKEND_NAMES:
        raise ValueError(f"fp8_sdpa: backend must be one of {BACKEND_NAMES}, got {backend!r}")
    if not isinstance(is_causal, bool):
        raise TypeError(f"fp8_sdpa: is_causal must be a bool, got {type(is_causal).__name__}")
    if attn_mask is not None and not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"fp8_sdpa: attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}")
    qs, ks, vs = query.shape, key.shape, value.shape
    for name, shape in zip(_NAMES, (qs, ks, vs)):
        if len(shape) != 4:
            axes = "(batch, heads, tokens, head_dim)" if layout == "bhsd" else "(batch, tokens, heads, head_dim)"
            raise ValueError(
                f"fp8_sdpa: {name} must be 4-D {axes} for layout={layout!r}, got shape {tuple(shape)}"
            )
    heads, tokens = (1, 2) if layout == "bhsd" else (2, 1)  # axes in the caller's layout
    if not (qs[0] == ks[0] == vs[0]):
        raise ValueError(f"fp8_sdpa: batch sizes differ: query {qs[0]}, key {ks[0]}, value {vs[0]}")
    if not (qs[heads] == ks[heads] == vs[heads]):
        raise ValueError(
            f"fp8_sdpa: head counts differ (query {qs[heads]}, key {ks[heads]}, value {vs[heads]}); "
            "grouped-query attention is not supported: repeat key/value heads with "
            f"repeat_interleave(n, dim={heads})"
        )
    if not (qs[3] == ks[3] == vs[3]):
        raise ValueError(
            f"fp8_sdpa: head dims differ (query {qs[3]}, key {ks[3]}, value {vs[3]}); "
            "query, key and value must share one head_dim"
        )
    if ks[tokens] != vs[tokens]:
        raise ValueError(f"fp8_sdpa: key has {ks[tokens]} tokens but value has {vs[tokens]}; they must match")
    if ks[tokens] == 0 and qs[tokens] > 0:
        raise ValueError("fp8_sdpa: key and value have no tokens; attention over nothing is undefined")
    if backend in _GPU_BACKENDS and device.type != "cuda":
        if not (backend == "triton" and device.type == "cpu" and triton_interpreting()):
            raise ValueError(
                f"fp8_sdpa: backend={backend!r} runs on CUDA GPUs but the tensors are on {device.type}; "
                "move them with .cuda(), or use backend='reference' (or 'auto') on the CPU"
            )
    if layout == "bshd":
        return query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    return query, key, value
