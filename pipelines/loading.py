"""Loading a pipeline: the embedded tiny default, a local diffusers folder or a hub id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging

from .tiny import tiny_flux_pipeline, tiny_wan_pipeline

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: Without a GPU, refuse checkpoints larger than this rather than grind for hours on the CPU.
CPU_MAX_CHECKPOINT_GB = 8.0


class LoadError(RuntimeError):
    """A pipeline could not be loaded; the message says what to do."""


@dataclass
class Loaded:
    pipe: object
    model: str  # what was loaded: a path, a hub id, or "tiny-random"
    random_weights: bool
    device: str
    dtype: torch.dtype


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _family(pipe) -> str:
    name = type(pipe).__name__
    return "video" if name.startswith("Wan") else "image" if name.startswith("Flux") else name


def _checkpoint_gb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors")) / 1e9


def load_pipeline(kind: str, model: str | None, dtype: str = "bf16", image_to_video: bool = False,
                  cpu_offload: bool = False) -> Loaded:
    """``kind`` is "video" (Wan) or "image" (Flux). Weights load as safetensors only; no remote code."""
    device = pick_device()
    torch_dtype = DTYPES[dtype]
    if model is None:
        pipe = tiny_wan_pipeline(image_to_video=image_to_video) if kind == "video" else tiny_flux_pipeline()
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # casting a fresh model warns about fp32-kept modules
        try:
            pipe.to(device=device, dtype=torch_dtype)
        finally:
            diffusers_logging.set_verbosity(verbosity)
        return Loaded(pipe, "tiny-random", True, device, torch_dtype)

    from diffusers import DiffusionPipeline

    local = Path(model).expanduser()
    if local.exists():
        if not (local / "model_index.json").exists():
            raise LoadError(f"{local} is not a diffusers pipeline folder (no model_index.json)")
        if device == "cpu" and _checkpoint_gb(local) > CPU_MAX_CHECKPOINT_GB:
            raise LoadError(f"{local} holds {_checkpoint_gb(local):.0f} GB of weights and no GPU is visible: "
                            "too large to run on the CPU. Run on a machine with a CUDA GPU.")
    try:
        pipe = DiffusionPipeline.from_pretrained(str(local) if local.exists() else model,
                                                 dtype=torch_dtype, use_safetensors=True)
    except Exception as exc:  # hub and filesystem errors come in many classes
        text = str(exc)
        if not local.exists() and any(s in text for s in ("resolve", "connect", "offline", "Connection",
                                                           "Max retries", "timed out", "couldn't", "Cannot")):
            raise LoadError(
                f"could not download {model!r}: no network (or the hub is unreachable). Download it on a "
                f"connected machine (hf download {model} --local-dir DIR), copy DIR here and pass --model DIR."
            ) from exc
        raise LoadError(f"could not load {model!r}: {text.splitlines()[0] if text else type(exc).__name__}") from exc
    if _family(pipe) != kind:
        raise LoadError(f"{model!r} is a {type(pipe).__name__}; `accel generate {kind}` needs "
                        f"{'a Wan' if kind == 'video' else 'a FLUX'} pipeline")
    if image_to_video != ("ImageToVideo" in type(pipe).__name__):
        raise LoadError(f"{model!r} is a {type(pipe).__name__}: "
                        + ("--image needs an image-to-video checkpoint (e.g. Wan-AI/Wan2.1-I2V-14B-480P-Diffusers)"
                           if image_to_video else "it needs --image (an image-to-video checkpoint)"))
    if cpu_offload and device == "cuda":
        pipe.enable_model_cpu_offload()  # accelerate moves each component to the GPU when it runs
    else:
        pipe.to(device)
    return Loaded(pipe, model, False, device, torch_dtype)
