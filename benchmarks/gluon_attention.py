"""The Gluon attention kernel (accel/kernels/gluon_attention.py), checked and timed in one process
against FlashAttention-3's FP8 kernel and our Triton kernel on the same e4m3 inputs.

    # no GPU: compile for sm_90 here with the installed Triton (3.6, the GPU machine's, e.g. with
    # PYTHONPATH=/tmp/tri36/site; or 3.9, CI's): registers, spills, shared memory, and the main
    # loop's schedule in PTX and SASS
    python benchmarks/gluon_attention.py --compile-only
    # H100/H200: error against fp64 exact attention (sampled rows; NaN-poisoned output) and TFLOP/s
    python benchmarks/gluon_attention.py --shapes 24x8192x8192,12x32760x32760,12x32760x512 --json out.json

Read a schedule as: Q K^T (mma x4) and P V (mma x4) issue back to back; "wait1" retires Q K^T
only; the ex2 run follows while P V is in flight; P V's "wait0" opens the next iteration (the
loop is rotated). "wait0" right before the ex2s, or a ptxas "serialized" warning, means the
overlap is lost. bar.sync/128: one consumer warpgroup meets before an mbarrier arrive.
Kernel-only times: every kernel reads the same pre-quantized Q8 and K8 (K smoothed) of its
granularity, V^T in its own layout; FA3 FP8 (per head only) is the yardstick of both granularities.
Rows "-qin" give the Gluon kernel the bf16 query in diffusers' layout instead, to quantize in its
tile prologue; "q-passes" is the GPU time of Q's own passes, which "-qin" spares (NOTES 43).
Rows "-2wg" (D = 64) split the CTA into two consumer warpgroups instead of three (NOTES 44);
"-2wg-192keys" (D = 64, per head) also takes 192-key blocks (NOTES 49).
Rows named in VARIANTS run the kernel with other module settings (NOTES 46-48): "-128keys" with
128-key blocks per head at every head dim, "-192keys" with 192-key ones wherever two fit,
"-plain-stores" storing the output from registers instead of by TMA, "-ks-late" reading
per-token key descales after Q K^T. Rows "gluon-token-kgroup32/64" (probe, NOTES 49): K quantized
with one scale per group of 32 / 64 keys, which the kernel applies per group; "-perkey": the same
inputs through the per-token path (rows built only when --kernels names "kgroup").
The exploration variants of NOTES 28-29 (one 8-warp consumer partition, ping-pong turns) are in
the git history of this file.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton

from accel.benchmarking.attention import NARROW_KEY_BLOCKS, parse_shapes, with_settings
from accel.kernels import gluon_attention as ga
from accel.kernels.gluon_attention import compile_for_hopper

def ptxas_warnings(kernel) -> list[str]:
    """ptxas -v on the PTX again, keeping what it says about wgmma serialization / spills."""
    from kernel_resources import nvidia_tool

    with tempfile.TemporaryDirectory() as d:
        ptx = os.path.join(d, "k.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        r = subprocess.run([nvidia_tool("ptxas"), "-v", "-arch=sm_90a", ptx, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    lines = (r.stdout + r.stderr).splitlines()
    return [ln.strip() for ln in lines if re.search(r"warn|serializ|spill|Used \d+ registers", ln, re.I)]


# Instruction classes in the schedule summary, first match wins.
_PTX_OPS = [
    (r"wgmma\.fence", "fence"),
    (r"wgmma\.mma_async", "mma"),
    (r"wgmma\.commit_group", "commit"),
    (r"wgmma\.wait_group\.sync\.aligned\s+(\d+)", "wait{0}"),
    (r"ex2\.approx", "ex2"),
    (r"mbarrier\.try_wait", "mbar.wait"),
    (r"mbarrier\.arrive\.expect_tx", "mbar.expect"),
    (r"mbarrier\.arrive", "mbar.arrive"),
    (r"cp\.async\.bulk\.tensor", "tma"),
    (r"ld\.global", "ldg"),  # per-token: the K scales
    (r"bar\.sync\s+\d+,\s*(\d+)", "bar.sync/{0}"),  # /threads: 256 = both consumer warpgroups
    (r"bar\.sync|barrier\.sync", "bar.sync"),
    (r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", "setmaxnreg.{0} {1}"),
]
_SASS_OPS = [
    (r"\bWARPGROUP\.ARRIVE\b", "fence"),
    (r"\b[HQI]GMMA\.", "mma"),
    (r"\bWARPGROUP\.DEPBAR\.LE\s+gsb0,\s*(0x[0-9a-f]+)", "wait{0}"),
    (r"\bMUFU\.EX2\b", "ex2"),
    (r"\bSYNCS\.ARRIVE[^ ]*", "mbar.arrive"),
    (r"\bSYNCS\.PHASECHK[^ ]*", "mbar.wait"),
    (r"\bUTMALDG\b", "tma"),
    (r"\bLDG\.", "ldg"),
    (r"\bBAR\.SYNC(?:\.DEFER_BLOCKING)?\s+0x[0-9a-f]+,\s*(0x[0-9a-f]+)", "bar.sync/{0}"),
    (r"\bBAR\.SYNC\b|\bBAR\.SYNC\.DEFER_BLOCKING\b", "bar.sync"),
]


def _classify(line: str, ops) -> str | None:
    for pat, name in ops:
        m = re.search(pat, line)
        if m:
            return name.format(*(int(g, 0) if g and g[0].isdigit() else g for g in m.groups()))
    return None


def _compress(tokens: list[str]) -> str:
    out, i = [], 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == tokens[i]:
            j += 1
        out.append(tokens[i] if j - i == 1 else f"{tokens[i]} x{j - i}")
        i = j
    return " > ".join(out)


def _ptx_loops(lines: list[str]):
    """(first, last) line ranges closed by a backward branch to a label: the loop bodies."""
    labels = {m.group(1): i for i, ln in enumerate(lines) if (m := re.match(r"^\s*(\$L__BB\d+_\d+):", ln))}
    for i, ln in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);", ln)
        if m and labels.get(m.group(1), i) < i:
            yield labels[m.group(1)], i


def _sass_loops(lines: list[str]):
    """The same for cuobjdump -sass: lines start /*addr*/, branches name an address."""
    addr = {int(m.group(1), 16): i for i, ln in enumerate(lines) if (m := re.match(r"^\s*/\*([0-9a-f]+)\*/", ln))}
    for i, ln in enumerate(lines):
        m = re.search(r"\bBRA\s+(0x[0-9a-f]+)\s*;", ln)
        if m and addr.get(int(m.group(1), 16), i) < i:
            yield addr[int(m.group(1), 16)], i


def main_loop_schedules(text: str, ops, loops) -> list[str]:
    """The compressed op sequences of the loops holding both MMAs and exp2s, in text order: the
    shortest such loop, then any shorter-first others that overlap none already taken (one per
    consumer partition with "split"; ptxas's SASS also has longer loops spanning the rotated body)."""
    lines = text.splitlines()
    found = sorted(((a, b) for a, b in loops(lines)
                    if {"mma", "ex2"} <= {_classify(ln, ops) for ln in lines[a:b + 1]}), key=lambda r: r[1] - r[0])
    taken: list[tuple[int, int]] = []
    for a, b in found:
        if all(b < c or d < a for c, d in taken):
            taken.append((a, b))
    return [_compress([t for t in (_classify(ln, ops) for ln in lines[a:b + 1]) if t]) for a, b in sorted(taken)]


def arrive_guards(ptx: str) -> dict[str, int]:
    """How many consumer mbarrier.arrive sites (not the producer's expect_tx) are guarded by each
    'tid % N == 0' test: one elected thread per partition is what the empty barriers' counts assume."""
    lines = ptx.splitlines()
    tid = {m.group(1) for ln in lines if (m := re.search(r"mov\.u32\s+(%r\d+),\s*%tid\.x", ln))}
    masks = {m.group(1): int(m.group(3)) + 1 for ln in lines
             if (m := re.search(r"and\.b32\s+(%r\d+),\s*(%r\d+),\s*(\d+);", ln)) and m.group(2) in tid}
    preds = {}
    for ln in lines:
        if (m := re.search(r"setp\.eq\.b32\s+(%p\d+),\s*(%r\d+),\s*0;", ln)) and m.group(2) in masks:
            preds[m.group(1)] = [f"tid % {masks[m.group(2)]} == 0"]
        elif m := re.search(r"mov\.pred\s+(%p\d+),\s*0;", ln):
            preds[m.group(1)] = ["false (dead: the peeled block's v_empty)"]
        elif m := re.search(r"and\.pred\s+(%p\d+),\s*(%p\d+),\s*(%p\d+);", ln):
            preds[m.group(1)] = preds.get(m.group(2), []) + preds.get(m.group(3), [])
    out: dict[str, int] = {}
    for ln in lines:
        if m := re.search(r"@(%p\d+)\s+mbarrier\.arrive\.shared::cta", ln):
            key = " & ".join(preds.get(m.group(1), [])) or f"{m.group(1)} (not a tid test)"
            out[key] = out.get(key, 0) + 1
        elif re.search(r"^\s*mbarrier\.arrive\.shared::cta", ln):
            out["unguarded (every thread)"] = out.get("unguarded (every thread)", 0) + 1
    return out



def loop_histogram(sass: str) -> collections.Counter:
    """SASS opcodes of the shortest loop holding both wgmma and exp2 (one key block)."""
    lines = sass.splitlines()
    loops = [(a, b) for a, b in _sass_loops(lines) if {"mma", "ex2"} <= {_classify(ln, _SASS_OPS) for ln in lines[a:b + 1]}]
    ops = collections.Counter()
    if loops:
        a, b = min(loops, key=lambda r: r[1] - r[0])
        for ln in lines[a:b + 1]:
            if m := re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]+)", ln):
                ops[m.group(1)] += 1
    return ops


