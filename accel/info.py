"""What this machine offers FP8 attention: GPU, compute capability, FP8 support, backends."""

from __future__ import annotations

import importlib.metadata
import platform
import warnings

import torch

from .backends import BACKENDS
from .backends.env import MIN_FP8_CAPABILITY, fa3_reason, triton_interpreting


def package_version(package: str) -> str:
    """The installed distribution's version, or "not installed"."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> dict:
    """A JSON-friendly description of the environment, as ``accel info`` prints it."""
    from . import __version__

    report: dict = {
        "accel": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda (torch build)": torch.version.cuda or "none (CPU build)",
        "triton": package_version("triton"),
        "diffusers": package_version("diffusers"),
        "flash-attention-3": "importable" if fa3_reason() is None else "not importable",
        "triton interpreter": "on (TRITON_INTERPRET=1)" if triton_interpreting() else "off",
        "gpus": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            fp8 = (major, minor) >= MIN_FP8_CAPABILITY
            report["gpus"].append({
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "compute capability": f"{major}.{minor}",
                "memory GiB": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
                "fp8": "yes" if fp8 else f"no (needs compute capability >= {'.'.join(map(str, MIN_FP8_CAPABILITY))})",
                "gluon kernel": _gluon_status(i),
            })
    backends = {name: _backend_status(name, backend.unavailable_reason(), report["gpus"])
                for name, backend in BACKENDS.items()}
    report["backends"] = backends
    return report


def _gluon_status(index: int) -> str:
    """Whether the triton backend's Gluon kernel (FA3's schedule, Hopper) serves this GPU."""
    try:
        from .kernels.dispatch import GLUON_ENV, SlowerKernelWarning, gluon_reason, only_the_triton_version
        from .kernels.gluon_attention import DISPATCHED_HEAD_DIMS, MIN_KEYS
    except ImportError as exc:  # no triton: the triton backend's own status says so
        return f"no ({exc})"
    device = torch.device("cuda", index)
    with warnings.catch_warnings():  # the report says the same, and names the fix
        warnings.simplefilter("ignore", SlowerKernelWarning)
        reason = gluon_reason(device)
    if reason is None:
        return f"yes (D = {' and '.join(map(str, DISPATCHED_HEAD_DIMS))}, from {MIN_KEYS} keys)"
    fix = f"; {GLUON_ENV}=1 takes it with this Triton" if only_the_triton_version(device) else ""
    return f"no ({reason}; the Triton kernel serves{fix})"


def _backend_status(name: str, reason: str | None, gpus: list[dict]) -> str:
    """'available' or 'unavailable: why', judged for the GPUs of this machine."""
    if reason is None and name != "reference":
        if not gpus:
            reason = "no CUDA GPU visible"
            if name == "triton" and triton_interpreting():
                reason += " (the kernels run on the CPU through the Triton interpreter)"
        elif name == "triton" and not any(g["fp8"] == "yes" for g in gpus):
            reason = "no GPU with FP8 tensor cores"
        elif name != "triton" and not any(g["compute capability"].startswith("9.") for g in gpus):
            reason = "needs a Hopper GPU (compute capability 9.0)"
    return "available" if reason is None else f"unavailable: {reason}"


def format_report(report: dict) -> str:
    """Human-readable lines for ``accel info``."""
    lines = []
    for key, value in report.items():
        if key == "gpus":
            if not value:
                lines.append("gpu: none visible (FP8 attention falls back to bf16; backend='reference' emulates it)")
            for gpu in value:
                lines.append(f"gpu {gpu['index']}: {gpu['name']}, compute capability {gpu['compute capability']}, "
                             f"{gpu['memory GiB']} GiB, FP8: {gpu['fp8']}, Gluon kernel: {gpu['gluon kernel']}")
        elif key == "backends":
            lines.append("backends:")
            lines.extend(f"  {name:<10} {status}" for name, status in value.items())
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
