"""Attention benchmark: accel's FP8 backends against bf16 SDPA and FlashAttention-3, one process.

    accel bench attention                          # the full table (H100/H200: ~4 min)
    python benchmarks/attention.py                 # the same
    python benchmarks/attention.py --quick         # three shapes
    python benchmarks/attention.py --shapes 24x8192x8192x64,12x32760x512x128  # these
    python benchmarks/attention.py --json out.json # also save every number

Times are CUDA-event medians (triton.testing.do_bench) of the whole call from bf16 (B, S, H, D)
inputs, as diffusers hands them: for FP8 rows that includes quantization. Inputs are
activation-like and rotated so that each timed call reads memory, not L2. TFLOP/s counts
4*B*H*Sq*Skv*D (half when causal). Error is the relative L2 against fp64 exact attention on a
sample of query rows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys

import torch
import torch.nn.functional as F

import accel
from accel.backends.env import fa3_reason
from accel.benchmarking.baselines import sageattention_reason, sageattn_bshd, torchao_reason
from accel.info import package_version
from accel.testing import activation_like_qkv, exact_attention, rel_l2

# (heads, Sq, Skv, head_dim): DESIGN.md's reference rows, both head dims, and cross-attention.
FULL_SHAPES = [
    *[(h, s, s, d) for d in (128, 64)
      for h, s in ((24, 2048), (24, 4608), (24, 8192), (24, 16384), (12, 32760), (40, 75600))],
    (12, 32760, 512, 128), (40, 75600, 512, 128),
]
QUICK_SHAPES = [(24, 8192, 8192, 128), (12, 32760, 32760, 128), (12, 32760, 512, 128)]  # 8192: issue 2's bar
L2_ROTATION_BYTES = 256 << 20  # rotate input sets until this many bytes are in play


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """"24x8192x8192x128,12x32760x512x128" -> [(24, 8192, 8192, 128), (12, 32760, 512, 128)]."""
    return [tuple(int(x) for x in s.lower().split("x")) for s in text.split(",")]


def sdpa_bf16(kernel):
    def run(q, k, v):
        with torch.nn.attention.sdpa_kernel(kernel):
            return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    return run


def fa3_bf16(q, k, v):
    import flash_attn_interface
    return flash_attn_interface.flash_attn_func(q, k, v)


def fp8(backend, granularity, **numerics):
    """``fp8_sdpa`` from bf16 inputs; ``numerics``: smooth_v / smooth_q / hadamard (issue 5's costs)."""
    def run(q, k, v):
        return accel.fp8_sdpa(q, k, v, layout="bshd", backend=backend, granularity=granularity, strict=True,
                              **numerics)
    return run


def fp8_kernel_only(granularity):
    """Our attention kernel on pre-quantized inputs: the kernel's own speed."""
    from accel.kernels import ops

    def prepare(q, k, v):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q8, k8, v8t, qd, kd, vd, v_mean, _ = ops.quantize_qkv(q, k, v, granularity, True, False, True)
        return (q8, k8, v8t, qd, kd, vd, v_mean, q.shape[-1], q.shape[-1] ** -0.5, False, q.dtype, "bshd", False)

    return prepare, lambda *args: ops.fp8_attention(*args)[0]


def fp8_head_triton_kernel():
    """The whole per-head call on our Triton kernel, where ``accel-triton-head`` takes the Gluon
    kernel (Hopper): kernel-only-head's preparation timed with it."""
    prepare, run = fp8_kernel_only("head")
    return None, lambda q, k, v: run(*prepare(q, k, v))


def fp8_token_with_q_pass():
    """The whole per-token call with Q quantized by its own pass, as before the attention kernel
    quantized Q itself (benchmarks/NOTES.md 15): kernel-only-token's preparation timed with it."""
    prepare, run = fp8_kernel_only("token")
    return None, lambda q, k, v: run(*prepare(q, k, v))


def with_settings(module, call, **settings):
    """``call`` with ``module``'s settings changed for its duration (A/B in one process)."""
    def run(*args):
        saved = {name: getattr(module, name) for name in settings}
        vars(module).update(settings)
        try:
            return call(*args)
        finally:
            vars(module).update(saved)
    return run


#: ``gluon_attention``'s settings for 128-key blocks per head at every head dim (the A/B of
#: NOTES 47's 192-key blocks).
NARROW_KEY_BLOCKS = dict(KEYS_PER_BLOCK={128: 128, 64: 128})


def fp8_with(granularity, module, **settings):
    """The whole call with ``module``'s settings changed (:func:`with_settings`): ``configs`` with
    ``QUANTIZE_Q_IN_KERNEL_MAX_KEYS=0``, Q by its own two passes at every key count, or raised,
    Q quantized in the kernel at every key count; ``gluon_attention`` with ``MIN_KEYS`` raised,
    the Triton kernel (benchmarks/NOTES.md 43), or with D = 64 left out of
    ``DISPATCHED_HEAD_DIMS``, the Triton kernel at D = 64 (NOTES 44)."""
    return with_settings(module, fp8("triton", granularity), **settings)


def fa3_fp8_kernel_only():
    import flash_attn_interface
    from accel.kernels import ops

    def prepare(q, k, v):
        q8, k8, v8, qd, kd, vd, _, _ = ops.quantize_qkv(*(t.transpose(1, 2) for t in (q, k, v)), "head", False,
                                                      False, False)
        return q8.transpose(1, 2), k8.transpose(1, 2), v8.transpose(1, 2), qd, kd, vd

    def run(q8, k8, v8, qd, kd, vd):
        return flash_attn_interface.flash_attn_func(q8, k8, v8, q_descale=qd, k_descale=kd, v_descale=vd)

    return prepare, run


def torchao_fp8():
    """torchao's FP8 attention as its ``apply_low_precision_attention`` wrapper runs it inside a
    model: torchao's per-head quantization kernels, then FA3's FP8 kernel through torch's
    quantized SDPA op, on the (B, H, S, D) views diffusers hands ``F.scaled_dot_product_attention``.
    FA3 is activated untimed, as the wrapper does once per forward; :func:`bench_shape` puts
    torch's default back after the row."""
    from torchao.prototype.attention.fp8_fa3 import fp8_fa3_sdpa

    def prepare(q, k, v):
        torch.nn.attention.activate_flash_attention_impl("FA3")
        return tuple(t.transpose(1, 2) for t in (q, k, v))

    return prepare, lambda q, k, v: fp8_fa3_sdpa(q, k, v).transpose(1, 2)


def sageattn_int8():
    """SageAttention as ``pip install sageattention`` installs it (1.0.x: Triton kernels, INT8
    Q K^T with per-block scales and K smoothed, FP16 P V), on (B, S, H, D) as it comes.
    SageAttention2's CUDA kernels need a source build. ``sageattn`` smooths K in place: each
    timed call gets its own copy of K, made untimed."""
    return (lambda q, k, v: (q, k.clone(), v)), sageattn_bshd


def _restore_default_flash_attention() -> None:
    """Undo a row's ``activate_flash_attention_impl`` so that the next rows' bf16 SDPA is torch's own."""
    current = getattr(torch.nn.attention, "current_flash_attention_impl", None)
    if current is not None and current() is not None:
        torch.nn.attention.restore_flash_attention_impl()


def methods():
    """name -> (prepare or None, run). ``prepare`` maps bf16 inputs to the run's arguments untimed."""
    from accel.kernels import configs, gluon_attention

    m = {
        "sdpa-flash-bf16": (None, sdpa_bf16(torch.nn.attention.SDPBackend.FLASH_ATTENTION)),
        "sdpa-cudnn-bf16": (None, sdpa_bf16(torch.nn.attention.SDPBackend.CUDNN_ATTENTION)),
        "sdpa-efficient-bf16": (None, sdpa_bf16(torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION)),
        "accel-triton-head": (None, fp8("triton", "head")),
        "accel-head-triton-kernel": fp8_head_triton_kernel(),
        "accel-triton-token": (None, fp8("triton", "token")),
        "accel-token-q-pass": fp8_token_with_q_pass(),
        "accel-head-q-passes": (None, fp8_with("head", configs, QUANTIZE_Q_IN_KERNEL_MAX_KEYS=0)),
        "accel-token-q-passes": (None, fp8_with("token", configs, QUANTIZE_Q_IN_KERNEL_MAX_KEYS=0)),
        **{f"accel-{g}-q-in-kernel": (None, fp8_with(g, configs, QUANTIZE_Q_IN_KERNEL_MAX_KEYS=1 << 62))
           for g in ("head", "token")},
        "accel-token-triton-kernel": (None, fp8_with("token", gluon_attention, MIN_KEYS=1 << 62)),
        **{f"accel-{g}-triton-d64": (None, fp8_with(g, gluon_attention, DISPATCHED_HEAD_DIMS=(128,)))
           for g in ("head", "token")},
        # 128-key blocks at every head dim (NOTES 47: 192 at D = 128 per head); smooth-V: `balanced`'s numerics
        "accel-head-128keys": (None, fp8_with("head", gluon_attention, **NARROW_KEY_BLOCKS)),
        "accel-head-smooth-v": (None, fp8("triton", "head", smooth_v=True)),
        "accel-head-smooth-v-128keys": (None, with_settings(gluon_attention, fp8("triton", "head", smooth_v=True),
                                                            **NARROW_KEY_BLOCKS)),
        "accel-token-smooth-v": (None, fp8("triton", "token", smooth_v=True)),
        "accel-token-smooth-q": (None, fp8("triton", "token", smooth_q=True)),
        "accel-token-hadamard": (None, fp8("triton", "token", hadamard=True)),
        "kernel-only-head": fp8_kernel_only("head"),
        "kernel-only-token": fp8_kernel_only("token"),
    }
    if fa3_reason() is None:
        m["fa3-bf16"] = (None, fa3_bf16)
        m["accel-fa3-head"] = (None, fp8("fa3", "head"))
        m["fa3-fp8-kernel-only"] = fa3_fp8_kernel_only()
    if torchao_reason() is None:
        m["torchao-fp8"] = torchao_fp8()
    if sageattention_reason() is None:
        m["sageattn-int8"] = sageattn_int8()
    return m


#: Rows that need a third-party package, and what says whether it is there.
OPTIONAL_METHODS = {"fa3-bf16": fa3_reason, "accel-fa3-head": fa3_reason, "fa3-fp8-kernel-only": fa3_reason,
                    "torchao-fp8": torchao_reason, "sageattn-int8": sageattention_reason}


def chosen_methods(text: str | None) -> list[str]:
    """The comma-separated methods (None: all this machine can run). Named rows whose package is
    missing here are skipped with the reason; unknown names are an error that lists the choices."""
    available = methods()
    if text is None:
        return list(available)
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in available and n not in OPTIONAL_METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(available)}")
    for n in names:
        if n not in available:
            print(f"skipping {n}: {OPTIONAL_METHODS[n]()}", flush=True)
    return [n for n in names if n in available]


