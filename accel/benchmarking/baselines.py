"""The FlashAttention-3 baselines of the pipeline benchmark, set up around a transformer.

* ``fa3_bf16``: every attention through FA3's bf16 kernel (``flash_attn_interface``). diffusers'
  own ``_flash_3`` backend refuses FA3 builds whose package it does not recognize (measured on
  the team's GPU machine), so the stock processors' attention call is routed to FA3 here.
* ``torchao_style``: what torchao's low-precision attention and FA3's FP8 recipe do — every
  self-attention in FP8 through FA3's kernel, with one scale per (batch, head) computed in plain
  torch (amax, scale, saturating cast: no smoothing, no fused quantization). The bar that
  ``accel``'s ``speed`` preset must beat.
* ``sageattn_int8``: every attention through SageAttention's ``sageattn`` (as ``pip install
  sageattention`` installs it), where installed.
* ``torchao_low_precision``: torchao itself, where it is installed (``torchao.prototype.attention.
  apply_low_precision_attention``, torch >= 2.11 and FA3): every ``F.scaled_dot_product_attention``
  of the model in FP8 (torchao's quantization kernels, then FA3's FP8 kernel through torch's
  quantized SDPA op), cross-attention included.

Each replaces module-level functions, processor methods or torchao's global compiler pass for the
duration of a ``with`` block only, and puts everything back after.
"""

from __future__ import annotations

import contextlib
import types

import torch

from ..backends.env import torch_quantized_reason
from ..kernels.numerics import E4M3_MAX
from ..plan import FP8Config, Plan, Rule
from ..processors.common import FP8AttentionMixin, attend


def _flash_attn_func():
    import flash_attn_interface

    return flash_attn_interface.flash_attn_func


def _first(result):
    """FA3 builds return ``out`` or ``(out, lse, ...)``."""
    return result[0] if isinstance(result, tuple) else result


def _dispatch_through(attention):
    """diffusers' ``dispatch_attention_fn`` contract on (B, S, H, D) tensors, served by
    ``attention(query, key, value, scale, is_causal)``. Masks and context parallelism are not the
    baseline's here: those calls go to diffusers unchanged."""
    def dispatch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        if attn_mask is not None or dropout_p or kwargs.get("parallel_config") is not None:
            return dispatch_attention_fn(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                         is_causal=is_causal, scale=scale, **kwargs)
        return attention(query, key, value, scale, is_causal)
    return dispatch


fa3_bf16_attention = _dispatch_through(
    lambda q, k, v, scale, is_causal: _first(_flash_attn_func()(q, k, v, softmax_scale=scale, causal=is_causal)))


def sageattn_bshd(q, k, v, scale=None, is_causal=False):
    """SageAttention's ``sageattn`` on (B, S, H, D) tensors. It smooths K in place."""
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="NHD", is_causal=is_causal, sm_scale=scale)


sageattn_attention = _dispatch_through(sageattn_bshd)


@contextlib.contextmanager
def _stock_processors_through(dispatch):
    """Within the block, the stock Wan / Flux processors call ``dispatch`` for their attention."""
    from diffusers.models.transformers import transformer_flux, transformer_wan

    modules = (transformer_wan, transformer_flux)
    saved = [m.dispatch_attention_fn for m in modules]
    for m in modules:
        m.dispatch_attention_fn = dispatch
    try:
        yield
    finally:
        for m, fn in zip(modules, saved):
            m.dispatch_attention_fn = fn


def fa3_bf16(model: torch.nn.Module):
    """Within the block, ``model``'s stock Wan / Flux processors attend through FA3 bf16."""
    return _stock_processors_through(fa3_bf16_attention)


def sageattn_int8(model: torch.nn.Module):
    """Within the block, ``model``'s stock Wan / Flux processors attend through SageAttention
    (``sageattn``: pip's 1.0.x is Triton, INT8 Q K^T, FP16 P V; diffusers' own sage backends
    want SageAttention >= 2, a source build)."""
    return _stock_processors_through(sageattn_attention)


def quantize_per_head(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, H, D) -> (e4m3 copy, (B, H) fp32 descale): plain torch ops, one scale per head."""
    amax = x.abs().amax(dim=(1, 3)).float().clamp(min=1e-12)  # (B, H)
    x8 = (x.float() * (E4M3_MAX / amax)[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return x8, amax / E4M3_MAX


def torchao_style_attention(query, key, value) -> torch.Tensor:
    """Per-head FP8 quantization in plain torch, then FA3's FP8 kernel: (B, S, H, D) in and out."""
    (q8, qd), (k8, kd), (v8, vd) = (quantize_per_head(t) for t in (query, key, value))
    out = _flash_attn_func()(q8, k8, v8, q_descale=qd, k_descale=kd, v_descale=vd)
    return _first(out).to(query.dtype)


def _torchao_attend(self, kind, query, key, value, numerics, parallel_config=None):
    if numerics is None or parallel_config is not None:
        return attend(self, query, key, value, numerics, parallel_config)
    return torchao_style_attention(query, key, value)


@contextlib.contextmanager
def torchao_style(model: torch.nn.Module):
    """Within the block, every self-attention of ``model`` (Wan) / every attention (Flux) runs
    :func:`torchao_style_attention`; the rest stays stock."""
    import accel

    every_self_attention = Plan((Rule(FP8Config("head", smooth_k=False, min_keys=0)),), "torchao-style")
    with accel.apply(model, plan=every_self_attention, backend="fa3"):
        for processor in model.attn_processors.values():
            if isinstance(processor, FP8AttentionMixin):
                processor._attend = types.MethodType(_torchao_attend, processor)  # this instance only
                processor.fused_qk = False  # every FP8 call must go through _attend
        yield


def sageattention_reason() -> str | None:
    """None if SageAttention is importable, else why not."""
    try:
        from sageattention import sageattn  # noqa: F401
    except Exception as exc:  # ImportError, or its Triton / CUDA pieces failing to load
        return f"sageattention is not importable: {exc}"
    return None


def torchao_reason() -> str | None:
    """None if torchao's low-precision attention can run here, else why not."""
    reason = torch_quantized_reason()  # torch's quantized SDPA op (torch >= 2.11) and FA3
    if reason is not None:
        return f"torchao's low-precision attention runs on torch's FP8 SDPA op: {reason}"
    try:
        from torchao.prototype.attention import apply_low_precision_attention  # noqa: F401
    except Exception as exc:  # ImportError, or an older torchao without the API
        return f"torchao.prototype.attention.apply_low_precision_attention is not importable: {exc}"
    return None


@contextlib.contextmanager
def torchao_low_precision(model: torch.nn.Module):
    """Yields ``apply_low_precision_attention(model)``: torchao's wrapper, which puts every SDPA of
    ``model`` in FP8 for the duration of each of its forwards (call it instead of ``model``; it
    reads ``model``'s attributes through). torchao also installs a pre-grad pass for
    torch.compile, process-wide; it is put back when the block ends."""
    import torch._inductor.config as inductor_config
    from torchao.prototype.attention import apply_low_precision_attention

    saved = inductor_config.pre_grad_custom_pass
    try:
        yield apply_low_precision_attention(model)
    finally:
        inductor_config.pre_grad_custom_pass = saved
