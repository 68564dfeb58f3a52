"""Registers and stack (spill) bytes per thread of the attention kernel, compiled for Hopper
(sm_90) on this machine: no GPU needed, so tile configurations can be screened before device
time is spent on them.

    python benchmarks/kernel_resources.py                      # the default configurations
    python benchmarks/kernel_resources.py --tiles 128x128x8x3,128x256x8x2 --granularity token

The signature mirrors a launch on (B, H, S, D) views whose head-dim strides are 1 and whose
pointers and other strides are multiples of 16: Triton specializes those at launch, and without
them the compiled code is not what runs (its address arithmetic alone spills).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from accel.kernels.attention import _fp8_attention_kernel

_POINTERS = {"q_ptr": "*bf16", "k_ptr": "*fp8e4nv", "vt_ptr": "*fp8e4nv", "q_descale_ptr": "*fp32",
             "k_descale_ptr": "*fp32", "v_descale_ptr": "*fp32", "v_mean_ptr": "*fp32", "k_bias_ptr": "*fp32",
             "out_ptr": "*bf16", "lse_ptr": "*fp32"}
_UNIT_STRIDES = ("sq_d", "so_d")
_LENGTHS = ("Sq", "Skv", "H")  # not assumed divisible by 16 (32760 is not)


def compile_for_hopper(block_m: int, block_n: int, num_warps: int, num_stages: int, per_token: bool,
                       quantize_q: bool = False, head_dim: int = 128):
    """The attention kernel compiled for sm_90 with these tiles (non-causal, no LSE)."""
    fn = _fp8_attention_kernel
    names = fn.arg_names
    consts = dict(D_OUT=head_dim, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, PER_TOKEN_QK=per_token,
                  QUANTIZE_Q=quantize_q, PER_CHANNEL_V=per_token, IS_CAUSAL=False, WRITE_LSE=False,
                  HAS_V_MEAN=False, HAS_K_BIAS=False, OUT_BF16=True, EMULATE_CAST=False,
                  **{n: 1 for n in _UNIT_STRIDES})
    signature = {}
    for n in names:
        if n in consts:
            signature[n] = "constexpr"
        elif n in _POINTERS:
            signature[n] = "*fp8e4nv" if n == "q_ptr" and not quantize_q else _POINTERS[n]
        elif n == "qk_scale":
            signature[n] = "fp32"
        else:
            signature[n] = "i32" if n in _LENGTHS else "i64"
    aligned = [n for n in names if n not in consts and n != "qk_scale" and n not in _LENGTHS]
    src = ASTSource(fn=fn, signature=signature,
                    constexprs={(names.index(n),): v for n, v in consts.items()},
                    attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=num_warps, num_stages=num_stages))


def nvidia_tool(name: str) -> str:
    """Path of a CUDA binary tool bundled with Triton (cuobjdump, ptxas)."""
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def cuobjdump(kernel, flag: str) -> str:
    """cuobjdump's output for a compiled kernel's cubin (``--dump-resource-usage``, ``-sass``)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        return subprocess.run([nvidia_tool("cuobjdump"), flag, f.name], capture_output=True, text=True,
                              check=True).stdout


def resources(kernel) -> tuple[int, int]:
    """(registers, stack bytes) per thread, read from the cubin by cuobjdump (bundled with Triton)."""
    usage = cuobjdump(kernel, "--dump-resource-usage")
    m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    if m is None:
        raise RuntimeError(f"no resource line in cuobjdump's output:\n{usage}")
    return int(m.group(1)), int(m.group(2))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", default="128x128x4x3,128x128x8x3,128x256x8x2,256x128x8x3",
                   help="comma-separated BLOCK_MxBLOCK_NxWARPSxSTAGES")
    p.add_argument("--granularity", default="both", choices=["head", "token", "both"])
    p.add_argument("--head-dim", type=int, default=128, choices=[64, 128])
    args = p.parse_args(argv)
    grans = ("head", "token") if args.granularity == "both" else (args.granularity,)
    print(f"triton {triton.__version__}, sm_90, D = {args.head_dim}")
    for tile in args.tiles.split(","):
        bm, bn, w, s = (int(x) for x in tile.split("x"))
        for g in grans:
            for quantize_q in ((False, True) if g == "token" else (False,)):
                regs, stack = resources(compile_for_hopper(bm, bn, w, s, g == "token", quantize_q, args.head_dim))
                q = " (Q quantized in the kernel)" if quantize_q else ""
                print(f"{bm:>3}x{bn:<3} {w} warps {s} stages  {g:<5}{q:<28} regs {regs:3}  stack {stack:5} B")


if __name__ == "__main__":
    main()
