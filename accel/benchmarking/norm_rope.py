"""Fused RMSNorm + RoPE + FP8 quantization of Wan's Q and K against the unfused path (stock
torch RMSNorm and RoPE writing bf16, then our quantization kernels), on real Wan sizes.

    python benchmarks/norm_rope.py        (needs a CUDA GPU with FP8)
"""

from __future__ import annotations

import argparse
import math

import torch

# (name, heads, tokens): Wan-14B at 720p and Wan-1.3B at 480p, head dim 128
SHAPES = [("wan-14b-720p", 40, 75600), ("wan-1.3b-480p", 12, 32760)]


def _rope(x, cos, sin):
    """Wan's stock interleaved RoPE on (B, S, H, D) in bf16, as diffusers' processor does it."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def main(argv=None) -> None:
    from triton.testing import do_bench

    from accel.kernels import ops
    from accel.kernels.quantize import QuantizeJob, quantize_many

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--granularity", default="token", choices=["head", "token"])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/norm_rope.py needs a CUDA GPU")
    g = torch.Generator(device="cuda").manual_seed(0)
    print(f"{'shape':<15} {'unfused ms':>11} {'fused ms':>9} {'speedup':>8}  ({args.granularity} scales, Q and K)")
    for name, heads, tokens in SHAPES:
        d = 128
        q = torch.randn(1, tokens, heads * d, device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn(1, tokens, heads * d, device="cuda", dtype=torch.bfloat16, generator=g) + 2
        norm_q = torch.nn.RMSNorm(heads * d, eps=1e-6, device="cuda", dtype=torch.bfloat16)
        norm_k = torch.nn.RMSNorm(heads * d, eps=1e-6, device="cuda", dtype=torch.bfloat16)
        angles = torch.arange(tokens, device="cuda")[:, None] * torch.exp(
            -torch.arange(d // 2, device="cuda") / (d // 2) * math.log(1e4))[None, :]
        cos_half, sin_half = angles.cos(), angles.sin()
        cos_full = cos_half.repeat_interleave(2, -1)[None, :, None]
        sin_full = sin_half.repeat_interleave(2, -1)[None, :, None]

        def unfused():
            qr = _rope(norm_q(q).unflatten(2, (heads, -1)), cos_full[..., 0::2], sin_full[..., 1::2])
            kr = _rope(norm_k(k).unflatten(2, (heads, -1)), cos_full[..., 0::2], sin_full[..., 1::2])
            return quantize_many([QuantizeJob(qr.transpose(1, 2), args.granularity),
                                  QuantizeJob(kr.transpose(1, 2), args.granularity, True)])

        def fused():
            return (ops.norm_rope_quantize(q, norm_q.weight, 1e-6, cos_half, sin_half, heads, args.granularity, False),
                    ops.norm_rope_quantize(k, norm_k.weight, 1e-6, cos_half, sin_half, heads, args.granularity, True))

        t_unfused = do_bench(unfused, warmup=50, rep=300, return_mode="median")
        t_fused = do_bench(fused, warmup=50, rep=300, return_mode="median")
        print(f"{name:<15} {t_unfused:>11.3f} {t_fused:>9.3f} {t_unfused / t_fused:>7.2f}x")


if __name__ == "__main__":
    main()
