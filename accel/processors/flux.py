"""FLUX attention in FP8: double-stream blocks (text prepended, RoPE over the joint sequence) and
single-stream blocks, each switchable."""

from __future__ import annotations

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor, _get_qkv_projections

from ..parallel import keys_per_call
from .common import FP8AttentionMixin, FP8Numerics


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
            (``CUDA_MIN_KEYS``, 8192: below it the quantization passes cost more than FP8
            saves), as the presets do; 0: every call FP8.

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
    ):
        super().__init__()
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
        n_keys = hidden_states.shape[1] + (0 if encoder_hidden_states is None else encoder_hidden_states.shape[1])
        n_keys = keys_per_call(n_keys, self._parallel_config)
        if numerics is None or not numerics.serves(n_keys, hidden_states.device):  # short: stock, exactly
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if self._must_run_stock(attention_mask):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

        query, key, value, encoder_query, encoder_key, encoder_value = _get_qkv_projections(
            attn, hidden_states, encoder_hidden_states
        )
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None:
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
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return hidden_states
        text_len = encoder_hidden_states.shape[1]
        encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
            [text_len, hidden_states.shape[1] - text_len], dim=1
        )
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
        encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
        return hidden_states, encoder_hidden_states
