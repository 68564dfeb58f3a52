"""Measuring FP8 attention error inside a real generation, per block and step range.

Used by calibration (the generation runs bf16; FP8 is measured on the side) and by the fidelity
comparison (the generation runs FP8; bf16 is computed on the side). Only numbers are kept, so
real sizes fit; the price is one extra attention per measured call.
"""

from __future__ import annotations

import contextlib
import types
from collections import defaultdict
from collections.abc import Callable

import torch

from .integration import _transformers_of, apply, denoising_progress, family_of
from .parallel import context_parallel_config, keys_per_call
from .plan import Plan
from .processors.common import FP8AttentionMixin, FP8Numerics, attend
from .sdpa import fp8_sdpa
from .testing import cosine, rel_l2


class ErrorRecorder:
    """Sums of relative L2 error and cosine per (block, step bin), with the current progress."""

    def __init__(self, bins: int):
        self.bins = bins
        self.progress = 0.0
        self.n_blocks = 0
        self._sums: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])

    def add(self, block: int, err: float, cos: float) -> None:
        entry = self._sums[(block, min(int(self.progress * self.bins), self.bins - 1))]
        entry[0] += err
        entry[1] += cos
        entry[2] += 1

    def means(self) -> dict[tuple[int, int], tuple[float, float]]:
        """(block, bin) -> (mean rel. L2, mean cosine) of the FP8 output against bf16."""
        return {cell: (e / n, c / n) for cell, (e, c, n) in self._sums.items()}


def default_fp8(query, key, value, numerics: FP8Numerics) -> torch.Tensor:
    return fp8_sdpa(query, key, value, layout="bshd", **numerics.sdpa_kwargs())


def _measuring_attend(self, kind, query, key, value, numerics, parallel_config=None):
    reference = attend(self, query, key, value, None, parallel_config)
    n_keys = keys_per_call(key.shape[1], parallel_config)
    if numerics is None or kind != "self" or not numerics.serves(n_keys, key.device):
        return reference
    if context_parallel_config(parallel_config) is not None:
        # this rank holds a shard: only the context-parallel FP8 path sees the whole attention
        fp8 = attend(self, query, key, value, numerics, parallel_config)
    else:
        dtype = query.dtype if query.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        fp8 = self._measure_fp8(*(t.to(dtype) for t in (query, key, value)), numerics).to(reference.dtype)
    self._recorder.add(self.position[0], rel_l2(fp8, reference), cosine(fp8, reference))
    return fp8 if self._forward_fp8 else reference


@contextlib.contextmanager
def measure_attention(pipe, plan: Plan, backend: str, *, forward_fp8: bool, bins: int = 1,
                      fp8_fn: Callable | None = None):
    """Within the block, ``pipe``'s self-attentions follow ``plan`` and each FP8 call is measured
    against bf16 on the same inputs; the generation continues with the FP8 output if
    ``forward_fp8``, else with bf16. Yields the :class:`ErrorRecorder`."""
    recorder = ErrorRecorder(bins)
    hooks = []
    with apply(pipe, plan=plan, backend=backend):
        for transformer in _transformers_of(pipe):
            family = family_of(transformer)
            for proc in transformer.attn_processors.values():
                if isinstance(proc, FP8AttentionMixin) and hasattr(proc, "position"):
                    proc._attend = types.MethodType(_measuring_attend, proc)  # this instance only
                    proc.fused_qk = False  # measured calls must go through _attend
                    proc._recorder, proc._forward_fp8 = recorder, forward_fp8
                    proc._measure_fp8 = fp8_fn or default_fp8
                    recorder.n_blocks = proc.position[1]

            def clock(module, args, kwargs, scale=family.timestep_scale):
                progress = denoising_progress(args, kwargs, scale)
                if progress is not None:
                    recorder.progress = progress

            hooks.append(transformer.register_forward_pre_hook(clock, with_kwargs=True))
        try:
            yield recorder
        finally:
            for hook in hooks:
                hook.remove()
