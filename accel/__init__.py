"""accel: FP8 attention for diffusion transformers in Hugging Face diffusers, on NVIDIA Hopper GPUs.

Start with :func:`apply` on a pipeline, the processor classes for diffusers'
``set_attn_processor``, or :func:`fp8_sdpa`, the FP8 attention op every other part builds on.
"""

import importlib

from .plan import PRESETS, FP8Config, Plan, PlanError, Rule
from .sdpa import fp8_sdpa

__version__ = "0.1.0"
__all__ = ["AccelHandle", "CalibrationReport", "FidelityReport", "FP8Config", "FluxFP8AttnProcessor", "PRESETS", "Plan", "PlanError", "Rule",
           "WanFP8AttnProcessor", "apply", "calibrate", "compare", "fp8_sdpa", "__version__"]


def __getattr__(name: str):
    # The diffusers-facing parts import diffusers (slow): load them on first use.
    if name in ("WanFP8AttnProcessor", "FluxFP8AttnProcessor"):
        return getattr(importlib.import_module("accel.processors"), name)
    if name in ("apply", "AccelHandle"):
        return getattr(importlib.import_module("accel.integration"), name)
    if name in ("compare", "FidelityReport"):
        return getattr(importlib.import_module("accel.fidelity"), name)
    if name in ("calibrate", "CalibrationReport"):
        return getattr(importlib.import_module("accel.calibration"), name)
    raise AttributeError(f"module 'accel' has no attribute {name!r}")
