"""Sweep tile configurations of our FP8 attention kernel (kernel only, pre-quantized inputs).

    python benchmarks/tune_attention.py

Prints TFLOP/s per (shape, granularity, config); the winners go into
``accel.kernels.attention.default_config`` and benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
from triton.testing import do_bench

from accel.kernels import ops
from accel.kernels.attention import AttentionConfig, launch_attention
from accel.testing import activation_like_qkv

SHAPES = [(24, 8192, 128), (12, 32760, 128), (40, 75600, 128), (24, 16384, 64)]
CONFIGS = [
    *(AttentionConfig(128, 128, w, s) for w, s in itertools.product((4, 8), (2, 3))),
    AttentionConfig(128, 64, 4, 3), AttentionConfig(256, 128, 8, 2), AttentionConfig(256, 128, 8, 3),
    AttentionConfig(256, 64, 8, 3), AttentionConfig(128, 256, 8, 2),
    # no spills in the main loop on triton 3.6 for per-token scales (kernel_resources.py, NOTES 21)
    AttentionConfig(128, 64, 8, 3), AttentionConfig(128, 64, 8, 4),
]
QUICK_SHAPES = [(24, 8192, 128), (12, 32760, 128)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", help="write every measurement here")
    p.add_argument("--quick", action="store_true", help=f"shapes {QUICK_SHAPES} only")
    args = p.parse_args(argv)
    records = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for heads, s, d in QUICK_SHAPES if args.quick else SHAPES:
        q, k, v = activation_like_qkv(1, heads, s, s, d, device="cuda", generator=g)
        for gran in ("head", "token"):
            q8, k8, v8t, qd, kd, vd, _, _ = ops.quantize_qkv(q, k, v, gran, True, False, True)
            out = torch.empty_like(q)
            best = None
            for cfg in CONFIGS:
                try:
                    ms = do_bench(lambda: launch_attention(q8, k8, v8t, qd, kd, vd, out, d, d ** -0.5, config=cfg),
                                  warmup=50, rep=200, return_mode="median")
                except Exception as exc:
                    print(f"{heads}x{s} D={d} {gran} {cfg}: {type(exc).__name__}")
                    continue
                tf = 4 * heads * s * s * d / ms * 1e-9
                records.append(dict(shape=[heads, s, d], granularity=gran, config=list(cfg), tflops=tf))
                print(f"{heads}x{s} D={d} {gran:<5} {tuple(cfg)} {tf:7.1f} TFLOP/s", flush=True)
                if best is None or tf > best[0]:
                    best = (tf, cfg)
            print(f"BEST {heads}x{s} D={d} {gran}: {tuple(best[1])} {best[0]:.1f} TFLOP/s", flush=True)
            del q8, k8, v8t
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