def compile_only(head_dim: int) -> None:
    from kernel_resources import cuobjdump, resources  # benchmarks/: cuobjdump's registers, stack, SASS

    print(f"triton {triton.__version__}, sm_90, D = {head_dim}, {ga.NUM_STAGES} stages, {ga.WARP_GROUPS[head_dim]}")
    for per_token, has_mean, quantize_q in ((False, False, False), (False, True, False), (True, False, False),
                                            (False, False, True), (True, False, True)):
        k = compile_for_hopper(head_dim, has_mean, per_token, quantize_q)
        regs, stack = resources(k)
        print(f"\n=== PER_TOKEN={per_token} HAS_V_MEAN={has_mean} QUANTIZE_Q={quantize_q}: regs {regs}  "
              f"stack {stack} B  shared {k.metadata.shared} B")
        ptx = k.asm["ptx"]
        setmax = sorted(set(re.findall(r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", ptx)))
        print("setmaxnreg:", ", ".join(f"{d} {n}" for d, n in setmax) or "none")
        for w in ptxas_warnings(k):
            print("ptxas:", w)
        print("consumer mbarrier.arrive sites by guard:",
              ", ".join(f"{g}: {n}" for g, n in arrive_guards(ptx).items()))
        sass = cuobjdump(k, "-sass")
        for kind, text, ops, loops in (("PTX", ptx, _PTX_OPS, _ptx_loops), ("SASS", sass, _SASS_OPS, _sass_loops)):
            for i, sched in enumerate(main_loop_schedules(text, ops, loops) or ["(no loop with wgmma and ex2)"]):
                print(f"{kind} main loop {i + 1}: {sched}")
        hist = loop_histogram(sass)
        print(f"SASS instructions per key block and thread: {sum(hist.values())}:",
              ", ".join(f"{op} {n}" for op, n in hist.most_common(12)))


#: D = 128's split, for the D = 64 A/B against three consumer warpgroups (NOTES 44).
TWO_CONSUMERS = ga.WarpGroups(2, 240, 168)
#: Rows "gluon-<granularity><suffix>": the kernel with these module settings swapped in (NOTES 46-47).
VARIANTS = {"head": {"-128keys": NARROW_KEY_BLOCKS, "-192keys": dict(WIDE_KEY_COST=0.0),  # wide wherever two fit
                     "-plain-stores": dict(OUTPUT_BY_TMA=False)},  # the output from registers (NOTES 48)
            "token": {"-plain-stores": dict(OUTPUT_BY_TMA=False),
                      "-ks-late": dict(PRELOAD_KEY_SCALES={128: False, 64: False}),
                      # 192-key blocks per token, the key descales read late (spills outside the loop; NOTES 47, 49)
                      "-192keys-late": dict(KEYS_PER_BLOCK_TOKEN={128: 192, 64: 128},
                                            PRELOAD_KEY_SCALES={128: False, 64: False})}}


#: Rows "gluon-<granularity>-vmean<suffix>": smooth-V's mean from shared or global memory (NOTES 47).
VMEAN_VARIANTS = {"head": {"-128keys": NARROW_KEY_BLOCKS,
                           "-128keys-shared": dict(NARROW_KEY_BLOCKS, V_MEAN_IN_SHARED={True: True, False: True})},
                  "token": {"-shared": dict(V_MEAN_IN_SHARED={True: True, False: True})}}


def gpu_run(shapes, records: list, only: str | None = None) -> None:
    from triton.testing import do_bench

    from accel.backends.env import fa3_reason
    from accel.kernels import ops
    from accel.kernels.attention import launch_attention
    from accel.kernels.quantize import QuantizeJob, quantize_many
    from tune_quantize import kernel_times  # benchmarks/
    from accel.testing import activation_like_qkv, exact_attention, grouped_keys, rel_l2

    reason = ga.gluon_unavailable_reason(torch.device("cuda"))
    if reason:
        sys.exit(f"the Gluon kernel cannot run here: {reason}")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    fa3 = fa3_reason() is None
    if fa3:
        import flash_attn_interface

    def bench(fn):
        return do_bench(fn, warmup=50, rep=200, return_mode="median")

    def inputs(q, k, v, granularity):
        """Q8, K8 (K smoothed), descales, V^T in both key orders for one granularity."""
        q8, k8, _, qd, kd, _, _, _ = ops.quantize_qkv(q, k, v, granularity, True, False, False)
        v8t, vd, _ = ops.quantize_value(v, granularity, False, True)
        v8t_mma, _, _ = ops.quantize_value(v, granularity, False, True, "mma")
        return q8, k8, qd, kd, v8t, v8t_mma, vd

    def kernels(q8, k8, qd, kd, v8t, v8t_mma, vd, out, d, tag, q_bshd):
        runs = {f"gluon-{tag}": lambda: ga.launch_gluon_attention(q8, k8, v8t_mma, qd, kd, vd, out, d ** -0.5,
                                                                   persistent=True),
                # the caller's bf16 query in diffusers' layout, quantized in the kernel (one scale per row)
                f"gluon-{tag}-qin": lambda: ga.launch_gluon_attention(q_bshd, k8, v8t_mma, kd, kd, vd, out,
                                                                       d ** -0.5, persistent=True),
                f"triton-{tag}": lambda: launch_attention(q8, k8, v8t, qd, kd, vd, out, d, d ** -0.5)}
        if tag == "head":  # the grid's two shapes (gluon_attention.persistent_grid)
            runs[f"gluon-{tag}-1cta"] = lambda: ga.launch_gluon_attention(q8, k8, v8t_mma, qd, kd, vd, out,
                                                                          d ** -0.5, persistent=False)
        if d == 64:  # two consumer warpgroups (128-row tiles) against WARP_GROUPS[64]'s three
            runs[f"gluon-{tag}-2wg"] = with_settings(ga, runs[f"gluon-{tag}"],
                                                     WARP_GROUPS={**ga.WARP_GROUPS, d: TWO_CONSUMERS})
        if d == 64 and tag == "head":  # two consumers with 192-key blocks: no spills, 401 loop SASS
            # per 128 keys against three consumers' 425 (offline, NOTES 49); per token it spills
            runs[f"gluon-{tag}-2wg-192keys"] = with_settings(
                ga, runs[f"gluon-{tag}"], WARP_GROUPS={**ga.WARP_GROUPS, d: TWO_CONSUMERS},
                KEYS_PER_BLOCK={**ga.KEYS_PER_BLOCK, d: 192})
        for suffix, settings in VARIANTS[tag].items():
            runs[f"gluon-{tag}{suffix}"] = with_settings(ga, runs[f"gluon-{tag}"], **settings)
        return runs

    for heads, sq, skv, d in shapes:
        flops = 4.0 * heads * sq * skv * d
        q, k, v = activation_like_qkv(1, heads, sq, skv, d, device="cuda")
        head = inputs(q, k, v, "head")
        q8, k8, qd, kd, _, _, vd = head
        v8, _, _ = ops.quantize_value(v, "head", False, False)
        rows = torch.randperm(sq, device="cuda")[:256]
        ref, _ = exact_attention(q, k, v, rows=rows)
        out = torch.empty_like(q)
        q_bshd = q.transpose(1, 2).contiguous().transpose(1, 2)  # (B, H, S, D) view of (B, S, H, D) memory
        token = inputs(q, k, v, "token")
        runs = {**kernels(*head, out, d, "head", q_bshd), **kernels(*token, out, d, "token", q_bshd)}
        if d == 128 and only and "kgroup" in only:  # probe (NOTES 49), named rows only: not yet run on a GPU
            # K's descales shared by groups of 32 / 64 keys, one factor per group
            for group in (32, 64):
                k8g, kdg = grouped_keys(k, group)
                kgd = ga.key_group_descales(kdg, ga.BLOCK_N, group)
                q8t, qdt, v8t_mma, vdt = token[0], token[2], token[5], token[6]
                runs[f"gluon-token-kgroup{group}"] = functools.partial(
                    ga.launch_gluon_attention, q8t, k8g, v8t_mma, qdt, kdg, vdt, out, d ** -0.5, None, True,
                    key_group=group, k_group_descale=kgd)
                # the same inputs through the per-token path: the same result, per-key cost
                runs[f"gluon-token-kgroup{group}-perkey"] = functools.partial(
                    ga.launch_gluon_attention, q8t, k8g, v8t_mma, qdt, kdg, vdt, out, d ** -0.5, None, True)
        for tag, (q8_, k8_, qd_, kd_, *_) in (("head", head), ("token", token)):
            # smooth-V (`balanced`, `quality`): V^T of V - mean, the mean added in the epilogue
            v8t_s, vd_s, v_mean = ops.quantize_value(v, tag, True, True, "mma")
            run = functools.partial(ga.launch_gluon_attention, q8_, k8_, v8t_s, qd_, kd_, vd_s, out, d ** -0.5,
                                    v_mean, True)
            runs[f"gluon-{tag}-vmean"] = run
            for suffix, settings in VMEAN_VARIANTS[tag].items():
                runs[f"gluon-{tag}-vmean{suffix}"] = with_settings(ga, run, **settings)
        if fa3:
            def run_fa3():  # FA3 reads (B, S, H, D); writes its own output, copied for the check
                o = flash_attn_interface.flash_attn_func(*(t.transpose(1, 2) for t in (q8, k8, v8)), q_descale=qd,
                                                         k_descale=kd, v_descale=vd)
                return o[0] if isinstance(o, tuple) else o
            runs["fa3-fp8"] = lambda: out.copy_(run_fa3().transpose(1, 2))
            timed = {"fa3-fp8": run_fa3}
        else:
            timed = {}
        if only:  # the baselines of the ratios stay
            runs = {n: r for n, r in runs.items()
                    if n in ("gluon-head", "gluon-token", "fa3-fp8") or re.search(only, n)}
        ms = {}
        tag = f"{heads}x{sq}x{skv} D={d}"
        for name, run in runs.items():
            out.fill_(float("nan"))
            run()
            torch.cuda.synchronize()
            unwritten = torch.isnan(out).any(dim=-1).sum().item()
            err = rel_l2(out[:, :, rows], ref)
            ms[name] = bench(timed.get(name, run))
            rec = dict(shape=[heads, sq, skv, d], kernel=name, rel_l2=err, unwritten_rows=unwritten, ms=ms[name],
                       tflops=flops / ms[name] * 1e-9)
            records.append(rec)
            print(f"{tag:<24} {name:<15} rel. L2 {err:.4f}  NaN rows {unwritten}  {ms[name]:8.3f} ms "
                  f"{rec['tflops']:7.1f} TFLOP/s", flush=True)
        for g in ("head", "token"):  # Q's own passes, which -qin does in the kernel: GPU time (a
            # lone quantize_many call is host-bound, and do_bench would time the host)
            if f"gluon-{g}-qin" not in runs:
                continue
            ms[f"q-passes-{g}"] = sum(kernel_times(lambda x: quantize_many([QuantizeJob(x, g)]), [(q_bshd,)]).values())
            records.append(dict(shape=[heads, sq, skv, d], kernel=f"q-passes-{g}", ms=ms[f"q-passes-{g}"]))
            print(f"{tag:<24} {'q-passes-' + g:<15} {ms[f'q-passes-{g}']:8.3f} ms of GPU time", flush=True)
        for g in ("head", "token"):
            others = (f"triton-{g}", f"gluon-{g}-1cta", f"gluon-{g}-2wg", f"gluon-{g}-2wg-192keys",
                      *(f"gluon-{g}{x}" for x in VARIANTS[g]),
                      *(f"gluon-{g}-kgroup{n}{x}" for n in (32, 64) for x in ("", "-perkey")),
                      f"gluon-{g}-vmean", *(f"gluon-{g}-vmean{x}" for x in VMEAN_VARIANTS[g]), "fa3-fp8")
            ratios = "  ".join(f"{ms[n] / ms[f'gluon-{g}']:.2f}x {n}" for n in others if n in ms)
            if f"q-passes-{g}" in ms:
                q_in = ms[f"gluon-{g}"] + ms[f"q-passes-{g}"]
                ratios += f"  | Q in kernel: {q_in / ms[f'gluon-{g}-qin']:.3f}x (Q passes + kernel)"
            row = next(r for r in records if r["kernel"] == f"gluon-{g}" and r["shape"] == [heads, sq, skv, d])
            row["ratios"] = ratios
            print(f"{tag:<24} gluon-{g} speed: {ratios}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compile-only", action="store_true", help="compile for sm_90 here (no GPU) and report")
    p.add_argument("--shapes", default="24x8192x8192x128,12x32760x32760x128,12x32760x512x128",
                   help="comma-separated HxSqxSkvxD")
    p.add_argument("--json", help="GPU mode: write every measurement here")
    p.add_argument("--kernels", help="GPU mode: only the rows whose name matches this regex (and the baselines)")
    args = p.parse_args(argv)
    shapes = parse_shapes(args.shapes)
    if args.compile_only:
        compile_only(shapes[0][3])
        return
    records: list = []
    try:
        gpu_run(shapes, records, args.kernels)
    finally:
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": torch.cuda.get_device_name(), "triton": triton.__version__,
                           "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
