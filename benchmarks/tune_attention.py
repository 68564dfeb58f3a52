"""Sweep tile configurations of our FP8 attention kernel (kernel only, pre-quantized inputs),
against FlashAttention-3's FP8 kernel on the same inputs when it is installed.

    python benchmarks/tune_attention.py [--quick] [--json out.json]

Prints TFLOP/s per (shape, granularity, config), the ratio to FA3 FP8 (per head: FA3 has no
per-token scales) and the largest difference from the default configuration's output, written
into a NaN-poisoned buffer: 0 for configurations with the default's key-block size (the same
blocks in the same order), a few bf16 steps for other key-block sizes (the running max moves
at other points), NaN if an element was never written. The winners go into
``accel.kernels.configs`` and benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
from triton.testing import do_bench

from accel.backends.env import fa3_reason
from accel.benchmarking.attention import fa3_fp8_kernel_only
from accel.kernels import ops
from accel.kernels.attention import AttentionConfig, launch_attention
from accel.kernels.configs import default_config
from accel.testing import activation_like_qkv

SHAPES = [(24, 8192, 128), (12, 32760, 128), (40, 75600, 128), (24, 16384, 64)]
QUICK_SHAPES = [(24, 8192, 128), (12, 32760, 128), (24, 8192, 64)]
CONFIGS = [
    *(AttentionConfig(128, 128, w, s) for w, s in itertools.product((4, 8), (2, 3))),
    AttentionConfig(128, 64, 4, 3), AttentionConfig(256, 128, 8, 2), AttentionConfig(256, 128, 8, 3),
    AttentionConfig(256, 64, 8, 3), AttentionConfig(128, 256, 8, 2),
    # no spills in the main loop on triton 3.6 for per-token scales (kernel_resources.py, NOTES 21)
    AttentionConfig(128, 64, 8, 3), AttentionConfig(128, 64, 8, 4),
    # 64-row tiles, one warpgroup: 64x64 needs no stack on triton 3.6 (per head), more CTAs per SM
    AttentionConfig(64, 64, 4, 3), AttentionConfig(64, 64, 4, 4), AttentionConfig(64, 128, 4, 2),
    AttentionConfig(64, 128, 4, 3),
]


def fa3_fp8_ms(q, k, v) -> float | None:
    """FA3's FP8 kernel (kernel only) on (B, H, S, D) inputs quantized per head, or None without FA3."""
    if fa3_reason() is not None:
        return None
    prepare, run = fa3_fp8_kernel_only()  # the attention benchmark's: it takes (B, S, H, D)
    args = prepare(*(t.transpose(1, 2) for t in (q, k, v)))
    return do_bench(lambda: run(*args), warmup=50, rep=200, return_mode="median")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write every measurement here")
    p.add_argument("--quick", action="store_true", help=f"shapes {QUICK_SHAPES} only")
    p.add_argument("--configs", help="indices into CONFIGS to try (comma-separated); default: all")
    args = p.parse_args(argv)
    records = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for heads, s, d in QUICK_SHAPES if args.quick else SHAPES:
        q, k, v = activation_like_qkv(1, heads, s, s, d, device="cuda", generator=g)
        flops = 4 * heads * s * s * d
        fa3_ms = fa3_fp8_ms(q, k, v)
        if fa3_ms:
            print(f"{heads}x{s} D={d} FA3 FP8 (per head) {flops / fa3_ms * 1e-9:7.1f} TFLOP/s", flush=True)
        for gran in ("head", "token"):
            q8, k8, v8t, qd, kd, vd, _, _ = ops.quantize_qkv(q, k, v, gran, True, False, True)

            def run(cfg, out):
                launch_attention(q8, k8, v8t, qd, kd, vd, out, d, d ** -0.5, config=cfg)
                return out

            def poisoned():  # every element must be written
                return torch.full_like(q, float("nan"))

            expected = run(default_config(d, per_token=gran == "token"), poisoned())
            out = torch.empty_like(q)
            best = None
            for cfg in [CONFIGS[int(i)] for i in args.configs.split(",")] if args.configs else CONFIGS:
                try:
                    diff = (run(cfg, poisoned()).float() - expected.float()).abs().max().item()  # NaN: missed
                    ms = do_bench(lambda: run(cfg, out), warmup=50, rep=200, return_mode="median")
                except Exception as exc:
                    print(f"{heads}x{s} D={d} {gran} {tuple(cfg)}: {type(exc).__name__} {str(exc)[:80]}")
                    continue
                tf = flops / ms * 1e-9
                vs = f"{fa3_ms / ms:.2f}x FA3" if fa3_ms else ""
                records.append(dict(shape=[heads, s, d], granularity=gran, config=list(cfg), tflops=tf,
                                    vs_fa3=fa3_ms / ms if fa3_ms else None, max_diff=diff))
                print(f"{heads}x{s} D={d} {gran:<5} {tuple(cfg)} {tf:7.1f} TFLOP/s {vs} diff {diff:.2e}", flush=True)
                if diff == diff and (best is None or tf > best[0]):
                    best = (tf, cfg)
            print(f"BEST {heads}x{s} D={d} {gran}: {tuple(best[1])} {best[0]:.1f} TFLOP/s"
                  + (f" ({best[0] / (flops / fa3_ms * 1e-9):.2f}x FA3 FP8)" if fa3_ms else ""), flush=True)
            del q8, k8, v8t
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
