"""FP8 attention backends behind ``accel.fp8_sdpa(backend=...)`` and how ``"auto"`` picks one."""

from __future__ import annotations

from .base import AttentionCall, Backend
from .fa3 import FA3Backend
from .reference import ReferenceBackend
from .torch_quantized import TorchQuantizedBackend
from .triton_backend import TritonBackend

BACKENDS: dict[str, Backend] = {
    b.name: b for b in (TritonBackend(), FA3Backend(), TorchQuantizedBackend(), ReferenceBackend())
}
BACKEND_NAMES = ("auto", *BACKENDS)

#: ``"auto"``'s candidates on a GPU, fastest first (benchmarks/RESULTS.md). torch's op is left
#: out because running it switches the whole process's flash attention to FA3.
AUTO_GPU_ORDER = ("fa3", "triton")
#: On the CPU only the reference runs (the Triton interpreter is slower still).
AUTO_CPU_ORDER = ("reference",)


def backend_reason(backend: Backend, call: AttentionCall) -> str | None:
    """Why ``backend`` cannot serve ``call``, or None."""
    return backend.unavailable_reason() or backend.unsupported_reason(call)


def select_backend(call: AttentionCall, requested: str) -> tuple[Backend | None, str]:
    """The backend that serves ``call`` or (None, why none can)."""
    if requested != "auto":
        backend = BACKENDS[requested]
        reason = backend_reason(backend, call)
        return (backend, "") if reason is None else (None, f"backend {requested!r}: {reason}")
    order = AUTO_GPU_ORDER if call.device.type == "cuda" else AUTO_CPU_ORDER
    reasons = []
    for name in order:
        reason = backend_reason(BACKENDS[name], call)
        if reason is None:
            return BACKENDS[name], ""
        reasons.append(f"{name}: {reason}")
    return None, "no FP8 backend can serve this call (" + "; ".join(reasons) + ")"


__all__ = ["AttentionCall", "Backend", "BACKENDS", "BACKEND_NAMES", "select_backend"]
