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


#: Best of benchmarks/tune_attention.py for D=64 and D=128 (H200, triton 3.6: benchmarks/NOTES.md).
GPU_CONFIG = AttentionConfig(128, 128, 4, 3)
#: Per-token scales at D = 128: 4 warps lose 40% when the key count is not a multiple of 16
#: (32760: 368 against 625 TFLOP/s at 32768); 8 warps hold 586-620 on both.
GPU_CONFIG_PER_TOKEN = AttentionConfig(128, 128, 8, 3)
#: Triton's CPU interpreter: small tiles, so short test sequences still span several key blocks.
INTERPRETER_CONFIG = AttentionConfig(32, 32, 4, 1)


#: Per-token calls with at most this many keys hand the attention kernel the bf16 query, which it
#: quantizes tile by tile: no separate pass over Q, which is most of the work when Skv << Sq.
#: Longer calls keep the pass: the in-kernel variant's main loop is slower (H200, whole call:
#: +11% at 12x32760 with 512 keys, -8% at 24x8192, -2% at 12x32760; benchmarks/NOTES.md 17).
QUANTIZE_Q_IN_KERNEL_MAX_KEYS = 2048

#: Best per-kernel GPU times over 24x8192, 12x32760 and 40x75600 (H200, benchmarks/NOTES.md):
#: small statistics loads keep many programs' loads in flight without spilling accumulators.
GPU_QUANTIZE_CONFIG = QuantizeConfig(128, 16, 4, 128, 8)
#: Small tiles under the interpreter, so short test sequences span several programs.
INTERPRETER_QUANTIZE_CONFIG = QuantizeConfig(256, 32, 4, 64, 4)


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def default_config(head_dim: int, per_token: bool = False) -> AttentionConfig:
    """Tile configuration for a padded head dim and scale granularity (the reference backend
    reads the key-block size from here too, for the same granularity)."""
    if interpreting():
        return INTERPRETER_CONFIG
    # 8 warps cost per-token calls 20-25% at D = 64 (H200: 354 against 446 TFLOP/s at 24x8192)
    return GPU_CONFIG_PER_TOKEN if per_token and head_dim > 64 else GPU_CONFIG


def default_quantize_config() -> QuantizeConfig:
    return INTERPRETER_QUANTIZE_CONFIG if interpreting() else GPU_QUANTIZE_CONFIG
