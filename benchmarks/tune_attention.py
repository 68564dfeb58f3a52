"""Sweep tile configurations of our FP8 attention kernel (kernel only, pre-quantized inputs).

    python benchmarks/tune_attention.py

Prints TFLOP/s per (shape, granularity, config); the winners go into
``accel.kernels.attention.default_config`` and benchmarks/NOTES.md.
"""

from __future__ import annotations

import itertools

import torch
from triton.testing import do_bench

from accel.kernels import ops
from accel.kernels.attention import AttentionConfig, launch_attention
from accel.testing import activation_like_qkv

SHAPES = [(24, 16384, 128), (40, 75600, 128), (24, 16384, 64)]
CONFIGS = [AttentionConfig(m, n, w, s) for m, n, w, s in itertools.product((128,), (64, 128), (4, 8), (2, 3))]


def main():
    g = torch.Generator(device="cuda").manual_seed(0)
    for heads, s, d in SHAPES:
        q, k, v = activation_like_qkv(1, heads, s, s, d, device="cuda", generator=g)
        for gran in ("head", "token"):
            q8, k8, v8t, qd, kd, vd, _ = ops.quantize_qkv(q, k, v, gran, True, False, True)
            out = torch.empty_like(q)
            best = None
            for cfg in CONFIGS:
                if d == 128 and cfg.block_n == 128 and cfg.num_stages > 3:
                    continue
                try:
                    ms = do_bench(lambda: launch_attention(q8, k8, v8t, qd, kd, vd, out, d, d ** -0.5, config=cfg),
                                  warmup=50, rep=200, return_mode="median")
                except Exception as exc:
                    print(f"{heads}x{s} D={d} {gran} {cfg}: {type(exc).__name__}")
                    continue
                tf = 4 * heads * s * s * d / ms * 1e-9
                print(f"{heads}x{s} D={d} {gran:<5} {tuple(cfg)} {tf:7.1f} TFLOP/s", flush=True)
                if best is None or tf > best[0]:
                    best = (tf, cfg)
            print(f"BEST {heads}x{s} D={d} {gran}: {tuple(best[1])} {best[0]:.1f} TFLOP/s", flush=True)
            del q8, k8, v8t


if __name__ == "__main__":
    main()