def bench_shape(heads, sq, skv, d, names, args):
    from triton.testing import do_bench

    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    one_set = 2 * heads * (sq + 2 * skv) * d
    n_sets = max(1, min(8, math.ceil(L2_ROTATION_BYTES / one_set)))
    sets = [activation_like_qkv(1, heads, sq, skv, d, args.kind, layout="bshd", device="cuda", generator=gen)
            for _ in range(n_sets)]
    rows = torch.randperm(sq, device="cuda", generator=gen)[:256]
    ref, _ = exact_attention(*sets[0], layout="bshd", rows=rows)
    flops = 4 * heads * sq * skv * d
    results = {}
    for name in names:
        prepare, run = methods()[name]
        try:
            inputs = [prepare(*s) if prepare else s for s in sets]
            out = run(*inputs[0])
            out = out[0] if isinstance(out, tuple) else out
            err = rel_l2(out[:, rows].transpose(1, 2), ref)
            it = iter(range(1 << 62))
            ms = do_bench(lambda: run(*inputs[next(it) % n_sets]), warmup=args.warmup, rep=args.rep,
                          return_mode="median")
            results[name] = {"ms": ms, "tflops": flops / ms * 1e-9, "rel_l2": err}
        except Exception as exc:  # a baseline that cannot run this shape: say so, keep going
            results[name] = {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"}
        _restore_default_flash_attention()
        torch.cuda.empty_cache()
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="three shapes only")
    p.add_argument("--shapes", default=None, help="comma-separated HxSqxSkvxD (instead of the reference rows)")
    p.add_argument("--methods", default=None, help="comma-separated subset of methods")
    p.add_argument("--kind", default="activation", help="input kind (accel.testing.INPUT_KINDS)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up, ms")
    p.add_argument("--rep", type=int, default=400, help="timed repetitions, ms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write all results here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/attention.py needs a CUDA GPU")
    names = chosen_methods(args.methods)
    import triton
    env = {
        "device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "accel": accel.__version__, "python": platform.python_version(), "argv": sys.argv,
        "fa3": fa3_reason() or "available",
        **{package: package_version(package) for package in ("torchao", "sageattention")},
    }
    print(json.dumps(env))
    table = []
    shapes = parse_shapes(args.shapes) if args.shapes else QUICK_SHAPES if args.quick else FULL_SHAPES
    for heads, sq, skv, d in shapes:
        res = bench_shape(heads, sq, skv, d, names, args)
        table.append({"heads": heads, "sq": sq, "skv": skv, "d": d, "results": res})
        base = res.get("sdpa-cudnn-bf16", {}).get("ms")
        for name, r in res.items():
            if "error" in r:
                print(f"{heads:>3}x{sq:<6} kv={skv:<6} D={d:<4} {name:<22} ERROR {r['error']}", flush=True)
            else:
                vs = f"{base / r['ms']:.2f}x" if base else "-"
                print(f"{heads:>3}x{sq:<6} kv={skv:<6} D={d:<4} {name:<22} {r['ms']:9.3f} ms "
                      f"{r['tflops']:7.1f} TFLOP/s  vs cuDNN {vs:>6}  relL2 {r['rel_l2']:.4f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "table": table}, f, indent=1)
    print_summary(table, names)


def print_summary(table, names):
    """Markdown table: TFLOP/s per method (time includes quantization for accel-* rows)."""
    print("\n| H x Sq (Skv), D | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for row in table:
        cells = []
        for n in names:
            r = row["results"].get(n, {})
            cells.append("err" if "error" in r else f"{r['tflops']:.0f}" if r else "-")
        kv = "" if row["skv"] == row["sq"] else f" ({row['skv']})"
        print(f"| {row['heads']}x{row['sq']}{kv}, {row['d']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
