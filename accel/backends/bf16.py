"""The bf16/fp16 path that takes a call no FP8 backend can serve: torch's own SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_QUERY_CHUNK = 1024


def sdpa_high_precision(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA on (B, H, S, D) views in the input dtype; LSE (natural log, fp32) computed in chunks
    of queries when asked for, since SDPA does not return it."""
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, is_causal=is_causal, scale=scale
    )
    if not return_lse:
        return out, None
    Sq, Skv = query.shape[2], key.shape[2]
    k = key.float().transpose(-1, -2)
    lses = []
    for start in range(0, Sq, _QUERY_CHUNK):
        stop = min(start + _QUERY_CHUNK, Sq)
        s = (query[:, :, start:stop].float() @ k) * scale
        if is_causal:
            rows = torch.arange(start, stop, device=s.device)[:, None]
            s = s.masked_fill(torch.arange(Skv, device=s.device)[None, :] > rows, float("-inf"))
        if attn_mask is not None:
            mask = attn_mask[..., start:stop, :] if attn_mask.shape[-2] != 1 else attn_mask
            s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.float()
        lses.append(torch.logsumexp(s, dim=-1))
    return out, torch.cat(lses, dim=-1)
