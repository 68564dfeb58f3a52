"""``accel.apply``: put FP8 attention processors on a diffusers pipeline or transformer, and take
them off again."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .backends import BACKEND_NAMES


@dataclass(frozen=True)
class Preset:
    """An interim fixed rule (until per-step plans and calibration land): which blocks run FP8 and
    with which scales. ``edge_fraction`` of the blocks at each end of the stack keep bf16."""

    granularity: str
    edge_fraction: float
    description: str


PRESETS: dict[str, Preset | None] = {
    "off": None,
    "speed": Preset("head", 0.0, "every self-attention in FP8, one scale per head"),
    "balanced": Preset("token", 0.05, "per-token scales + smooth_k; first/last ~5% of blocks bf16"),
    "quality": Preset("token", 0.10, "per-token scales + smooth_k; first/last ~10% of blocks bf16"),
}

_OWNER_ATTR = "_accel_original_processors"


def _families():
    """Supported transformer classes -> (stock processor class, FP8 processor factory, block key)."""
    from diffusers import FluxTransformer2DModel, WanTransformer3DModel
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    from .processors import FluxFP8AttnProcessor, WanFP8AttnProcessor

    return {
        WanTransformer3DModel: (WanAttnProcessor, WanFP8AttnProcessor, _wan_block),
        FluxTransformer2DModel: (FluxAttnProcessor, FluxFP8AttnProcessor, _flux_block),
    }


def _wan_block(name: str, n_blocks: dict) -> int | None:
    """Position in the block stack of a Wan self-attention processor, None for other modules."""
    m = re.fullmatch(r"blocks\.(\d+)\.attn1\.processor", name)
    return int(m.group(1)) if m else None


def _flux_block(name: str, n_blocks: dict) -> int | None:
    """Position of a Flux processor in the stack: double-stream blocks, then single-stream ones."""
    m = re.fullmatch(r"(single_)?transformer_blocks\.(\d+)\.attn\.processor", name)
    if not m:
        return None
    return int(m.group(2)) + (n_blocks["transformer_blocks"] if m.group(1) else 0)


class AccelHandle:
    """What :func:`apply` did; ``remove()`` (or leaving a ``with`` block) restores exactly the
    processors that were there before."""

    def __init__(self, transformers: list[torch.nn.Module]):
        self.transformers = transformers

    def remove(self) -> None:
        for transformer in self.transformers:
            original = getattr(transformer, _OWNER_ATTR, None)
            if original is not None:
                transformer.set_attn_processor(dict(original))
                delattr(transformer, _OWNER_ATTR)

    def __enter__(self) -> AccelHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _transformers_of(target) -> list[torch.nn.Module]:
    if isinstance(target, torch.nn.Module) and hasattr(target, "attn_processors"):
        return [target]
    found = [getattr(target, name, None) for name in ("transformer", "transformer_2")]
    found = [t for t in found if t is not None]
    if not found:
        raise TypeError(
            f"accel.apply takes a diffusers pipeline (with .transformer) or a transformer model, "
            f"got {type(target).__name__}"
        )
    return found


def apply(pipe_or_transformer, preset: str = "balanced", backend: str = "auto") -> AccelHandle:
    """Install FP8 attention processors on a pipeline's transformer(s) (Wan 2.2's ``transformer``
    and ``transformer_2`` both) or on one transformer.

    Args:
        pipe_or_transformer: a diffusers pipeline or a ``WanTransformer3DModel`` /
            ``FluxTransformer2DModel``.
        preset: one of :data:`PRESETS` (``off``, ``speed``, ``balanced``, ``quality``).
        backend: the FP8 backend, as in :func:`accel.fp8_sdpa`.

    Only stock processors are replaced (IP-adapter and other custom processors stay); each new
    processor keeps the replaced one's ``_attention_backend`` and ``_parallel_config``. Applying
    again replaces, it does not stack. Returns a handle whose ``remove()`` restores the originals.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
    transformers = _transformers_of(pipe_or_transformer)
    families = _families()
    for transformer in transformers:
        family = next((f for cls, f in families.items() if isinstance(transformer, cls)), None)
        if family is None:
            supported = ", ".join(cls.__name__ for cls in families)
            raise TypeError(f"accel.apply supports {supported}; got {type(transformer).__name__}")
        _install(transformer, *family, PRESETS[preset], backend)
    return AccelHandle(transformers)


def _install(transformer, stock_cls, fp8_cls, block_of, preset: Preset | None, backend: str) -> None:
    original = getattr(transformer, _OWNER_ATTR, None) or dict(transformer.attn_processors)
    n_blocks = {name: len(getattr(transformer, name)) for name in ("blocks", "transformer_blocks",
                                                                   "single_transformer_blocks")
                if hasattr(transformer, name)}
    total = sum(n_blocks.values())
    edge = math.ceil(preset.edge_fraction * total) if preset and preset.edge_fraction > 0 else 0
    processors = {}
    for name, proc in original.items():
        block = block_of(name, n_blocks)
        replace = (preset is not None and type(proc) in (stock_cls, fp8_cls)
                   and block is not None and edge <= block < total - edge)
        if replace:
            new = fp8_cls(granularity=preset.granularity, backend=backend)
            new._attention_backend = proc._attention_backend
            new._parallel_config = proc._parallel_config
            processors[name] = new
        else:
            processors[name] = proc
    transformer.set_attn_processor(processors)
    setattr(transformer, _OWNER_ATTR, original)
