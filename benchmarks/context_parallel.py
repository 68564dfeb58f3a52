"""Context-parallel benchmark: one transformer forward of a random-weight Wan-1.3B at 480p (32,760
tokens) on one GPU and under diffusers' context parallelism (Ulysses, ring), bf16 and FP8.

    torchrun --nproc-per-node 2 benchmarks/context_parallel.py --json cp.json

Rank 0 first runs every variant alone on its GPU (before any parallelism; the other ranks wait).
Then, per mode, every rank builds the same model, ``enable_parallelism(ContextParallelConfig(...))``
with the degree = the world size, and runs every variant. Variants: ``bf16`` (diffusers' cuDNN
backend, which serves Ulysses and ring; ``native`` cannot ring, it returns no LSE) and accel's
``speed`` and ``balanced`` presets (their bf16 attentions on cuDNN too). Per mode and variant: median seconds of one forward (slowest
rank), speedup over the same variant on one GPU, scaling efficiency (one-GPU time / (N x time)),
FP8's speedup over bf16 in the same mode, and the output's rel. L2 against the same variant on
one GPU and against bf16 on one GPU.

Context parallelism runs Wan's self-attention without the fused norm+RoPE+quantize kernel (it
would attend over one rank's tokens), so CP FP8 is also compared with one-GPU FP8 without it
("unfused"; the fused kernel's rounding differs by about FP8's own error). Expect Ulysses FP8 to
match unfused one-GPU FP8 up to bf16 rounding of the sharded matmuls (same tokens, same scales),
and ring FP8 to differ by FP8 noise (each K/V shard has its own scales; the LSE merge is exact). Only rank 0 prints and writes
``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import time

import torch
import torch.distributed as dist

import accel
from accel.benchmarking.pipeline import CONFIGS, _error, build
from accel.testing import rel_l2

#: variant -> accel preset (None: bf16 only)
VARIANTS = {"bf16": None, "fp8-speed": "speed", "fp8-balanced": "balanced"}
MODES = ("ulysses", "ring", "unified")
#: every bf16 attention's backend: diffusers' native one cannot ring (it returns no LSE)
BF16_BACKEND = "_native_cudnn"
DEVICE = "cuda"


def degrees(mode: str, world: int) -> dict:
    """ContextParallelConfig arguments for ``mode`` on ``world`` GPUs."""
    if mode == "ulysses":
        return {"ulysses_degree": world}
    if mode == "ring":
        return {"ring_degree": world}
    if world < 4 or world % 2:
        raise ValueError(f"unified (ring 2 x Ulysses N/2) needs an even world size >= 4, got {world}")
    return {"ring_degree": 2, "ulysses_degree": world // 2}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="wan-1.3b-480p", choices=[n for n in CONFIGS if not n.startswith("tiny")],
                   help="model and size, from accel.benchmarking.pipeline (default: %(default)s)")
    p.add_argument("--modes", default="ulysses,ring", help=f"comma-separated from {', '.join(MODES)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated from {', '.join(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per variant (median), after one warm-up")
    p.add_argument("--json", help="write all results here (rank 0)")
    args = p.parse_args(argv)
    args.modes, args.variants = args.modes.split(","), args.variants.split(",")
    bad = [m for m in args.modes if m not in MODES] + [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown mode(s) / variant(s) {bad}")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def init_distributed() -> tuple[int, int]:
    """NCCL process group from torchrun's environment; (rank, world size)."""
    if "LOCAL_RANK" not in os.environ or not torch.cuda.is_available():
        raise SystemExit("run on CUDA GPUs under torchrun: torchrun --nproc-per-node 2 benchmarks/context_parallel.py")
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    # generous timeout: the other ranks wait while rank 0 runs the one-GPU variants
    dist.init_process_group("nccl", device_id=torch.device("cuda", local), timeout=datetime.timedelta(minutes=30))
    return dist.get_rank(), dist.get_world_size()


