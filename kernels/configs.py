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


#: Best of benchmarks/tune_attention.py for D=64 and D=128 (H200, triton 3.6: benchmarks/NOTES.md).
GPU_CONFIG = AttentionConfig(128, 128, 4, 3)
#: Triton's CPU interpreter: small tiles, so short test sequences still span several key blocks.
INTERPRETER_CONFIG = AttentionConfig(32, 32, 4, 1)


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def default_config(head_dim: int) -> AttentionConfig:
    """Tile configuration for a padded head dim."""
    return INTERPRETER_CONFIG if interpreting() else GPU_CONFIG
