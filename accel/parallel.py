"""FP8 attention inside diffusers' context parallelism (``transformer.enable_parallelism(
config=ContextParallelConfig(ulysses_degree=N))``, ``ring_degree=N``, or both).

We bring no collectives of our own: diffusers' ``_templated_context_parallel_attention`` does the
Ulysses all-to-all, the ring's all-gather of K/V and the merge of partial results; we only give it
a forward op built on :func:`accel.fp8_sdpa`.

Why the numerics stay right:

* Ulysses gives each rank whole sequences for a subset of heads. Per-head and per-token scales
  (and smooth-K/V channel means, per head) are computed over the same tokens as on one GPU, so
  each head's FP8 attention is exactly the single-GPU one (Wan's fused norm+RoPE kernel, which
  attends by itself, is off under context parallelism).
* Ring attention hands each rank's queries one K/V shard at a time. Each shard is quantized with
  its own scales (and its own smooth-K mean), so every partial attention is a valid FP8 attention
  over that shard. ``fp8_sdpa(return_lse=True)`` returns the log-sum-exp of the *true* scores
  (smooth-K's per-row shift added back), so diffusers' merge
  ``out = prev - sigmoid(lse - prev_lse) * (prev - out)`` weighs the partials exactly. Only the
  quantization error differs from one GPU (other scales per shard), not the softmax.

Inference only: the backward op raises. Ring steps re-quantize the local queries once per K/V
shard (diffusers calls the op per shard), an extra O(S * D) pass per step. Attentions a plan
leaves in bf16 go to diffusers' dispatcher with the processor's backend, as stock: under ring
attention that backend must return an LSE (``model.set_attention_backend("_native_cudnn")`` or
a flash backend; diffusers' default ``native`` cannot ring).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
from diffusers.models.attention_dispatch import _templated_context_parallel_attention

from .sdpa import fp8_sdpa

if TYPE_CHECKING:
    from .processors.common import FP8Numerics


def context_parallel_config(parallel_config):
    """The ``ContextParallelConfig`` of a diffusers ``ParallelConfig``, or None without one."""
    return None if parallel_config is None else getattr(parallel_config, "context_parallel_config", None)


def keys_per_call(n_local_keys: int, parallel_config) -> int:
    """How many keys each attention call sees when a rank holds ``n_local_keys`` of them:
    Ulysses gathers whole sequences (times its degree), ring calls see one shard at a time.
    This, not the rank's local count, is what decides whether FP8 pays (``FP8Numerics.serves``)."""
    cp = context_parallel_config(parallel_config)
    return n_local_keys if cp is None else n_local_keys * cp.ulysses_degree


def fp8_context_parallel_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    numerics: FP8Numerics,
    parallel_config,
    scale: float | None = None,
) -> torch.Tensor:
    """FP8 attention on this rank's (B, S_local, H, D) shards under diffusers' context
    parallelism; returns this rank's (B, S_local, H, D) output, like diffusers' native backend.

    ``parallel_config`` is the processor's ``_parallel_config`` (a diffusers ``ParallelConfig``).
    """
    forward_op = functools.partial(_fp8_forward_op, numerics=numerics)
    return _templated_context_parallel_attention(
        query, key, value, None, 0.0, False, scale, False, False,
        forward_op=forward_op, backward_op=_no_backward_op, _parallel_config=parallel_config,
    )


def _fp8_forward_op(
    ctx,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    return_lse: bool = False,
    _save_ctx: bool = True,
    _parallel_config=None,
    *,
    numerics: FP8Numerics,
):
    """diffusers' forward-op contract (see ``_native_attention_forward_op``): (B, S, H, D)
    tensors in, ``out`` or ``(out, lse)`` out, with ``lse`` the natural-log log-sum-exp per
    (B, S, H): the merge broadcasts it over ``out`` after ``unsqueeze(-1)``."""
    if attn_mask is not None or dropout_p or enable_gqa:
        raise ValueError("FP8 context-parallel attention takes no mask, dropout or GQA")
    if _save_ctx and ctx is not None:
        # diffusers' ring backward reads these before it calls the backward op: save them (as
        # its native op does) so that a backward reaches _no_backward_op's clear error.
        ctx.save_for_backward(query, key, value)
    out = fp8_sdpa(query, key, value, is_causal=is_causal, scale=scale, layout="bshd",
                   return_lse=return_lse, **numerics.sdpa_kwargs())
    if not return_lse:  # Ulysses: no merge, skip the LSE's smooth-K correction pass
        return out
    out, lse = out
    return out, lse.transpose(1, 2)  # fp8_sdpa's (B, H, S) -> diffusers' (B, S, H)


def _no_backward_op(ctx, grad_out, *args, **kwargs):
    raise NotImplementedError(
        "accel's FP8 context-parallel attention is inference-only (no backward); run training "
        "with the stock processor, or wrap inference in torch.no_grad()"
    )
