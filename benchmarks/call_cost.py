"""Where one ``fp8_sdpa`` call's time goes: host time, wall time and each GPU kernel's time.

    python benchmarks/call_cost.py                                  # 12x32760 against 512 keys
    python benchmarks/call_cost.py --shape 24x8192x8192x128 --granularity head

When the host's time per call exceeds the GPU's, back-to-back calls (as in
``benchmarks/attention.py``) measure the host; in a model the host usually runs ahead. The
kernel rows are CUDA times per call from torch.profiler.
"""

from __future__ import annotations

import argparse
import time

import torch

import accel
from accel.kernels import configs
from accel.testing import activation_like_qkv


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="12x32760x512x128", help="HEADSxSQxSKVxD")
    p.add_argument("--granularity", default="both", choices=["head", "token", "both"])
    p.add_argument("--backend", default="triton")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--cudnn", action="store_true", help="also cuDNN bf16 SDPA's GPU busy time, the yardstick")
    p.add_argument("--one-launch-tokens", type=int, default=None,
                   help="quantize tensors up to this many tokens in one launch (QuantizeConfig.one_launch_tokens; "
                        "0: always the statistics passes); default: the tuned configuration's")
    args = p.parse_args(argv)
    if args.one_launch_tokens is not None:
        configs.GPU_QUANTIZE_CONFIG = configs.GPU_QUANTIZE_CONFIG._replace(one_launch_tokens=args.one_launch_tokens)
    one_launch = configs.default_quantize_config().one_launch_tokens
    heads, sq, skv, d = (int(x) for x in args.shape.split("x"))
    q, k, v = activation_like_qkv(1, heads, sq, skv, d, layout="bshd", device="cuda")
    for gran in ("head", "token") if args.granularity == "both" else (args.granularity,):
        def call():
            return accel.fp8_sdpa(q, k, v, layout="bshd", backend=args.backend, granularity=gran, strict=True)

        for _ in range(20):
            call()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.calls):
            call()
        host = (time.perf_counter() - t) / args.calls
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) / args.calls
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(20):
                call()
            torch.cuda.synchronize()
        kernels = [(e.key, e.device_time_total / 20 / 1e3) for e in prof.key_averages()
                   if e.device_type == torch.autograd.DeviceType.CUDA]
        print(f"{args.shape} {gran} (one launch up to {one_launch} tokens): host {host * 1e3:.3f} ms/call, "
              f"wall {wall * 1e3:.3f} ms/call, "
              f"GPU kernels {sum(ms for _, ms in kernels):.3f} ms/call, GPU busy {gpu_busy(prof) / 20:.3f} "
              f"of a {gpu_span(prof) / 20:.3f} ms span per call")
        for name, ms in sorted(kernels, key=lambda x: -x[1]):
            print(f"    {ms:8.4f} ms  {name[:90]}")
        cpu = sorted((e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CPU),
                     key=lambda e: -e.self_cpu_time_total)
        print("  host, self time per call (profiled, so inflated):")
        for e in cpu[:12]:
            print(f"    {e.self_cpu_time_total / 20 / 1e3:8.4f} ms  {e.count / 20:5.1f}x  {e.key[:80]}")
    if args.cudnn:  # what a model's GPU spends on the same attention in bf16 (host time aside)
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
            for _ in range(20):
                torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(20):
                    torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)
                torch.cuda.synchronize()
        print(f"{args.shape} cuDNN bf16: GPU busy {gpu_busy(prof) / 20:.3f} ms/call")


def _kernel_intervals(prof) -> list[tuple[float, float]]:
    return sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                  if e.device_type == torch.autograd.DeviceType.CUDA)


def gpu_busy(prof) -> float:
    """Milliseconds in which some kernel ran (overlaps merged)."""
    busy, end = 0.0, float("-inf")
    for a, b in _kernel_intervals(prof):
        busy += max(0.0, b - max(a, end))
        end = max(end, b)
    return busy / 1e3


def gpu_span(prof) -> float:
    """Milliseconds from the first kernel's start to the last one's end: busy plus the gaps."""
    iv = _kernel_intervals(prof)
    return (max(b for _, b in iv) - iv[0][0]) / 1e3 if iv else 0.0


if __name__ == "__main__":
    main()
