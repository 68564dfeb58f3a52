"""The FP8 numerics contract shared by the Triton kernels and the pure-torch reference.

Both sides import these names so that they cannot drift apart (see shared DESIGN.md, "Numerics").
"""

from __future__ import annotations

import torch

#: Largest finite float8_e4m3fn value.
E4M3_MAX = 448.0
#: An amax at or below this is treated as an all-zero tensor: scale and descale are 1.
AMAX_EPS = 1e-12
#: P (in [0, 1]) is multiplied by this power of two before its e4m3 cast, so that small
#: probabilities land in e4m3's normal range instead of its coarse subnormals; undone exactly
#: in the output normalisation. FlashAttention-3 uses the same value.
P_SCALE = 256.0


#: Keys per chunk of :func:`mma_key_order`.
MMA_KEY_CHUNK = 32
#: Keys per block of the Gluon kernel; its V^T rows hold whole blocks (:func:`mma_row_length`).
MMA_KEY_BLOCK = 128


def mma_row_length(tokens: int) -> int:
    """Row length of V^T in the Gluon kernel's layout: ``tokens`` rounded up to whole key blocks,
    keys right-aligned (the first ``mma_row_length(t) - t`` columns are zero)."""
    return -(-tokens // MMA_KEY_BLOCK) * MMA_KEY_BLOCK


def mma_key_order(length: int) -> torch.Tensor:
    """The key order of V^T for the Gluon kernel: column c of each 32-key chunk holds key
    pi(c) of that chunk (int64, ``length`` a multiple of 32), where pi reads c's bits
    (c4, c3, c2, c1, c0) as (c4, c1, c3, c2, c0). It is the order in which an fp8 wgmma's
    register A operand holds the columns of a score tile's accumulator, so P is used without
    moving data between threads (kernels/gluon_attention.py, ``_p_operand``)."""
    if length % MMA_KEY_CHUNK:
        raise ValueError(f"length must be a multiple of {MMA_KEY_CHUNK}, got {length}")
    c = torch.arange(MMA_KEY_CHUNK)
    chunk = (c & 16) | ((c & 2) << 2) | ((c & 12) >> 1) | (c & 1)
    return (torch.arange(0, length, MMA_KEY_CHUNK)[:, None] + chunk[None, :]).reshape(-1)


def value_granularity(granularity: str) -> str:
    """V's scales for a Q/K granularity: per-token Q/K pair with per-channel V (exact to undo)."""
    return "channel" if granularity == "token" else "head"


def scale_from_amax(amax: torch.Tensor) -> torch.Tensor:
    """Quantization scale ``448 / amax`` in fp32 (1 where amax is ~0)."""
    amax = amax.float()
    # In float64 then rounded once: torch's fp32 scalar/tensor division on the CPU is not
    # correctly rounded, the kernels' (div_rn) is, and both sides must agree bit for bit.
    scale = (E4M3_MAX / amax.double()).float()
    return torch.where(amax > AMAX_EPS, scale, torch.ones_like(amax))


def descale_from_amax(amax: torch.Tensor) -> torch.Tensor:
    """Dequantization factor ``amax / 448`` in fp32 (1 where amax is ~0; NaN where amax is not finite).

    A non-finite amax means the input held Inf or NaN: the NaN descale makes every output that
    depends on it NaN instead of silently finite garbage.
    """
    amax = amax.float()
    descale = torch.where(amax > AMAX_EPS, (amax.double() / E4M3_MAX).float(), torch.ones_like(amax))
    return torch.where(torch.isfinite(amax), descale, torch.full_like(amax, float("nan")))


def rows_dot(x: torch.Tensor, vec: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """fp32 (B, H, S) dot products of x's rows (B, H, S, D) with vec (B, H, D), a chunk of rows
    at a time so that no fp32 copy of all of x exists."""
    parts = [x[:, :, i:i + chunk].float() @ vec.unsqueeze(-1) for i in range(0, x.shape[2], chunk)]
    return torch.cat(parts, dim=2).squeeze(-1)


def key_bias(k: torch.Tensor, q_mean: torch.Tensor) -> torch.Tensor:
    """smooth-Q's per-key correction, fp32 (B, H, Skv), in unscaled score units.

    With Q' = Q - mean(Q) quantized, the scores lose mean(Q) . k_j, which differs per key (unlike
    smooth-K's per-row shift): it is added back to every score of key j. It is taken against
    smooth-K's centred keys (k_j - mean(K)), which only shifts each row by a constant and keeps
    the LSE correction of smooth-K valid with or without smooth-K."""
    k_mean = k.mean(dim=2, dtype=torch.float32)
    return rows_dot(k, q_mean) - (k_mean * q_mean).sum(-1, keepdim=True)


def hadamard_matrix(head_dim: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sylvester's Hadamard matrix of a power-of-two order, entries +-1 (exact in any float
    dtype): symmetric, and H @ H = head_dim * I."""
    if head_dim < 1 or head_dim & (head_dim - 1):
        raise ValueError(f"a Hadamard rotation needs a power-of-two head_dim, got {head_dim}")
    h = torch.ones(1, 1)
    while h.shape[0] < head_dim:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h.to(device=device, dtype=dtype)
