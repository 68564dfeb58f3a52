"""Which attention kernel serves a call: the Gluon kernel (FA3's schedule, Hopper) where it can,
else the Triton kernel, which serves every call. V is quantized for the kernel chosen here (the
Gluon kernel reads V^T in another key order), so the caller asks once and passes the answer to
both the quantization and the attention op."""

from __future__ import annotations

import functools
import os
import warnings

import torch

from .gluon_attention import gluon_unavailable_reason, gluon_unsupported_reason

#: "0" keeps every call on the Triton kernel (A/B measurements, debugging); "1" also lets a Triton
#: version the Gluon kernel has not run with on a GPU take it (it compiles with 3.8 and 3.9);
#: unset: the Gluon kernel with the Triton versions it was tested with (TESTED_TRITON).
GLUON_ENV = "ACCEL_GLUON"


class SlowerKernelWarning(UserWarning):
    """A faster kernel exists for this GPU but is off; the call still runs in FP8, more slowly."""


def only_the_triton_version(device: torch.device) -> bool:
    """Whether the Triton version alone keeps the Gluon kernel off ``device`` (an sm_90 GPU):
    ``ACCEL_GLUON=1`` would take it."""
    return gluon_unavailable_reason(device) is not None and gluon_unavailable_reason(device, True) is None


@functools.lru_cache(maxsize=None)
def _gluon_reason_cached(device: torch.device, allow_untested_triton: bool) -> str | None:
    reason = gluon_unavailable_reason(device, allow_untested_triton)
    if not allow_untested_triton and only_the_triton_version(device):
        # Only the Triton version stands in the way on this Hopper GPU: say so once, with the fix.
        warnings.warn(f"accel: {reason}; our Triton kernel serves instead (15-30% slower at D = 128 on an "
                      f"H200). Set {GLUON_ENV}=1 to use the Gluon kernel with this Triton, install triton "
                      f"3.6 (torch 2.11's), or set {GLUON_ENV}=0 to keep the Triton kernel "
                      "without this warning.", SlowerKernelWarning, stacklevel=2)
    return reason


# Under torch.compile the answer is taken once, when tracing, and baked into the graph: Dynamo
# need not trace the device queries (and ACCEL_GLUON is read at compile time).
@torch.compiler.assume_constant_result
def gluon_reason(device: torch.device) -> str | None:
    """Why the Gluon kernel does not run on ``device`` (None: it does)."""
    setting = os.environ.get(GLUON_ENV, "")
    if setting not in ("", "0", "1"):
        raise ValueError(f"{GLUON_ENV}={setting!r}: use 0 (our Triton kernel only), 1 (the Gluon kernel also "
                         "with a Triton version it has not been run with on a GPU) or leave it unset")
    if setting == "0":
        return f"{GLUON_ENV}=0"
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _gluon_reason_cached(device, setting == "1")


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
