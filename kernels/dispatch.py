"""Which attention kernel serves a call: the Gluon kernel (FA3's schedule, Hopper) where it can,
else the Triton kernel, which serves every call. V is quantized for the kernel chosen here (the
Gluon kernel reads V^T in another key order), so the caller asks once and passes the answer to
both the quantization and the attention op."""

from __future__ import annotations

import functools
import os

import torch

from .gluon_attention import gluon_unavailable_reason, gluon_unsupported_reason

#: Set to 0 to keep every call on the Triton kernel (A/B measurements, debugging).
GLUON_ENV = "ACCEL_GLUON"


@functools.lru_cache(maxsize=None)
def _gluon_reason_cached(device: torch.device) -> str | None:
    return gluon_unavailable_reason(device)


# Under torch.compile the answer is taken once, when tracing, and baked into the graph: Dynamo
# need not trace the device queries (and ACCEL_GLUON is read at compile time).
@torch.compiler.assume_constant_result
def gluon_reason(device: torch.device) -> str | None:
    """Why the Gluon kernel does not run on ``device`` (None: it does)."""
    if os.environ.get(GLUON_ENV, "1") == "0":
        return f"{GLUON_ENV}=0"
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _gluon_reason_cached(device)


def attention_kernel(device: torch.device, head_dim: int, seq_kv: int, granularity: str, is_causal: bool,
                     return_lse: bool, smooth_q: bool) -> str:
    """"gluon" or "triton" for one call (:func:`accel.kernels.ops.fp8_attention`'s ``kernel``);
    ``granularity``: both are served alike (the key-count threshold is the same since the Gluon
    kernel quantizes Q itself, NOTES 43)."""
    if gluon_reason(device) is not None:
        return "triton"
    return "triton" if gluon_unsupported_reason(head_dim, seq_kv, is_causal, return_lse, smooth_q) else "gluon"


def v_key_order(kernel: str) -> str:
    """The token order of V^T that ``kernel`` reads (quantize ops' ``key_order``)."""
    return "mma" if kernel == "gluon" else "natural"
