"""Host time of one ``fp8_sdpa`` call with every kernel launch stubbed out, on a CPU (no GPU needed).

    python benchmarks/host_overhead.py                      # 24x2048 bshd, per head and per token
    python benchmarks/host_overhead.py --profile 30         # and cProfile's top 30 (own time)
    python benchmarks/host_overhead.py --launch stub        # our Python alone, without Triton's
    python benchmarks/host_overhead.py --shape 12x32760x512x128 --one-launch-tokens 512,0   # A/B

The tensors live on the CPU; the harness makes the call take the path it takes on an H200:

* Triton sees a fake active driver (CUDA sm_90, device 0, stream 0) and its compile step returns a
  stand-in whose launch does nothing. ``--launch triton`` (default) thus runs Triton's own launch
  Python (argument binding and specialization, cache key, launch metadata) as on a GPU, up to the
  C launcher; ``--launch stub`` replaces ``kernel[grid]`` by a no-op: our Python only.
* The dispatch picks the Gluon kernel where it would on an H200 (132 SMs), and the Triton backend
  accepts CPU tensors while the kernels keep their GPU tiles (TRITON_INTERPRET is unset here).

Not in it: the C launcher (argument packing, the TMA descriptors' encoding, the driver call: a few
us a launch) and CUDA's caching allocator (the CPU's allocator serves ``torch.empty`` instead).
Triton's share is that of the installed Triton (the H200 machine runs 3.6, CI 3.9). Times are
this thread's CPU time, best of ``--rounds``, granularities interleaved: a shared CPU is noisy.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

os.environ.pop("TRITON_INTERPRET", None)  # before Triton decorates anything: real JIT functions

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime.jit import JITFunction


class _FakeDriver:
    """What ``JITFunction.run`` asks of the active driver before it launches."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


class _NoLaunch:
    """Stands in for a compiled kernel: Triton's launch path reaches ``run``, which does nothing."""

    function = packed_metadata = None

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, *args):
        pass


def _fake_compile(self, key, signature, device, constexprs, options, attrs, warmup):
    kernel = self.device_caches[device][0][key] = _NoLaunch()  # cached: compiled once per key
    return kernel


def stub_gpu(launch: str) -> None:
    """Patch Triton and accel so that fp8_sdpa's CUDA-side Python runs on CPU tensors."""
    triton.runtime.driver.set_active(_FakeDriver())
    JITFunction._do_compile = _fake_compile
    if launch == "stub":
        JITFunction.__getitem__ = lambda self, grid: lambda *args, **kwargs: None

    from accel.kernels import dispatch, gluon_attention

    from accel import sdpa
    from accel.backends import triton_backend

    sdpa.triton_interpreting = triton_backend.triton_interpreting = lambda: True  # CPU tensors accepted
    dispatch._gluon_reason_cached = lambda device, allow_untested_triton: None  # the Gluon kernel "runs" here (an H200)
    gluon_attention._sm_count = lambda device: 132


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="24x2048x2048x128", help="HEADSxSQxSKVxD (batch 1)")
    p.add_argument("--layout", default="bshd", choices=["bshd", "bhsd"])
    p.add_argument("--granularity", default="both", choices=["head", "token", "both"])
    p.add_argument("--launch", default="triton", choices=["triton", "stub"],
                   help="triton: Triton's launch Python runs up to the C launcher; stub: no launch at all")
    p.add_argument("--calls", type=int, default=300, help="calls per round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--clock", default="thread", choices=["thread", "wall"],
                   help="thread: this thread's CPU time (steadier on a shared machine); wall: perf_counter")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N functions")
    p.add_argument("--one-launch-tokens", default=None, metavar="N[,N...]",
                   help="QuantizeConfig.one_launch_tokens values to compare, interleaved (0: always the "
                        "statistics passes); default: the tuned configuration's")
    args = p.parse_args(argv)
    stub_gpu(args.launch)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter

    import accel
    from accel.kernels import configs
    from accel.testing import activation_like_qkv

    tuned = configs.GPU_QUANTIZE_CONFIG
    thresholds = ([int(n) for n in args.one_launch_tokens.split(",")] if args.one_launch_tokens
                  else [tuned.one_launch_tokens])
    heads, sq, skv, d = (int(x) for x in args.shape.split("x"))
    q, k, v = activation_like_qkv(1, heads, sq, skv, d, layout=args.layout, device="cpu")
    grans = ("head", "token") if args.granularity == "both" else (args.granularity,)

    def use(n):  # the quantization's one-launch threshold, set outside the timed calls
        configs.GPU_QUANTIZE_CONFIG = tuned._replace(one_launch_tokens=n)

    calls = {(g, n): (lambda g=g: accel.fp8_sdpa(q, k, v, layout=args.layout, granularity=g, backend="triton",
                                                 strict=True)) for g in grans for n in thresholds}
    best = dict.fromkeys(calls, float("inf"))
    for (_, n), call in calls.items():
        use(n)
        call()  # first call: compile stand-ins, fill caches
    for _ in range(args.rounds):
        for key, call in calls.items():
            use(key[1])
            t = clock()
            for _ in range(args.calls):
                call()
            best[key] = min(best[key], (clock() - t) / args.calls)
    for (g, n), seconds in best.items():
        print(f"{args.shape} {args.layout} {g}, one launch up to {n} tokens: {seconds * 1e6:.1f} us a call "
              f"(best of {args.rounds} x {args.calls}, {args.clock} clock, launch={args.launch}, "
              f"triton {triton.__version__}, torch {torch.__version__})")
    for (g, n), call in calls.items() if args.profile else ():
        use(n)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            call()
        prof.disable()
        print(f"--- cProfile, {g}, one launch up to {n} tokens, {args.calls} calls (profiled, so inflated) ---")
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
