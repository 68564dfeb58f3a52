"""Fused RMSNorm + RoPE + FP8 quantization of Q and K against the unfused path (stock torch
RMSNorm and RoPE writing bf16, then our quantization kernels), on real Wan and FLUX sizes.

    python benchmarks/norm_rope.py [--granularity head|token] [--family wan|flux]   (CUDA GPU with FP8)
"""

from __future__ import annotations

import argparse
import math

import torch

# (name, heads, text tokens, image/video tokens); head dim 128. Wan has no text prefix in its
# self-attention and one RMSNorm across heads; FLUX norms each head and prepends 512 text tokens.
SHAPES = {
    "wan": [("wan-14b-720p", 40, 0, 75600), ("wan-1.3b-480p", 12, 0, 32760)],
    "flux": [("flux-2048", 24, 512, 16384), ("flux-1024", 24, 512, 4096)],
}
D = 128


def _wan_rope(x, cos, sin):
    """Wan's stock interleaved RoPE on (B, S, H, D) in bf16, as diffusers' processor does it."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def _angles(tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.arange(tokens, device=device)[:, None] * torch.exp(
        -torch.arange(D // 2, device=device) / (D // 2) * math.log(1e4))[None, :]
    return angles.cos(), angles.sin()


def variants(family: str, heads: int, text: int, tokens: int, granularity: str, g: torch.Generator):
    """(unfused, fused) callables quantizing one layer's Q and K from its projection outputs, on
    ``g``'s device. Each returns [(q8, q_descale, ...), (k8, k_descale, ...)]."""
    from diffusers.models.embeddings import apply_rotary_emb

    from accel.kernels import ops
    from accel.kernels.quantize import QuantizeJob, quantize_many

    def projection(n, offset=0.0):
        return torch.randn(1, n, heads * D, device=g.device, dtype=torch.bfloat16, generator=g) + offset

    def quantize_qk(qr, kr):
        return quantize_many([QuantizeJob(qr.transpose(1, 2), granularity),
                              QuantizeJob(kr.transpose(1, 2), granularity, True)])

    cos_half, sin_half = _angles(text + tokens, g.device)
    q, k = projection(tokens), projection(tokens, 2.0)
    norm_width = heads * D if family == "wan" else D
    norm_q, norm_k = (torch.nn.RMSNorm(norm_width, eps=1e-6, device=g.device, dtype=torch.bfloat16) for _ in "qk")
    if family == "wan":
        cos_full, sin_full = (t.repeat_interleave(2, -1)[None, :, None] for t in (cos_half, sin_half))

        def unfused():
            qr = _wan_rope(norm_q(q).unflatten(2, (heads, -1)), cos_full[..., 0::2], sin_full[..., 1::2])
            kr = _wan_rope(norm_k(k).unflatten(2, (heads, -1)), cos_full[..., 0::2], sin_full[..., 1::2])
            return quantize_qk(qr, kr)

        def fused():
            return (ops.norm_rope_quantize(q, norm_q.weight, 1e-6, cos_half, sin_half, heads, granularity, False),
                    ops.norm_rope_quantize(k, norm_k.weight, 1e-6, cos_half, sin_half, heads, granularity, True))
        return unfused, fused

    tq, tk = projection(text), projection(text, 2.0)
    norm_tq, norm_tk = (torch.nn.RMSNorm(D, eps=1e-6, device=g.device, dtype=torch.bfloat16) for _ in "qk")
    rope = (cos_half.repeat_interleave(2, -1), sin_half.repeat_interleave(2, -1))

    def unfused():  # FluxAttnProcessor: per-head norms per stream, text first, RoPE in fp32
        qr = torch.cat([norm_tq(tq.unflatten(-1, (heads, D))), norm_q(q.unflatten(-1, (heads, D)))], 1)
        kr = torch.cat([norm_tk(tk.unflatten(-1, (heads, D))), norm_k(k.unflatten(-1, (heads, D)))], 1)
        return quantize_qk(apply_rotary_emb(qr, rope, sequence_dim=1), apply_rotary_emb(kr, rope, sequence_dim=1))

    def fused():
        return (ops.norm_rope_quantize(q, norm_q.weight, 1e-6, cos_half, sin_half, heads, granularity, False,
                                       True, tq, norm_tq.weight, 1e-6),
                ops.norm_rope_quantize(k, norm_k.weight, 1e-6, cos_half, sin_half, heads, granularity, True,
                                       True, tk, norm_tk.weight, 1e-6))
    return unfused, fused


def main(argv=None) -> None:
    from triton.testing import do_bench

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--granularity", default="token", choices=["head", "token"])
    p.add_argument("--family", default="all", choices=["wan", "flux", "all"])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/norm_rope.py needs a CUDA GPU")
    g = torch.Generator(device="cuda").manual_seed(0)
    print(f"{'shape':<15} {'unfused ms':>11} {'fused ms':>9} {'speedup':>8}  ({args.granularity} scales, Q and K)")
    for family in ("wan", "flux") if args.family == "all" else (args.family,):
        for name, heads, text, tokens in SHAPES[family]:
            unfused, fused = variants(family, heads, text, tokens, args.granularity, g)
            t_unfused = do_bench(unfused, warmup=50, rep=300, return_mode="median")
            t_fused = do_bench(fused, warmup=50, rep=300, return_mode="median")
            print(f"{name:<15} {t_unfused:>11.3f} {t_fused:>9.3f} {t_unfused / t_fused:>7.2f}x")


if __name__ == "__main__":
    main()
