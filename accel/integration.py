"""``accel.apply``: put FP8 attention processors on a diffusers pipeline or transformer, following
a plan (a preset or a JSON file), and take them off again."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .backends import BACKEND_NAMES
from .plan import Plan, Schedule, resolve_plan
from .processors.common import FP8Numerics


@dataclass(frozen=True)
class _Family:
    stock: type
    fp8: type
    #: processor name -> (block position, {processor slot: plan attention kind}) or None
    locate: object
    #: the transformer's timestep at the first denoising step (Wan: 1000; Flux gets t / 1000)
    timestep_scale: float


def _families() -> dict[type, _Family]:
    from diffusers import FluxTransformer2DModel, WanTransformer3DModel
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    from .processors import FluxFP8AttnProcessor, WanFP8AttnProcessor

    return {
        WanTransformer3DModel: _Family(WanAttnProcessor, WanFP8AttnProcessor, _locate_wan, 1000.0),
        FluxTransformer2DModel: _Family(FluxAttnProcessor, FluxFP8AttnProcessor, _locate_flux, 1.0),
    }


def family_of(transformer) -> _Family:
    """The supported family of ``transformer``, or a TypeError listing the supported classes."""
    families = _families()
    for cls, family in families.items():
        if isinstance(transformer, cls):
            return family
    supported = ", ".join(cls.__name__ for cls in families)
    raise TypeError(f"accel.apply supports {supported}; got {type(transformer).__name__}")


def _locate_wan(name: str, transformer):
    m = re.fullmatch(r"blocks\.(\d+)\.attn([12])\.processor", name)
    if not m:
        return None
    slots = {"self": "self"} if m.group(2) == "1" else {"cross": "cross", "image": "image"}
    return int(m.group(1)), len(transformer.blocks), slots


def _locate_flux(name: str, transformer):
    m = re.fullmatch(r"(single_)?transformer_blocks\.(\d+)\.attn\.processor", name)
    if not m:
        return None
    n_double = len(transformer.transformer_blocks)
    total = n_double + len(transformer.single_transformer_blocks)
    if m.group(1):
        return n_double + int(m.group(2)), total, {"single": "self"}
    return int(m.group(2)), total, {"double": "self"}


class _StepClock:
    """Forward pre-hook: reads the transformer's timestep, switches each processor's numerics when
    the plan says so. Driven by the timestep, not a call counter, so it holds under classifier-free
    guidance (two forwards per step), with two experts (Wan 2.2) and for any scheduler."""

    def __init__(self, scale: float, entries: list[tuple[object, dict[str, Schedule]]], backend: str):
        self.scale = scale
        self.entries = entries
        self.backend = backend

    def __call__(self, module, args, kwargs):
        if torch.compiler.is_compiling():
            raise RuntimeError(
                "accel: a plan with step ranges (the 'quality' preset, calibrated plans) switches "
                "numerics between steps from the timestep's value, which a whole-model "
                "torch.compile cannot trace. Compile per block instead: "
                "transformer.compile_repeated_blocks(fullgraph=True), or use a plan without steps."
            )
        progress = denoising_progress(args, kwargs, self.scale)
        if progress is None:
            return
        for processor, schedules in self.entries:
            for slot, schedule in schedules.items():
                processor.active[slot] = _numerics(schedule.at(progress), self.backend)


def denoising_progress(args, kwargs, scale: float) -> float | None:
    """0 at the first denoising step (pure noise), 1 at the last, from a transformer call's timestep."""
    timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    if timestep is None:
        return None
    t = float(torch.as_tensor(timestep).flatten()[0])
    return min(max(1.0 - t / scale, 0.0), 1.0)


def _numerics(config, backend: str) -> FP8Numerics | None:
    if config is None:
        return None
    return FP8Numerics(config.granularity, config.smooth_k, backend, smooth_v=config.smooth_v,
                       min_keys=config.min_keys, smooth_q=config.smooth_q, hadamard=config.hadamard)


