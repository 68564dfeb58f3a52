"""Attention kernels launched once each inside a CUDA profiler range, for Nsight Compute.

Inputs are built, quantized and every kernel compiled and warmed up first; then
``cudaProfilerStart`` opens the range and each named kernel runs once, so that
``ncu --profile-from-start off`` sees only the attention kernels (not the quantization passes):

    ncu --profile-from-start off --clock-control none --set full -o rep \\
        --kernel-name-base demangled -k regex:'gluon|flash' \\
        python benchmarks/profile_attention.py --shapes 24x8192x8192x128 --kernels gluon-head,fa3-fp8

(FA3's kernel is a cutlass ``device_kernel``: only its demangled name says "flash"; the filter
also leaves out the copy of FA3's output into the shared buffer.) Kernels: ``gluon-head`` /
``gluon-token`` (the Gluon kernel on pre-quantized inputs, persistent grid as dispatched),
``triton-head`` / ``triton-token`` (the Triton kernel), ``fa3-fp8`` (FA3's FP8 kernel, per head,
if installed), ``gluon-head-128keys`` (the Gluon kernel with 128-key blocks per head; the
192-key-block probe ``wide-head`` of NOTES 47 is in commit f1df7db). Each is checked against
fp64 exact attention on sampled rows before the range opens (a profile of a wrong kernel is
worthless).
"""

from __future__ import annotations

import argparse
import sys

import torch

from accel.benchmarking.attention import NARROW_KEY_BLOCKS, parse_shapes, with_settings

KERNELS = ("gluon-head", "gluon-token", "triton-head", "triton-token", "fa3-fp8", "gluon-head-128keys")


def build_runs(heads: int, sq: int, skv: int, d: int, names: list[str]) -> dict:
    from accel.kernels import gluon_attention as ga
    from accel.kernels import ops
    from accel.kernels.attention import launch_attention
    from accel.testing import activation_like_qkv, exact_attention, rel_l2

    q, k, v = activation_like_qkv(1, heads, sq, skv, d, device="cuda")
    out = torch.empty_like(q)
    runs = {}
    for g in ("head", "token"):
        q8, k8, _, qd, kd, _, _, _ = ops.quantize_qkv(q, k, v, g, True, False, False)
        v8t, vd, _ = ops.quantize_value(v, g, False, True)
        v8t_mma, _, _ = ops.quantize_value(v, g, False, True, "mma")
        runs[f"gluon-{g}"] = (lambda q8=q8, k8=k8, v=v8t_mma, qd=qd, kd=kd, vd=vd:
                              ga.launch_gluon_attention(q8, k8, v, qd, kd, vd, out, d ** -0.5))
        runs[f"triton-{g}"] = (lambda q8=q8, k8=k8, v=v8t, qd=qd, kd=kd, vd=vd:
                               launch_attention(q8, k8, v, qd, kd, vd, out, d, d ** -0.5))
        if g == "head":
            runs["gluon-head-128keys"] = with_settings(ga, runs["gluon-head"], **NARROW_KEY_BLOCKS)
        if g == "head" and "fa3-fp8" in names:
            import flash_attn_interface

            v8, _, _ = ops.quantize_value(v, "head", False, False)

            def run_fa3(q8=q8, k8=k8, v8=v8, qd=qd, kd=kd, vd=vd):
                o = flash_attn_interface.flash_attn_func(*(t.transpose(1, 2) for t in (q8, k8, v8)), q_descale=qd,
                                                         k_descale=kd, v_descale=vd)
                out.copy_((o[0] if isinstance(o, tuple) else o).transpose(1, 2))

            runs["fa3-fp8"] = run_fa3
    rows = torch.randperm(sq, device="cuda")[:128]
    ref, _ = exact_attention(q, k, v, rows=rows)
    checked = {}
    for name in names:
        out.fill_(float("nan"))
        runs[name]()
        torch.cuda.synchronize()
        err = rel_l2(out[:, :, rows], ref)
        print(f"{heads}x{sq}x{skv} D={d} {name:<13} rel. L2 {err:.4f}", flush=True)
        if not err < 0.5:
            sys.exit(f"{name} is wrong at {heads}x{sq}x{skv} D={d} (rel. L2 {err}): not profiled")
        for _ in range(3):  # warm: compiled, caches and clocks as in a benchmark
            runs[name]()
        checked[name] = runs[name]
    return checked


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="24x8192x8192x128", help="comma-separated HxSqxSkvxD")
    p.add_argument("--kernels", default="gluon-head,gluon-token,fa3-fp8", help=f"comma-separated, of {KERNELS}")
    args = p.parse_args(argv)
    names = [n for n in args.kernels.split(",") if n]
    if bad := [n for n in names if n not in KERNELS]:
        p.error(f"unknown kernels {bad}: choose from {KERNELS}")
    all_runs = [build_runs(*shape, names) for shape in parse_shapes(args.shapes)]
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for runs in all_runs:
        for run in runs.values():
            run()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main()
