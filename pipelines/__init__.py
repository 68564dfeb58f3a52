"""Model-family glue for diffusers pipelines (Wan, Flux); imports as ``accel.pipelines``."""