class AccelHandle:
    """What :func:`apply` did; ``remove()`` (or leaving a ``with`` block) restores exactly the
    processors that were there before."""

    def __init__(self, transformers: list[torch.nn.Module], plan: Plan):
        self.transformers = transformers
        self.plan = plan

    def remove(self) -> None:
        for transformer in self.transformers:
            _uninstall(transformer)

    def fp8_modules(self) -> list[int]:
        """Per transformer, how many attention modules got an FP8 processor (the others keep
        theirs: bf16 throughout the plan, or not stock); 0 once removed."""
        from .processors.common import FP8AttentionMixin

        return [sum(isinstance(p, FP8AttentionMixin) for p in t.attn_processors.values()) for t in self.transformers]

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} of {len(t.attn_processors)}" for n, t in zip(self.fp8_modules(), self.transformers))
        return f"AccelHandle(plan={self.plan.name or 'custom'!r}, FP8 attention modules per transformer: {counts})"

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


def apply(
    pipe_or_transformer,
    preset: str = "balanced",
    plan: Plan | str | Path | None = None,
    backend: str = "auto",
) -> AccelHandle:
    """Install FP8 attention processors on a pipeline's transformer(s) (Wan 2.2's ``transformer``
    and ``transformer_2`` both) or on one transformer.

    Args:
        pipe_or_transformer: a diffusers pipeline or a ``WanTransformer3DModel`` /
            ``FluxTransformer2DModel``.
        preset: a named plan from :data:`accel.PRESETS` (``off``, ``speed``, ``balanced``, ``quality``).
        plan: a :class:`accel.Plan` or the path of a plan JSON file; overrides ``preset``.
        backend: the FP8 backend, as in :func:`accel.fp8_sdpa`.

    Only stock processors are replaced (IP-adapter and other custom processors stay); each new
    processor keeps the replaced one's ``_attention_backend`` and ``_parallel_config``. A plan
    with step ranges adds a forward pre-hook that reads the timestep. Applying again replaces, it
    does not stack. Returns a handle whose ``remove()`` restores the originals.
    """
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
    resolved = resolve_plan(preset, plan)
    transformers = _transformers_of(pipe_or_transformer)
    families = [family_of(t) for t in transformers]  # all checked before any is changed
    for transformer, family in zip(transformers, families):
        _install(transformer, family, resolved, backend)
    return AccelHandle(transformers, resolved)


_STATE = "_accel_state"  # (original processors, pre-hook handle or None) on an applied transformer


def _uninstall(transformer) -> None:
    state = getattr(transformer, _STATE, None)
    if state is None:
        return
    original, hook = state
    if hook is not None:
        hook.remove()
    transformer.set_attn_processor(dict(original))
    delattr(transformer, _STATE)


def _install(transformer, family: _Family, plan: Plan, backend: str) -> None:
    _uninstall(transformer)  # applying again replaces: start from the originals
    original = dict(transformer.attn_processors)
    processors, timed = {}, []
    for name, proc in original.items():
        where = family.locate(name, transformer)
        if where is None or type(proc) is not family.stock:
            processors[name] = proc  # custom processors (IP-adapter...) and other modules stay
            continue
        block, n_blocks, slots = where
        schedules = {slot: plan.schedule(kind, block, n_blocks) for slot, kind in slots.items()}
        if all(s.pieces == ((0.0, 1.0, None),) for s in schedules.values()):
            processors[name] = proc  # bf16 throughout: keep the stock processor
            continue
        new = family.fp8()
        new.active = {slot: None for slot in new.active}
        for slot, schedule in schedules.items():
            new.active[slot] = _numerics(schedule.at(0.0), backend)
        new._attention_backend = proc._attention_backend
        new._parallel_config = proc._parallel_config
        new.position = (block, n_blocks)  # where the plan placed it; read by measurements
        processors[name] = new
        dependent = {slot: s for slot, s in schedules.items() if s.step_dependent}
        if dependent:
            timed.append((new, dependent))
    transformer.set_attn_processor(processors)
    hook = None
    if timed:
        hook = transformer.register_forward_pre_hook(_StepClock(family.timestep_scale, timed, backend),
                                                     with_kwargs=True)
    setattr(transformer, _STATE, (original, hook))
