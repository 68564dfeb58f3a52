"""Triton kernels for FP8 attention and their torch custom-op wrappers.

Nothing here knows about diffusers. Import as ``accel.kernels``; the public entry point is
``accel.fp8_sdpa``. The ops (``torch.ops.accel.*``) are registered on first import of
``accel.kernels.ops`` and only that module needs Triton.
"""

from .numerics import AMAX_EPS, E4M3_MAX, P_SCALE, descale_from_amax, scale_from_amax

__all__ = ["AMAX_EPS", "E4M3_MAX", "P_SCALE", "descale_from_amax", "scale_from_amax"]
