"""Does this Triton's automatic warp specialization run an FP8 attention loop on this GPU?

    python benchmarks/probe_warp_specialize.py          # Hopper: one H100/H200, ~2 minutes

A minimal attention loop (Q, K and V^T through TMA descriptors, online softmax in exp2, both
products in FP8: the shape Triton's Hopper warp specialization accepts) runs with and without
``tl.range(..., warp_specialize=True)``, each case in its own process under a time limit,
because on triton 3.6 + H200 the specialized kernel never finished (benchmarks/NOTES.md 23).
Prints per case: finished or timed out, TFLOP/s, rel. L2 against fp32 attention of the same
e4m3 inputs. Re-run it on a new Triton before building on warp specialization again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import triton
import triton.language as tl


@triton.jit
def minimal_attention(q_desc, k_desc, vt_desc, out_ptr, S, qk_scale,
                      BLOCK: tl.constexpr, D: tl.constexpr, WARP_SPECIALIZE: tl.constexpr):
    """(B*H*S, D) e4m3 rows, S a multiple of BLOCK; out (B*H*S, D) bf16."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    q = q_desc.load([bh * S + pid_m * BLOCK, 0])
    m_i = tl.full([BLOCK], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK], tl.float32)
    acc = tl.zeros([BLOCK, D], tl.float32)
    for start_n in tl.range(0, S, BLOCK, warp_specialize=WARP_SPECIALIZE):
        s = tl.dot(q, tl.trans(k_desc.load([bh * S + start_n, 0])))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        vt = vt_desc.load([bh * D, start_n])
        acc = tl.dot((p * 256.0).to(tl.float8e4nv), tl.trans(vt), acc)
        m_i = m_new
    rows = bh * S + pid_m * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + rows[:, None] * D + tl.arange(0, D)[None, :], (acc / (l_i * 256.0)[:, None]).to(tl.bfloat16))


def run_case(warps: int, stages: int, warp_specialize: bool, heads: int, seq: int, dim: int) -> dict:
    import torch
    from triton.testing import do_bench
    from triton.tools.tensor_descriptor import TensorDescriptor

    block = 128
    gen = torch.Generator(device="cuda").manual_seed(0)
    q8, k8, v8 = (torch.randn(heads, seq, dim, device="cuda", generator=gen).to(torch.float8_e4m3fn)
                  for _ in range(3))
    vt = v8.transpose(1, 2).contiguous()
    descs = (TensorDescriptor.from_tensor(q8.view(-1, dim), [block, dim]),
             TensorDescriptor.from_tensor(k8.view(-1, dim), [block, dim]),
             TensorDescriptor.from_tensor(vt.view(-1, seq), [dim, block]))
    out = torch.full((heads * seq, dim), float("nan"), device="cuda", dtype=torch.bfloat16)

    def launch():
        minimal_attention[(seq // block, heads)](*descs, out, seq, dim ** -0.5 * 1.4426950408889634, BLOCK=block,
                                                 D=dim, WARP_SPECIALIZE=warp_specialize, num_warps=warps,
                                                 num_stages=stages)

    launch()
    torch.cuda.synchronize()
    ref = torch.nn.functional.scaled_dot_product_attention(q8[:, :512].float(), k8.float(), v8.float())
    got = out.view(heads, seq, dim)[:, :512].float()
    ms = do_bench(launch, warmup=25, rep=100, return_mode="median")
    return dict(tflops=4 * heads * seq * seq * dim / ms * 1e-9, rel_l2=((got - ref).norm() / ref.norm()).item())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=55.0, help="seconds per case (compile + run)")
    p.add_argument("--shape", default="24x8192x128", help="HEADSxSEQxDIM, SEQ a multiple of 128")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args(argv)
    heads, seq, dim = (int(x) for x in args.shape.split("x"))
    if args.case:
        warps, stages, ws = (int(x) for x in args.case.split(","))
        print(json.dumps(run_case(warps, stages, bool(ws), heads, seq, dim)))
        return
    print(f"triton {triton.__version__}, {heads}x{seq}, D = {dim}")
    for warps, stages, ws in ((4, 2, 0), (4, 3, 0), (4, 2, 1), (4, 3, 1), (8, 2, 1)):
        name = f"{warps} warps, {stages} stages, warp_specialize={bool(ws)}"
        try:
            done = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--case", f"{warps},{stages},{ws}"],
                                  capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{name}: no result within {args.timeout:.0f} s (hang?)", flush=True)
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            print(f"{name}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        r = json.loads(lines[-1])
        print(f"{name}: {r['tflops']:.1f} TFLOP/s, rel. L2 {r['rel_l2']:.4f}", flush=True)


if __name__ == "__main__":
    main()
