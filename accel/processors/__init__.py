"""diffusers attention processors that run attention in FP8 through :func:`accel.fp8_sdpa`."""

from .flux import FluxFP8AttnProcessor
from .wan import WanFP8AttnProcessor

__all__ = ["FluxFP8AttnProcessor", "WanFP8AttnProcessor"]
