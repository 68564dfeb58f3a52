"""What the Wan and Flux FP8 processors share: their numerics and the call that picks FP8 or stock."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from .._warnings import warn_once
from ..backends import BACKEND_NAMES, AttentionCall, Backend, select_backend
from ..parallel import context_parallel_config, fp8_context_parallel_attention, keys_per_call
from ..sdpa import GRANULARITIES, fp8_sdpa


#: Fewest keys at which FP8 attention, quantization included, beats cuDNN bf16 on a Hopper GPU,
#: per granularity (H200, D = 128, benchmarks/RESULTS.md run 6): one scale per head from 4096
#: (Flux 1024x1024's 4608 keys all FP8 inside the model: 1.19-1.27x cuDNN end to end, two calls
#: on two machines); per token from 8192 (at 4608 keys its kernels take 0.46 ms of GPU time
#: where cuDNN takes 0.42).
CUDA_MIN_KEYS = {"head": 4096, "token": 8192}


@dataclass(frozen=True)
class FP8Numerics:
    """How a processor's FP8 attentions quantize (see :func:`accel.fp8_sdpa`)."""

    granularity: str = "token"
    smooth_k: bool = True
    backend: str = "auto"
    strict: bool = False
    smooth_v: bool = False
    #: calls with fewer keys run stock bf16; None: CUDA_MIN_KEYS on a GPU, none on the CPU
    min_keys: int | None = 0
    smooth_q: bool = False
    hadamard: bool = False

    def sdpa_kwargs(self) -> dict:
        """The keyword arguments of :func:`accel.fp8_sdpa` that these numerics set."""
        return dict(granularity=self.granularity, smooth_k=self.smooth_k, smooth_v=self.smooth_v,
                    smooth_q=self.smooth_q, hadamard=self.hadamard, backend=self.backend, strict=self.strict)

    def serves(self, n_keys: int, device: torch.device) -> bool:
        """Whether a call with ``n_keys`` keys on ``device`` runs FP8."""
        min_keys = self.min_keys
        if min_keys is None:
            min_keys = CUDA_MIN_KEYS[self.granularity] if device.type == "cuda" else 0
        return n_keys >= min_keys

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {self.backend!r}")


def norm_eps(norm: torch.nn.RMSNorm, x: torch.Tensor) -> float:
    """The epsilon ``norm`` applies to ``x`` (torch's RMSNorm takes the dtype's when it has none)."""
    return norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps


def fused_norm_rope_backend(numerics: FP8Numerics, query: torch.Tensor, value: torch.Tensor, norms
                            ) -> tuple[Backend, AttentionCall] | None:
    """The backend that attends after our fused RMSNorm + RoPE + quantization kernel, with the
    call it serves; None where that kernel cannot serve the attention: numerics it does not
    implement, norms other than torch's RMSNorm with a weight, an unsupported head dim, or a
    chosen backend that takes no pre-quantized Q and K (ours and FA3's FP8 kernel do).

    ``query``: one projection output (B, S, H*D), for its device, dtype and heads (the call's
    query and key are views of it: shapes only); ``value``: the attention's V, (B, S, H, D).
    """
    from ..backends.env import triton_reason

    heads, head_dim = value.shape[2:]
    if numerics.smooth_q or numerics.hadamard or triton_reason() is not None:
        return None
    if query.dtype not in (torch.bfloat16, torch.float16) or query.shape[-1] != heads * head_dim:
        return None
    if not all(isinstance(n, torch.nn.RMSNorm) and n.weight is not None for n in norms):
        return None
    from ..kernels.norm_rope import norm_rope_supported  # imports triton

    if not norm_rope_supported(head_dim):
        return None
    q = query.unflatten(-1, (heads, head_dim)).transpose(1, 2)
    call = AttentionCall(q, q, value.transpose(1, 2), False, head_dim ** -0.5, "bshd", numerics.granularity,
                         numerics.smooth_k, False, numerics.smooth_v, numerics.smooth_q)
    backend, _ = select_backend(call, numerics.backend)
    return (backend, call) if backend is not None and backend.prequantized_qk else None


class FP8AttentionMixin:
    """What the Wan and Flux FP8 processors share. ``active`` maps each attention kind the
    processor serves to its FP8 numerics, or None for bf16."""

    active: dict[str, FP8Numerics | None]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.active})"

    def _must_run_stock(self, attention_mask) -> bool:
        """Masks are not served in FP8: say so once. (Context parallelism is: see accel.parallel.)"""
        if attention_mask is None:
            return False
        warn_once(f"{type(self).__name__}: calls with an attention mask run the stock bf16 processor")
        return True

    def _attend(self, kind: str, query, key, value, numerics: FP8Numerics | None, parallel_config=None):
        """The one place where an attention runs; measurements override it."""
        return attend(self, query, key, value, numerics, parallel_config)


def attend(
    processor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    numerics: FP8Numerics | None,
    parallel_config=None,
) -> torch.Tensor:
    """Attention on diffusers' (B, S, H, D) tensors: FP8 with ``numerics``, or (None) exactly what
    the stock processor would call (diffusers' dispatcher with the processor's backend). Under
    diffusers' context parallelism (``parallel_config``) the tensors are this rank's shards and
    FP8 runs through diffusers' own Ulysses / ring machinery."""
    if numerics is not None and numerics.serves(keys_per_call(key.shape[1], parallel_config), key.device):
        dtype = query.dtype
        if dtype not in (torch.bfloat16, torch.float16):  # an fp32 model: FP8 from bf16 copies
            query, key, value = (t.to(torch.bfloat16) for t in (query, key, value))
        if context_parallel_config(parallel_config) is not None:
            return fp8_context_parallel_attention(query, key, value, numerics, parallel_config).to(dtype)
        return fp8_sdpa(query, key, value, layout="bshd", **numerics.sdpa_kwargs()).to(dtype)
    return dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 backend=processor._attention_backend, parallel_config=parallel_config)
