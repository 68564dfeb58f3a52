"""Inputs that look like diffusion-transformer activations, and the exact reference to judge against.

Gaussian inputs alone hide the failures that ruin video quality, so the kinds here add what real
Q/K/V show (shared DESIGN.md, "Numerics"): a large per-channel offset in K, a few huge outlier
channels in Q and K, and sharply peaked attention rows. Used by the tests and the benchmarks.
"""

from __future__ import annotations

import math

import torch

from .kernels.numerics import E4M3_MAX

INPUT_KINDS = ("gaussian", "offset_k", "outliers", "peaked", "activation")


def activation_like_qkv(
    batch: int,
    heads: int,
    seq_q: int,
    seq_kv: int,
    head_dim: int,
    kind: str = "activation",
    *,
    layout: str = "bhsd",
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (query, key, value) of one :data:`INPUT_KINDS`, in ``layout`` and ``dtype``.

    * ``gaussian``: N(0, 1) everywhere.
    * ``offset_k``: K gets a per-(head, channel) offset of 4-8 sigma (what smooth_k removes).
    * ``outliers``: 4 channels of Q and 4 of K carry 20-sigma values (per-head scales waste range).
    * ``peaked``: each query leans towards one key, so softmax rows are sharply peaked.
    * ``activation``: all of the above together.
    """
    if kind not in INPUT_KINDS:
        raise ValueError(f"kind must be one of {INPUT_KINDS}, got {kind!r}")
    g = generator

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32)

    q = randn(batch, heads, seq_q, head_dim)
    k = randn(batch, heads, seq_kv, head_dim)
    v = randn(batch, heads, seq_kv, head_dim)
    if kind in ("peaked", "activation"):
        targets = torch.randint(0, seq_kv, (seq_q,), generator=g, device=device)
        # |q.k_target| * scale ~ 3 * sqrt(head_dim): the target key dominates the row
        q = 0.5 * q + 3.0 * k[:, :, targets]
    if kind in ("outliers", "activation"):
        # Disjoint channels for Q and K: shared 20-sigma channels would make one channel's
        # product (~36 logits) decide every row, a one-hot softmax no trained model has.
        channels = torch.randperm(head_dim, generator=g, device=device)[:8]
        q[..., channels[:4]] *= 20.0
        k[..., channels[4:]] *= 20.0
    if kind in ("offset_k", "activation"):
        magnitude = 4.0 + 4.0 * torch.rand(batch, heads, 1, head_dim, generator=g, device=device)
        sign = torch.where(torch.rand(batch, heads, 1, head_dim, generator=g, device=device) < 0.5, -1.0, 1.0)
        k = k + magnitude * sign
    tensors = [t.to(dtype) for t in (q, k, v)]
    if layout == "bshd":
        tensors = [t.transpose(1, 2).contiguous() for t in tensors]
    elif layout != "bhsd":
        raise ValueError(f"layout must be 'bhsd' or 'bshd', got {layout!r}")
    return tensors[0], tensors[1], tensors[2]


def exact_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    layout: str = "bhsd",
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp64 attention on the unquantized inputs, one head at a time (bounded memory).

    ``rows`` restricts the query rows computed (a sample, for long sequences). Returns (out, lse)
    as (B, H, len(rows) or Sq, D) and (B, H, len(rows) or Sq), fp64, always bhsd.
    """
    q, k, v = (t.transpose(1, 2) if layout == "bshd" else t for t in (query, key, value))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if rows is None:
        rows = torch.arange(q.shape[2], device=q.device)
    B, H = q.shape[:2]
    out = torch.empty(B, H, len(rows), v.shape[-1], dtype=torch.float64, device=q.device)
    lse = torch.empty(B, H, len(rows), dtype=torch.float64, device=q.device)
    for b in range(B):
        for h in range(H):
            s = (q[b, h, rows].double() @ k[b, h].double().T) * scale
            if is_causal:
                s = s.masked_fill(torch.arange(k.shape[2], device=s.device)[None, :] > rows[:, None], float("-inf"))
            lse[b, h] = torch.logsumexp(s, dim=-1)
            out[b, h] = torch.softmax(s, dim=-1) @ v[b, h].double()
    return out, lse


def rel_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in fp64 (NaN if x holds NaN)."""
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm()).item()


def cosine(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Cosine similarity of the flattened tensors, fp64."""
    return torch.nn.functional.cosine_similarity(x.double().flatten(), ref.double().flatten(), dim=0).item()


def group_amax(x: torch.Tensor, group: int) -> torch.Tensor:
    """Each token's amax over the group of ``group`` tokens it belongs to, groups counted from the
    last token (as the Gluon kernel's right-aligned key blocks see them): (B, H, S) of a (B, H, S, D)
    tensor."""
    amax = x.abs().amax(dim=-1)
    pad = -amax.shape[-1] % group
    gmax = torch.nn.functional.pad(amax, (pad, 0)).unflatten(-1, (-1, group)).amax(dim=-1)
    return gmax.repeat_interleave(group, dim=-1)[..., pad:]


def grouped_keys(k: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K (B, H, S, D) smoothed (its mean over keys off: softmax ignores it) and quantized to e4m3
    with one scale per group of ``group`` keys counted from the last key (the Gluon kernel's
    key-group probe, NOTES 49): (K8, descales (B, H, S), each key's its group's)."""
    ks = k.float() - k.float().mean(dim=2, keepdim=True)
    descale = (group_amax(ks, group).clamp_min(1e-12) / E4M3_MAX).contiguous()
    return (ks / descale.unsqueeze(-1)).to(torch.float8_e4m3fn), descale
