"""Wan 2.1 / 2.2 attention in FP8: self-attention (with RoPE), text cross-attention and the
image-to-video branch, each switchable."""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import (
    WanAttnProcessor,
    _get_added_kv_projections,
    _get_qkv_projections,
)

from ..parallel import keys_per_call
from .common import FP8AttentionMixin, FP8Numerics, fused_norm_rope_backend, norm_eps

#: Wan's text encoder context length; the image-to-video branch's image tokens come before it.
TEXT_CONTEXT_LENGTH = 512


def _apply_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved RoPE on (B, S, H, D), as the stock processor computes it."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def _fused_self_attention(attn, projections, numerics: FP8Numerics, rotary_emb, backend, call) -> torch.Tensor:
    """Self-attention with RMSNorm + RoPE + quantization of Q and K in one kernel each; ``backend``
    (ours or FA3's FP8 kernel) attends and quantizes V (``call.value``)."""
    from ..kernels import ops

    query, key, _ = projections
    cos, sin = rotary_emb[0][0, :, 0, 0::2], rotary_emb[1][0, :, 0, 1::2]  # one value per channel pair
    g, heads = numerics.granularity, attn.heads
    q8, qd, _ = ops.norm_rope_quantize(query, attn.norm_q.weight, norm_eps(attn.norm_q, query), cos, sin, heads, g,
                                       False)
    k8, kd, _ = ops.norm_rope_quantize(key, attn.norm_k.weight, norm_eps(attn.norm_k, key), cos, sin, heads, g,
                                       numerics.smooth_k)
    hidden_states = backend.run_prequantized(q8, qd, k8, kd, call).flatten(2, 3).type_as(query)
    return attn.to_out[1](attn.to_out[0](hidden_states))


class WanFP8AttnProcessor(FP8AttentionMixin, WanAttnProcessor):
    """Drop-in for diffusers' ``WanAttnProcessor`` (same call contract) that runs the chosen
    attentions in FP8. One instance can serve every attention module:
    ``transformer.set_attn_processor(WanFP8AttnProcessor())``.

    Args:
        self_attention: video self-attention (the long, RoPE'd one: most of Wan's time).
        cross_attention: attention to the 512 text tokens. Off by default: with so few keys the
            quantization costs more than FP8 saves.
        image_attention: the image-to-video branch (257 image tokens). Off by default, as above.
        granularity, smooth_k, backend, strict: FP8 numerics, as in :func:`accel.fp8_sdpa`.
        min_keys: calls with fewer keys run stock bf16. None: the measured crossover on a GPU
            (``CUDA_MIN_KEYS``: 4096 keys per head, 8192 per token; below, quantizing costs more
            than FP8 saves), as the presets do; 0: every call FP8.
        fused_qk: where our Triton kernel or FlashAttention-3's FP8 kernel serves the
            self-attention, run RMSNorm + RoPE + quantization of Q and K as one Triton kernel each
            (no bf16 copy of the normed or roped Q/K is written).

    A call with an attention mask runs stock (one warning). ``_attention_backend`` and
    ``_parallel_config`` work as on the stock processor: under diffusers' context parallelism
    the self-attention runs FP8 through diffusers' Ulysses / ring machinery (:mod:`accel.parallel`).
    """

    def __init__(
        self,
        self_attention: bool = True,
        cross_attention: bool = False,
        image_attention: bool = False,
        granularity: str = "token",
        smooth_k: bool = True,
        backend: str = "auto",
        strict: bool = False,
        fused_qk: bool = True,
        min_keys: int | None = 0,
    ):
        super().__init__()
        self.fused_qk = fused_qk
        numerics = FP8Numerics(granularity, smooth_k, backend, strict, min_keys=min_keys)
        #: FP8 numerics per attention kind, None for bf16. accel.apply's plans may change these
        #: between denoising steps.
        self.active: dict[str, FP8Numerics | None] = {
            "self": numerics if self_attention else None,
            "cross": numerics if cross_attention else None,
            "image": numerics if image_attention else None,
        }

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        is_self = encoder_hidden_states is None
        main = self.active["self" if is_self else "cross"]
        n_keys = keys_per_call(hidden_states.shape[1], self._parallel_config)  # self-attention: keys = tokens
        if main is not None and is_self and not main.serves(n_keys, hidden_states.device):
            main = None  # too short for FP8 to win: exactly the stock path below
        image = self.active["image"] if attn.add_k_proj is not None else None
        if main is None and image is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        if self._must_run_stock(attention_mask):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

        projections = None
        # The fused kernel sees this rank's tokens only: not under context parallelism.
        if is_self and main is not None and rotary_emb is not None and self.fused_qk and self._parallel_config is None:
            projections = _get_qkv_projections(attn, hidden_states, None)
            fused = fused_norm_rope_backend(main, projections[0], projections[2].unflatten(2, (attn.heads, -1)),
                                            (attn.norm_q, attn.norm_k))
            if fused is not None:
                return _fused_self_attention(attn, projections, main, rotary_emb, *fused)

        encoder_hidden_states_img = None
        if attn.add_k_proj is not None:
            image_context_length = encoder_hidden_states.shape[1] - TEXT_CONTEXT_LENGTH
            encoder_hidden_states_img = encoder_hidden_states[:, :image_context_length]
            encoder_hidden_states = encoder_hidden_states[:, image_context_length:]

        query, key, value = projections or _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _apply_rotary(query, *rotary_emb)
            key = _apply_rotary(key, *rotary_emb)

        hidden_states_img = None
        if encoder_hidden_states_img is not None:
            key_img, value_img = _get_added_kv_projections(attn, encoder_hidden_states_img)
            key_img = attn.norm_added_k(key_img).unflatten(2, (attn.heads, -1))
            value_img = value_img.unflatten(2, (attn.heads, -1))
            hidden_states_img = self._attend("image", query, key_img, value_img, image)
            hidden_states_img = hidden_states_img.flatten(2, 3).type_as(query)

        parallel_config = self._parallel_config if is_self else None
        hidden_states = self._attend("self" if is_self else "cross", query, key, value, main, parallel_config)
        hidden_states = hidden_states.flatten(2, 3).type_as(query)
        if hidden_states_img is not None:
            hidden_states = hidden_states + hidden_states_img
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)
