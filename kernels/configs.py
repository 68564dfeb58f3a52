"""Tile configurations of the attention kernel, in one small table (no Triton import).

The reference backend reads the key-block size from here too: the online softmax's running max
depends on it, and the reference mirrors the kernel block by block.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class AttentionConfig(NamedTuple):
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


class QuantizeConfig(NamedTuple):
    """Tiles of the quantization passes (kernels/quantize.py)."""

    stats_tokens: int  # tokens per program of the statistics pass
    stats_block: int  # tokens per load of the statistics pass
    stats_warps: int
    cast_block: int  # tokens per program of the cast pass
    cast_warps: int
    finalize_chunks: int = 32  # statistics rows per load of the finalize pass (one program per head)
    finalize_warps: int = 4
    #: Calls whose tensors have at most this many tokens skip the two statistics launches: each
    #: cast program computes its head's statistics itself (see quantize.quantize_many).
    one_launch_tokens: int = 0


#: Best of benchmarks/tune_attention.py for per-head scales at D = 128 (H200, triton 3.6:
#: benchmarks/NOTES.md 9, 26): two CTAs of one warpgroup per SM.
GPU_CONFIG = AttentionConfig(128, 128, 4, 3)
#: Per-token scales up to D = 128, and any head dim up to 64: 64-row tiles (one warpgroup, 64
#: rows) beat 128 rows on 8 warps by 13-14% per token at D = 128 and 128 rows on 4 warps by 13%
#: per head at D = 64 (H200: NOTES 26). Same key blocks, so the same results bit for bit.
GPU_CONFIG_64_ROWS = AttentionConfig(64, 128, 4, 3)
#: Per-token calls that quantize Q inside the kernel (short key counts) at D = 128, and per-token
#: head dims above 128 (not measured): the tiles run 3 measured per-token calls with. On the
#: in-kernel-Q path 64-row tiles measured the same on the whole 12x32760 call against 512 keys
#: (NOTES 27) and keep 1 KB of stack in that variant's loop on triton 3.6.
GPU_CONFIG_8_WARPS = AttentionConfig(128, 128, 8, 3)
#: Triton's CPU interpreter: small tiles, so short test sequences still span several key blocks.
INTERPRETER_CONFIG = AttentionConfig(32, 32, 4, 1)


#: Calls with at most this many keys hand the attention kernel the bf16 query, which it quantizes
#: tile by tile, one scale per row: no passes over Q of their own, most of the work when Skv << Sq.
#: The Triton kernel does so per token, the Gluon kernel at both granularities. Longer calls keep
#: the passes: the in-kernel variants' main loops are slower (H200: Triton kernel, whole call,
#: +11% at 12x32760 with 512 keys, -8% at 24x8192, -2% at 12x32760, NOTES 17; Gluon kernel per
#: head, kernel plus Q's passes against the kernel quantizing Q, 1.3-2.2x at 512-2048 keys,
#: 0.95-1.0x from 8192, where a per-row scale costs its main loop 3-6%, NOTES 43).
QUANTIZE_Q_IN_KERNEL_MAX_KEYS = 2048

#: Best per-kernel GPU times over 24x8192, 12x32760 and 40x75600 (H200, benchmarks/NOTES.md 10,
#: 41): small statistics loads keep many programs' loads in flight without spilling accumulators;
#: the finalize pass (one program per head) loads 128 chunks' statistics at once: it is a serial
#: loop over ~250-600 chunks on 12-120 programs, latency-bound with 32 (0.053 -> 0.017 ms at
#: 12x32760); 64-token casts beat 128 per token (1.61 against 1.72 ms at 40x75600).
#: One launch up to 512 tokens (Wan's text keys, its 257 image keys): a short call is host-bound
#: (NOTES 38, 42), and two fewer launches spare ~50-90 us of its host time; every 64-token cast
#: tile then reads its whole head from L2 (8x the bytes at 512 tokens), not measured on a GPU yet.
GPU_QUANTIZE_CONFIG = QuantizeConfig(128, 16, 4, 64, 4, 128, 4, one_launch_tokens=512)
#: Small tiles under the interpreter, so short test sequences span several programs; tests up to
#: 128 tokens take the one-launch path, longer ones the three passes.
INTERPRETER_QUANTIZE_CONFIG = QuantizeConfig(256, 32, 4, 64, 4, one_launch_tokens=128)


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def default_config(head_dim: int, per_token: bool = False, query_in_kernel: bool = False) -> AttentionConfig:
    """Tile configuration for a padded head dim, scale granularity and query path (the reference
    backend reads the key-block size from here too: 128 on every GPU path)."""
    if interpreting():
        return INTERPRETER_CONFIG
    if query_in_kernel:  # the tiles measured before 64-row tiles (8 warps lose 20% at D = 64)
        return GPU_CONFIG_8_WARPS if head_dim > 64 else GPU_CONFIG
    if head_dim <= 64 or (per_token and head_dim <= 128):
        return GPU_CONFIG_64_ROWS
    return GPU_CONFIG_8_WARPS if per_token else GPU_CONFIG


def default_quantize_config() -> QuantizeConfig:
    return INTERPRETER_QUANTIZE_CONFIG if interpreting() else GPU_QUANTIZE_CONFIG
