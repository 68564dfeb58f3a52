"""Sweep the tiles of the quantization passes and of the fused norm + RoPE + quantization kernel.

    python benchmarks/tune_quantize.py [--json out.json]
    python benchmarks/tune_quantize.py --current   # the tiles in use only, GPU time per kernel

For each shape and granularity: the GPU time (torch.profiler, per kernel) of quantizing Q, K
(smoothed) and V (transposed) from bf16 (B, S, H, D) views, and the bandwidth that moves (bf16
read once + e4m3 written, over time) as a share of this card's device-to-device copy bandwidth.
Winners go into ``accel.kernels.configs`` and benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from triton.testing import do_bench

from accel.kernels.configs import GPU_QUANTIZE_CONFIG, QuantizeConfig
from accel.kernels.norm_rope import norm_rope_quantize
from accel.kernels.quantize import QuantizeJob, quantize_many
from accel.testing import activation_like_qkv

SHAPES = [(24, 8192, 128), (12, 32760, 128), (40, 75600, 128), (24, 16384, 64)]
ROTATION_BYTES = 256 << 20  # rotate input sets so that each timed call reads memory, not L2


def sweep_configs() -> list[QuantizeConfig]:
    """Each pass's tiles with the others' fixed: statistics (whose chunk count the finalize pass
    reduces), finalize, cast."""
    base = GPU_QUANTIZE_CONFIG
    stats = [base._replace(stats_tokens=t, stats_block=b, stats_warps=w)
             for t in (128, 256, 512) for b in (16, 64, 128) for w in (4, 8) if b <= t]
    finalize = [base._replace(finalize_chunks=c, finalize_warps=w) for c in (32, 64, 128) for w in (4, 8, 16)]
    cast = [base._replace(cast_block=b, cast_warps=w) for b in (32, 64, 128) for w in (4, 8)]
    return list(dict.fromkeys([base] + stats + finalize + cast))


def copy_bandwidth(nbytes: int) -> float:
    """Device-to-device copy, read + write bytes per second."""
    x = torch.empty(nbytes // 2, device="cuda", dtype=torch.bfloat16).normal_()
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=50, rep=200, return_mode="median")
    return 2 * nbytes / (ms * 1e-3)


def input_sets(heads: int, tokens: int, d: int, g: torch.Generator) -> list[tuple]:
    one = 3 * heads * tokens * d * 2
    n = max(1, math.ceil(ROTATION_BYTES / one))
    return [activation_like_qkv(1, heads, tokens, tokens, d, device="cuda", generator=g, layout="bshd")
            for _ in range(n)]


def kernel_times(fn, sets, calls: int = 20) -> dict[str, float]:
    """GPU milliseconds per call of each kernel ``fn`` launches (torch.profiler): the GPU's time
    alone, where do_bench on a call with a lot of host work would time the host."""
    from torch.profiler import ProfilerActivity, profile

    for i in range(5):
        fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            fn(*sets[i % len(sets)])
        torch.cuda.synchronize()
    return {e.key: e.device_time_total / calls / 1e3 for e in prof.key_averages()
            if e.device_type == torch.autograd.DeviceType.CUDA}


def current_tiles(g, copy_bw, records) -> None:
    """The tiles in use, per kernel: what each pass costs and the share of copy bandwidth the
    whole quantization moves (Q, K smoothed, V transposed), per head and per token; and per
    token without smoothing or transposes (one pass: the cast alone)."""
    for heads, tokens, d in SHAPES:
        sets = input_sets(heads, tokens, d, g)
        moved = 3 * heads * tokens * d * (2 + 1)
        cases = {"head": lambda q, k, v: quantize_many(jobs(q, k, v, "head")),
                 "token": lambda q, k, v: quantize_many(jobs(q, k, v, "token")),
                 "token, one pass": lambda q, k, v: quantize_many(
                     [QuantizeJob(t.transpose(1, 2), "token") for t in (q, k, v)])}
        for name, fn in cases.items():
            times = kernel_times(fn, sets)
            ms = sum(times.values())
            share = moved / (ms * 1e-3) / copy_bw
            parts = " + ".join(f"{k.split('(')[0].strip('_')} {v:.4f}" for k, v in sorted(times.items()))
            records.append(dict(kind="quantize-current", shape=[heads, tokens, d], case=name, kernels=times,
                                ms=ms, copy_share=share))
            print(f"CURRENT {heads}x{tokens} D={d} {name:<16} {ms:8.4f} ms {share:6.1%} of copy  ({parts})",
                  flush=True)
        del sets


def jobs(q, k, v, granularity: str) -> list[QuantizeJob]:
    """Q, K and V as fp8_sdpa quantizes them for the Gluon kernel (bshd views seen as bhsd; K
    smoothed, V transposed in its key order)."""
    vg = "channel" if granularity == "token" else "head"
    return [QuantizeJob(q.transpose(1, 2), granularity), QuantizeJob(k.transpose(1, 2), granularity, True),
            QuantizeJob(v.transpose(1, 2), vg, False, True, "mma")]


def tune_quantize(g, copy_bw, records) -> None:
    for heads, tokens, d in SHAPES[:3]:
        sets = input_sets(heads, tokens, d, g)
        moved = 3 * heads * tokens * d * (2 + 1)  # bf16 in, e4m3 out
        for gran in ("head", "token"):
            best = None
            for cfg in sweep_configs():
                try:
                    times = kernel_times(lambda q, k, v: quantize_many(jobs(q, k, v, gran), cfg), sets)
                except Exception as exc:  # a tile this triton cannot compile: say so, keep going
                    print(f"{heads}x{tokens} D={d} {gran} {tuple(cfg)}: {type(exc).__name__}", flush=True)
                    continue
                ms = sum(times.values())
                share = moved / (ms * 1e-3) / copy_bw
                records.append(dict(kind="quantize", shape=[heads, tokens, d], granularity=gran,
                                    config=list(cfg), kernels=times, ms=ms, copy_share=share))
                parts = " + ".join(f"{v:.4f}" for _, v in sorted(times.items()))
                print(f"{heads}x{tokens} D={d} {gran:<5} {tuple(cfg)} {ms:8.4f} ms ({parts}: cast, stats, "
                      f"finalize) {share:6.1%} of copy", flush=True)
                if best is None or ms < best[0]:
                    best = (ms, cfg, share)
            print(f"BEST quantize {heads}x{tokens} D={d} {gran}: {tuple(best[1])} {best[0]:.4f} ms "
                  f"{best[2]:.1%} of copy", flush=True)
        del sets


NORM_ROPE_TILES = ((32, 4), (64, 4), (32, 8), (64, 8), (128, 8))


def tune_norm_rope(g, copy_bw, records, tiles=NORM_ROPE_TILES) -> None:
    """(tokens, warps) per program of the fused norm + RoPE kernel, or None: the defaults."""
    for heads, tokens in ((40, 75600), (12, 32760)):
        d = 128
        x = torch.randn(1, tokens, heads * d, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.rand(heads * d, device="cuda", dtype=torch.bfloat16, generator=g) + 0.5
        angles = torch.arange(tokens, device="cuda")[:, None] * torch.exp(
            -torch.arange(d // 2, device="cuda") / (d // 2) * math.log(1e4))[None, :]
        cos, sin = angles.cos(), angles.sin()
        moved = heads * tokens * d * 3
        for gran, smooth in (("token", False), ("token", True), ("head", False), ("head", True)):
            for tile in tiles:
                fn = lambda x: norm_rope_quantize(x, w, 1e-6, cos, sin, heads, gran, smooth, tile)  # noqa: E731
                try:
                    ms = sum(kernel_times(fn, [(x,)]).values())
                except Exception as exc:  # a tile this triton cannot compile: say so, keep going
                    print(f"norm_rope {heads}x{tokens} {gran} {tile}: {type(exc).__name__}", flush=True)
                    continue
                share = moved / (ms * 1e-3) / copy_bw
                records.append(dict(kind="norm_rope", shape=[heads, tokens, d], granularity=gran, smooth=smooth,
                                    tiles=tile, ms=ms, copy_share=share))
                print(f"norm_rope {heads}x{tokens} {gran:<5} smooth={smooth!s:<5} tiles={tile or 'default'} "
                      f"{ms:8.4f} ms {share:6.1%} of copy", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", help="write every measurement here")
    p.add_argument("--current", action="store_true", help="the tiles in use only")
    p.add_argument("--norm-rope-only", action="store_true", help="sweep the fused norm + RoPE kernel only")
    args = p.parse_args(argv)
    g = torch.Generator(device="cuda").manual_seed(0)
    copy_bw = copy_bandwidth(1 << 30)
    print(f"copy bandwidth {copy_bw / 1e12:.2f} TB/s (read + write)", flush=True)
    records: list[dict] = []
    if args.current:
        current_tiles(g, copy_bw, records)
        tune_norm_rope(g, copy_bw, records, tiles=(None,))
    else:
        if not args.norm_rope_only:
            tune_quantize(g, copy_bw, records)
        tune_norm_rope(g, copy_bw, records)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "copy_bw": copy_bw, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
