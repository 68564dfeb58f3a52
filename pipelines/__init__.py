"""Model-family glue for diffusers pipelines (Wan, Flux): the built-in tiny pipelines, loading,
video/image export and the generation run behind ``accel generate``. Imports as ``accel.pipelines``."""

from .tiny import tiny_flux_pipeline, tiny_wan_pipeline

__all__ = ["tiny_flux_pipeline", "tiny_wan_pipeline"]
