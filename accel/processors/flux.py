"""FLUX attention in FP8: double-stream blocks (text prepended, RoPE over the joint sequence) and
single-stream blocks, each switchable."""

from __future__ import annotations

import dataclasses

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor, _get_qkv_projections

from ..parallel import keys_per_call
from .common import FP8AttentionMixin, FP8Numerics, fused_norm_rope_backend, norm_eps


def _norms(attn, joint: bool) -> tuple:
    """The RMSNorms of Q and K: the image stream's, then the text stream's in double-stream blocks."""
    return (attn.norm_q, attn.norm_k) + ((attn.norm_added_q, attn.norm_added_k) if joint else ())


def _rope_table(image_rotary_emb, tokens: int, head_dim: int) -> bool:
    """Whether the rotary embedding is FluxPosEmbed's (cos, sin) table, (tokens, head_dim) each,
    the form the fused kernel reads; anything else takes the stock path."""
    return (isinstance(image_rotary_emb, (tuple, list)) and len(image_rotary_emb) == 2
            and all(t.shape == (tokens, head_dim) for t in image_rotary_emb))


def _fused_attention(attn, projections, joint: bool, numerics: FP8Numerics, image_rotary_emb, backend, call
                     ) -> torch.Tensor:
    """Attention with RMSNorm + RoPE + quantization of Q and K in one kernel each, reading the
    text and image projections in place (no bf16 copy of the normed, joined or roped Q/K);
    ``backend`` (ours or FA3's FP8 kernel) attends and quantizes V. Returns the (B, S, H*D)
    output of the joint sequence, text first."""
    from ..kernels import ops

    query, key, value, encoder_query, encoder_key, encoder_value = projections
    head_dim = attn.head_dim
    heads = query.shape[-1] // head_dim
    # FluxPosEmbed repeats each channel pair's cos and sin: one value per pair is the whole table
    cos, sin = image_rotary_emb[0][:, 0::2], image_rotary_emb[1][:, 0::2]

    def quantize(x, norm, text, text_norm, smooth):
        prefix = {} if not joint else dict(prefix=text, prefix_weight=text_norm.weight,
                                           prefix_eps=norm_eps(text_norm, text))
        return ops.norm_rope_quantize(x, norm.weight, norm_eps(norm, x), cos, sin, heads, numerics.granularity,
                                      smooth, True, **prefix)

    q8, qd, _ = quantize(query, attn.norm_q, encoder_query, attn.norm_added_q if joint else None, False)
    k8, kd, _ = quantize(key, attn.norm_k, encoder_key, attn.norm_added_k if joint else None, numerics.smooth_k)
    if joint:  # V is not normed or rotated: joined as stock does, then quantized by the backend
        value = torch.cat([encoder_value.unflatten(-1, (-1, head_dim)), value.unflatten(-1, (-1, head_dim))], dim=1)
        call = dataclasses.replace(call, value=value.transpose(1, 2))
    return backend.run_prequantized(q8, qd, k8, kd, call).flatten(2, 3)


class FluxFP8AttnProcessor(FP8AttentionMixin, FluxAttnProcessor):
    """Drop-in for diffusers' ``FluxAttnProcessor`` (same call contract) that runs attention in
    FP8. One instance can serve every attention module:
    ``transformer.set_attn_processor(FluxFP8AttnProcessor())``; IP-adapter processors are not
    replaced by :func:`accel.apply`.

    Args:
        double_stream: the joint text+image blocks (``transformer_blocks``).
        single_stream: the single-stream blocks (``single_transformer_blocks``).
        granularity, smooth_k, backend, strict: FP8 numerics, as in :func:`accel.fp8_sdpa`.
        min_keys: calls with fewer keys run stock bf16. None: the measured crossover on a GPU
            (``CUDA_MIN_KEYS``: 4096 keys per head, 8192 per token; below, quantizing costs more
            than FP8 saves), as the presets do; 0: every call FP8.
        fused_qk: where our Triton kernel or FlashAttention-3's FP8 kernel serves the attention,
            run the per-head RMSNorm + RoPE + quantization of Q and K as one Triton kernel each,
            text and image tokens read in place.

    A call with an attention mask runs stock (one warning). Under diffusers' context parallelism
    (``_parallel_config``, set by ``enable_parallelism``) attention runs FP8 through diffusers'
    Ulysses / ring machinery (:mod:`accel.parallel`).
    """

    def __init__(
        self,
        double_stream: bool = True,
        single_stream: bool = True,
        granularity: str = "token",
        smooth_k: bool = True,
        backend: str = "auto",
        strict: bool = False,
        min_keys: int | None = 0,
        fused_qk: bool = True,
    ):
        super().__init__()
        self.fused_qk = fused_qk
        numerics = FP8Numerics(granularity, smooth_k, backend, strict, min_keys=min_keys)
        #: FP8 numerics per block kind, None for bf16; accel.apply's plans may change these
        #: between denoising steps.
        self.active: dict[str, FP8Numerics | None] = {
            "double": numerics if double_stream else None,
            "single": numerics if single_stream else None,
        }

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ):
        numerics = self.active["double" if encoder_hidden_states is not None else "single"]
        n_tokens = hidden_states.shape[1] + (0 if encoder_hidden_states is None else encoder_hidden_states.shape[1])
        n_keys = keys_per_call(n_tokens, self._parallel_config)
        if numerics is None or not numerics.serves(n_keys, hidden_states.device):  # short: stock, exactly
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if self._must_run_stock(attention_mask):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

        projections = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        joint = attn.added_kv_proj_dim is not None
        fused = None
        # The fused kernel sees this rank's tokens only: not under context parallelism.
        if (self.fused_qk and self._parallel_config is None
                and _rope_table(image_rotary_emb, n_tokens, attn.head_dim)):
            fused = fused_norm_rope_backend(numerics, projections[0], projections[2].unflatten(-1, (-1, attn.head_dim)),
                                            _norms(attn, joint))
        if fused is not None:
            hidden_states = _fused_attention(attn, projections, joint, numerics, image_rotary_emb, *fused)
        else:
            hidden_states = self._attend_unfused(attn, projections, joint, numerics, image_rotary_emb)
        if encoder_hidden_states is None:
            return hidden_states
        text_len = encoder_hidden_states.shape[1]
        encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
            [text_len, hidden_states.shape[1] - text_len], dim=1
        )
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
        encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
        return hidden_states, encoder_hidden_states

    def _attend_unfused(self, attn, projections, joint: bool, numerics: FP8Numerics, image_rotary_emb):
        """Stock norms, joining and RoPE in bf16, then FP8 attention: (B, S, H*D), text first."""
        query, key, value, encoder_query, encoder_key, encoder_value = projections
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if joint:
            encoder_query = attn.norm_added_q(encoder_query.unflatten(-1, (-1, attn.head_dim)))
            encoder_key = attn.norm_added_k(encoder_key.unflatten(-1, (-1, attn.head_dim)))
            encoder_value = encoder_value.unflatten(-1, (-1, attn.head_dim))
            query = torch.cat([encoder_query, query], dim=1)
            key = torch.cat([encoder_key, key], dim=1)
            value = torch.cat([encoder_value, value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        hidden_states = self._attend("self", query, key, value, numerics, self._parallel_config)
        return hidden_states.flatten(2, 3).to(query.dtype)