def build_model(name: str, share: bool):
    """The seeded random model and inputs; with ``share``, rank 0's weights and inputs on every
    rank (context parallelism needs them identical)."""
    torch.manual_seed(0)  # build() seeds the inputs, not the weights
    model, inputs = build(name, DEVICE, torch.bfloat16)
    if share:
        for t in [*model.parameters(), *model.buffers(), *inputs.values()]:
            dist.broadcast(t.data, src=0)
    return model, inputs


def fingerprint(model) -> float:
    """A checksum of the weights: one-GPU and parallel runs must use the same model."""
    with torch.no_grad():
        return sum(p.double().sum().item() for p in model.parameters())


def time_forward(model, inputs: dict, repeats: int, parallel: bool) -> tuple[float, torch.Tensor]:
    """(median seconds of one forward, the output). With ``parallel``, ranks start together and
    each time is the slowest rank's."""
    times, out = [], None
    with torch.no_grad():
        for i in range(repeats + 1):  # the first: Triton autotuning, cuDNN plans
            if parallel:
                dist.barrier()
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = model(**inputs, return_dict=False)[0]
            torch.cuda.synchronize()
            elapsed = torch.tensor(time.perf_counter() - start, device=DEVICE)
            if parallel:
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            if i:
                times.append(elapsed.item())
    return sorted(times)[len(times) // 2], out.float()


@contextlib.contextmanager
def configured(model, variant: str, fused: bool = True):
    """cuDNN for every bf16 attention (also those an FP8 preset leaves stock: its bf16 edge
    blocks, cross-attention), then the variant's preset, if any. ``fused=False`` turns Wan's
    fused norm+RoPE+quantize kernel off, as context parallelism does."""
    model.set_attention_backend(BF16_BACKEND)
    try:
        if VARIANTS[variant] is None:
            yield
        else:
            with accel.apply(model, preset=VARIANTS[variant], backend="auto"):
                for processor in model.attn_processors.values():
                    if hasattr(processor, "fused_qk"):
                        processor.fused_qk = processor.fused_qk and fused
                yield
    finally:
        model.reset_attention_backend()


def unfused_outputs(model, inputs: dict, names: list[str]) -> dict:
    """variant -> one-GPU output of each FP8 variant without the fused kernel: the computation
    context parallelism splits (the fused kernel rounds differently, by about FP8's own error)."""
    outputs = {}
    for name in names:
        if VARIANTS[name] is None:
            continue
        try:
            with configured(model, name, fused=False), torch.no_grad():
                outputs[name] = model(**inputs, return_dict=False)[0].float()
        except Exception:  # its timed run says what went wrong
            pass
    return outputs


def run_variants(model, inputs: dict, names: list[str], repeats: int, parallel: bool) -> dict:
    """variant -> (seconds, output) or {"error": ...}."""
    rows = {}
    for name in names:
        try:
            with configured(model, name):
                rows[name] = time_forward(model, inputs, repeats, parallel)
        except Exception as exc:  # e.g. a backend this machine lacks: say so, go on
            rows[name] = _error(exc)
    return rows


def single_gpu(args) -> tuple[dict, dict, float]:
    """Rank 0 alone: variant -> row, outputs (variant, and "unfused/" + variant), weight fingerprint."""
    model, inputs = build_model(args.config, share=False)
    runs = run_variants(model, inputs, args.variants, args.repeats, parallel=False)
    ref = runs.get("bf16")
    rows = {}
    outputs = {f"unfused/{name}": out for name, out in unfused_outputs(model, inputs, args.variants).items()}
    for name, run in runs.items():
        if isinstance(run, dict):
            rows[name] = run
            continue
        rows[name] = {"s": run[0]}
        outputs[name] = run[1]
        if isinstance(ref, tuple):
            rows[name]["rel_l2_vs_bf16"] = rel_l2(run[1], ref[1])
    stamp = fingerprint(model)
    del model, inputs
    torch.cuda.empty_cache()
    return rows, outputs, stamp


def parallel_mode(args, mode: str, world: int, single_rows: dict, single_out: dict) -> tuple[dict, float]:
    """Every rank: one mode's rows (meaningful on rank 0, which holds the one-GPU outputs)."""
    from diffusers import ContextParallelConfig

    model, inputs = build_model(args.config, share=True)
    model.enable_parallelism(config=ContextParallelConfig(**degrees(mode, world)))
    runs = run_variants(model, inputs, args.variants, args.repeats, parallel=True)
    rows = {}
    for name, run in runs.items():
        if isinstance(run, dict):
            rows[name] = run
            continue
        seconds, out = run
        row = rows[name] = {"s": seconds}
        if "s" in single_rows.get(name, {}):
            row["speedup_vs_1gpu"] = single_rows[name]["s"] / seconds
            row["scaling_efficiency"] = row["speedup_vs_1gpu"] / world
        if isinstance(runs.get("bf16"), tuple) and name != "bf16":
            row["fp8_speedup_vs_bf16"] = runs["bf16"][0] / seconds
        if name in single_out:
            row["rel_l2_vs_1gpu_same"] = rel_l2(out, single_out[name])
        if f"unfused/{name}" in single_out:
            row["rel_l2_vs_1gpu_same_unfused"] = rel_l2(out, single_out[f"unfused/{name}"])
        if "bf16" in single_out:
            row["rel_l2_vs_1gpu_bf16"] = rel_l2(out, single_out["bf16"])
    stamp = fingerprint(model)
    del model, inputs
    torch.cuda.empty_cache()
    return rows, stamp


def print_rows(mode: str, rows: dict) -> None:
    for name, r in rows.items():
        if "error" in r:
            print(f"{mode:<8} {name:<13} ERROR {r['error']}", flush=True)
            continue
        cells = [f"{r['s']:8.4f} s"]
        for key, label in (("speedup_vs_1gpu", "x1gpu"), ("scaling_efficiency", "eff"),
                           ("fp8_speedup_vs_bf16", "xbf16"), ("rel_l2_vs_1gpu_same", "rel.L2 vs 1gpu"),
                           ("rel_l2_vs_1gpu_same_unfused", "(unfused)"),
                           ("rel_l2_vs_1gpu_bf16", "rel.L2 vs 1gpu bf16"), ("rel_l2_vs_bf16", "rel.L2 vs bf16")):
            if key in r:
                cells.append(f"{label} {r[key]:.4f}")
        print(f"{mode:<8} {name:<13} " + "  ".join(cells), flush=True)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    rank, world = init_distributed()
    import diffusers

    for mode in args.modes:
        degrees(mode, world)  # fail now, not after the one-GPU runs

    env = {"device": torch.cuda.get_device_name(), "gpus": world, "config": args.config,
           "date": datetime.date.today().isoformat(), "torch": torch.__version__,
           "diffusers": diffusers.__version__, "accel": accel.__version__}
    results, single_out = {}, {}
    if rank == 0:
        print(json.dumps(env), flush=True)
        results["1gpu"], single_out, stamp = single_gpu(args)
        print_rows("1gpu", results["1gpu"])
    dist.barrier()
    for mode in args.modes:
        rows, parallel_stamp = parallel_mode(args, mode, world, results.get("1gpu", {}), single_out)
        if rank == 0:
            results[mode] = rows
            print_rows(mode, rows)
            if abs(parallel_stamp - stamp) > 1e-6 * abs(stamp):  # then the rel. L2s compare different models
                warning = f"{mode}: weights differ from the one-GPU run ({parallel_stamp} vs {stamp})"
                results.setdefault("warnings", []).append(warning)
                print("WARNING", warning, flush=True)
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "results": results}, f, indent=1)
    dist.destroy_process_group()
    return results if rank == 0 else None


if __name__ == "__main__":
    main()
