"""FP8 attention backends behind ``accel.fp8_sdpa(backend=...)`` and how ``"auto"`` picks one."""

from __future__ import annotations

from .base import AttentionCall, Backend
from .fa3 import FA3Backend
from .reference import ReferenceBackend
from .torch_quantized import TorchQuantizedBackend
from .triton_backend import TritonBackend, kernel_for

BACKENDS: dict[str, Backend] = {
    b.name: b for b in (TritonBackend(), FA3Backend(), TorchQuantizedBackend(), ReferenceBackend())
}
BACKEND_NAMES = ("auto", *BACKENDS)

#: ``"auto"``'s candidates on a GPU, fastest first (benchmarks/RESULTS.md). torch's op is left
#: out because running it switches the whole process's flash attention to FA3.
AUTO_GPU_ORDER = ("fa3", "triton")
#: Head dims at which our Gluon kernel, where it serves a call, goes before FA3: whole calls from
#: bf16, per head, against our quantization + FA3's FP8 kernel (H200, benchmarks/RESULTS.md run
#: 11): at D = 128 1.00-1.07x from 16384 tokens, 0.996x at 24x8192 (equal GPU time), 1.28-1.36x
#: at 4608 tokens and against 512 keys. At D = 64 FA3 stays first (0.93-0.97x, run 8).
GLUON_FIRST_HEAD_DIMS = (128,)
#: On the CPU only the reference runs (the Triton interpreter is slower still).
AUTO_CPU_ORDER = ("reference",)


def auto_order(call: AttentionCall) -> tuple[str, ...]:
    """``"auto"``'s candidates for ``call``, fastest first."""
    if call.device.type != "cuda":
        return AUTO_CPU_ORDER
    if call.head_dim in GLUON_FIRST_HEAD_DIMS and kernel_for(call) == "gluon":
        return ("triton", "fa3")
    return AUTO_GPU_ORDER


def backend_reason(backend: Backend, call: AttentionCall) -> str | None:
    """Why ``backend`` cannot serve ``call``, or None."""
    return backend.unavailable_reason() or backend.unsupported_reason(call)


def select_backend(call: AttentionCall, requested: str) -> tuple[Backend | None, str]:
    """The backend that serves ``call`` or (None, why none can)."""
    if requested != "auto":
        backend = BACKENDS[requested]
        reason = backend_reason(backend, call)
        return (backend, "") if reason is None else (None, f"backend {requested!r}: {reason}")
    reasons = []
    for name in auto_order(call):
        reason = backend_reason(BACKENDS[name], call)
        if reason is None:
            return BACKENDS[name], ""
        reasons.append(f"{name}: {reason}")
    return None, "no FP8 backend can serve this call (" + "; ".join(reasons) + ")"


__all__ = ["AttentionCall", "Backend", "BACKENDS", "BACKEND_NAMES", "select_backend"]
