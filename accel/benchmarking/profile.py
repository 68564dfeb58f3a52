"""Where a forward's time goes: attention, quantization, GEMMs and the rest, from torch.profiler.

On a GPU each CUDA kernel's own time is put in a category by its name (our Triton kernels by
their function names, FlashAttention / cuDNN / torch SDPA kernels, cuBLAS and CUTLASS GEMMs);
the forward's wall time minus the kernels' sum is time the GPU sat idle (host overhead, syncs).
On the CPU the same is done with each aten op's own CPU time (to test the plumbing: the split
of a CPU run says little about a GPU one).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

#: (category, lower-case name fragments), checked in order: the first match wins. Quantization
#: first (our kernels' names are exact); attention before GEMMs, since FlashAttention-3's
#: kernels are CUTLASS kernels too.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("quantization", ("_channel_stats_kernel", "_finalize_stats_kernel", "_cast_kernel", "_norm_rope_quant_kernel")),
    ("attention", ("_fp8_attention_kernel", "flash", "fmha", "sdpa", "scaled_dot_product", "attention")),
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "aten::mm", "aten::addmm", "aten::bmm", "matmul")),
)
OTHER = "other"


def category(name: str) -> str:
    """The category of a kernel or op name."""
    lowered = name.lower()
    for label, fragments in CATEGORIES:
        if any(f in lowered for f in fragments):
            return label
    return OTHER


def time_breakdown(fn: Callable[[], object], device: str) -> dict[str, float]:
    """Seconds of one call of ``fn`` per category, with ``"total"`` (wall time) and, on a GPU,
    ``"idle"`` (wall time not covered by kernels)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    seconds = {label: 0.0 for label, _ in CATEGORIES} | {OTHER: 0.0}
    for event in prof.key_averages():
        if device == "cuda":
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            own = event.self_device_time_total
        else:
            own = event.self_cpu_time_total
        seconds[category(event.key)] += own / 1e6
    seconds["total"] = wall
    if device == "cuda":
        seconds["idle"] = max(wall - sum(v for k, v in seconds.items() if k != "total"), 0.0)
    return seconds


def format_breakdown(seconds: dict[str, float]) -> str:
    """One line: each category's milliseconds and share of the wall time."""
    total = seconds["total"]
    parts = [f"{k} {v * 1e3:.1f} ms ({v / total:.0%})" for k, v in seconds.items() if k != "total" and total > 0]
    return f"{total * 1e3:.1f} ms: " + ", ".join(parts)
