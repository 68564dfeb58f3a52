"""Facts about this process's environment that decide which backends can run.

Each answer is memoized and marked constant for torch.compile, so the dispatch code in
``fp8_sdpa`` traces without graph breaks: the environment does not change during a run.
(A plain dict, not functools.cache: Dynamo would trace through the cache wrapper.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from accel.kernels.configs import interpreting as triton_interpreting  # noqa: F401 (re-export)

#: FP8 tensor cores: Ada (SM89), Hopper (SM90), Blackwell (SM100+).
MIN_FP8_CAPABILITY = (8, 9)

_memo: dict[str, object] = {}


def _memoized(key: str, compute: Callable[[], object]):
    if key not in _memo:
        _memo[key] = compute()
    return _memo[key]


def _import_reason(module: str, what: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken CUDA extension
        return f"{what} is not importable: {exc}"
    return None


@torch.compiler.assume_constant_result
def triton_reason() -> str | None:
    return _memoized("triton", lambda: _import_reason("triton", "triton (pip install triton; Linux only)"))


def _capability(index: int) -> tuple[int, int]:
    return _memoized(f"capability{index}", lambda: torch.cuda.get_device_capability(index))


@torch.compiler.assume_constant_result
def _cuda_fp8_reason(index: int) -> str | None:
    major, minor = _capability(index)
    if (major, minor) < MIN_FP8_CAPABILITY:
        name = torch.cuda.get_device_name(index)
        return (f"{name} (sm_{major}{minor}) has no FP8 tensor cores; "
                "FP8 attention needs sm_89 or newer (Ada, Hopper, Blackwell)")
    return None


def cuda_fp8_reason(device: torch.device) -> str | None:
    """None if ``device`` is a CUDA GPU with FP8 tensor cores, else why not."""
    return _cuda_fp8_reason(device.index if device.index is not None else torch.cuda.current_device())


@torch.compiler.assume_constant_result
def is_hopper(index: int) -> bool:
    return _capability(index)[0] == 9


@torch.compiler.assume_constant_result
def fa3_reason() -> str | None:
    """None if FlashAttention-3's Python interface imports, else why not."""
    return _memoized("fa3", lambda: _import_reason("flash_attn_interface", "flash_attn_interface (FlashAttention-3)"))


@torch.compiler.assume_constant_result
def torch_quantized_reason() -> str | None:
    """None if torch's experimental FP8 SDPA op and an FA3 implementation for it are present."""
    return _memoized("torch_quantized", _torch_quantized_reason)


def _torch_quantized_reason() -> str | None:
    try:
        from torch.nn.attention.experimental._scaled_dot_product_attention_quantized import (  # noqa: F401
            _scaled_dot_product_attention_quantized,
        )
    except ImportError:
        return (f"torch {torch.__version__} has no "
                "torch.nn.attention.experimental._scaled_dot_product_attention_quantized (needs >= 2.11)")
    if not hasattr(torch.nn.attention, "activate_flash_attention_impl"):
        return f"torch {torch.__version__} has no activate_flash_attention_impl"
    reason = fa3_reason()
    if reason is not None:
        return f"torch's FP8 SDPA op needs FlashAttention-3: {reason}"
    return None
