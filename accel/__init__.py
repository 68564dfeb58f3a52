"""accel: FP8 attention for diffusion transformers in Hugging Face diffusers, on NVIDIA Hopper GPUs.

Start with :func:`fp8_sdpa`, the FP8 attention op every other part builds on.
"""

from .sdpa import fp8_sdpa

__version__ = "0.1.0"
__all__ = ["fp8_sdpa", "__version__"]
