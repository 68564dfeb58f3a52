"""The ``accel`` command line: generate, bench, info."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__

EXAMPLES = {
    "video": """examples:
  accel generate video --prompt "a fox in the snow"          # built-in tiny random pipeline, CPU ok
  accel generate video --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --prompt "a fox" --out fox.mp4
  accel generate video --model ./Wan2.1-I2V-14B-480P-Diffusers --image first.png --prompt "..." --compare
  torchrun --nproc-per-node 2 -m accel generate video --model ./Wan2.1-T2V-14B-Diffusers --prompt "a fox" --cp ulysses""",
    "image": """examples:
  accel generate image --prompt "a red fox"                  # built-in tiny random pipeline, CPU ok
  accel generate image --model black-forest-labs/FLUX.1-dev --prompt "a fox" --preset speed --out fox.png""",
    "calibrate": """examples:
  accel calibrate video --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --prompt "a fox" --steps 20 --out plan.json
  accel calibrate video --prompt "a fox" --budget 0.2     # the code path, on the tiny pipeline
  accel generate video --model ... --plan plan.json""",
    "compare": """examples:
  accel compare video --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --prompt "a fox" --preset speed --plot err.png
  accel compare image --prompt "a fox" --plan plan.json --json report.json   # tiny pipeline, CPU ok""",
    "bench": """examples:
  accel bench attention --quick
  accel bench attention --methods sdpa-cudnn-bf16,accel-triton-head
  accel bench pipeline --configs wan-1.3b-480p,flux-dev-1024
  accel bench pipeline --configs tiny-wan      # the code path, on a CPU""",
}


def _settings(args: argparse.Namespace, out: Path):
    """The generation settings shared by generate, calibrate and compare."""
    from .pipelines.generate import GenerateSettings

    return GenerateSettings(
        kind=args.kind, prompt=args.prompt, out=out, model=args.model, negative_prompt=args.negative_prompt,
        image=getattr(args, "image", None), height=args.height, width=args.width,
        frames=getattr(args, "frames", None), steps=args.steps, guidance=args.guidance, seed=args.seed,
        preset=getattr(args, "preset", "balanced"), plan=getattr(args, "plan", None), backend=args.backend,
        dtype=args.dtype, cpu_offload=args.cpu_offload, compare=getattr(args, "compare", False),
        overwrite=args.overwrite, cp=getattr(args, "cp", None),
    )


def _generate(args: argparse.Namespace) -> int:
    from .pipelines.generate import generate

    out = args.out or Path("accel-video.mp4" if args.kind == "video" else "accel-image.png")
    generate(_settings(args, Path(out)))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .pipelines.generate import calibrate_to_file

    budget = None if args.max_error is not None else args.budget
    calibrate_to_file(_settings(args, Path(args.out)), budget, args.max_error, args.bins)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .pipelines.generate import compare_report

    compare_report(_settings(args, Path("unused")), args.plot, args.json)
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.what == "attention":
        from .benchmarking.attention import main as run
    else:
        from .benchmarking.pipeline import main as run
    run(args.rest)
    return 0


def _info(args: argparse.Namespace) -> int:
    from .info import environment_report, format_report

    report = environment_report()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _add_generation_args(p: argparse.ArgumentParser, kind: str) -> None:
    """What a generation needs, shared by `generate` and `calibrate`."""
    p.add_argument("--prompt", required=True)
    p.add_argument("--model", help="local diffusers folder or hub id (default: built-in tiny random pipeline)")
    p.add_argument("--negative-prompt")
    if kind == "video":
        p.add_argument("--image", type=Path, help="first frame: image-to-video (needs an I2V checkpoint)")
        p.add_argument("--frames", type=int, help="number of frames, 4k+1 (default 81; tiny: 9)")
    p.add_argument("--height", type=int, help="multiple of 16")
    p.add_argument("--width", type=int, help="multiple of 16")
    p.add_argument("--steps", type=int, help="denoising steps")
    p.add_argument("--guidance", type=float, help="guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", help="FP8 backend: auto, triton, fa3, torch, reference")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="model dtype")
    p.add_argument("--cpu-offload", action="store_true", help="keep idle components on the CPU (accelerate)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _add_plan_args(p: argparse.ArgumentParser) -> None:
    from .plan import PRESETS

    p.add_argument("--preset", default="balanced", choices=list(PRESETS), help="FP8 preset (default balanced)")
    p.add_argument("--plan", type=Path, help="plan JSON (accel.Plan): which attention runs FP8 where and when; "
                   "overrides --preset")


def _add_generate(sub, kind: str) -> None:
    p = sub.add_parser(kind, help=f"generate {'a video (Wan 2.1/2.2)' if kind == 'video' else 'an image (FLUX)'}",
                       description=f"Generate {'a video with a Wan 2.1/2.2' if kind == 'video' else 'an image with a FLUX'} "
                       "pipeline, attention in FP8. Without --model: a built-in tiny random pipeline (offline).",
                       epilog=EXAMPLES[kind], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_generation_args(p, kind)
    _add_plan_args(p)
    p.add_argument("--compare", action="store_true", help="also run bf16; print speedup and fidelity")
    p.add_argument("--out", type=Path, help=f"output file ({'.mp4, .gif, .webp' if kind == 'video' else '.png, .jpg, .webp'})")
    p.add_argument("--cp", choices=["ulysses", "ring"],
                   help="split attention over GPUs with diffusers' context parallelism; launch with "
                   "`torchrun --nproc-per-node N -m accel generate ...` (rank 0 writes the output)")
    p.set_defaults(func=_generate, kind=kind)


def _add_compare(sub, kind: str) -> None:
    p = sub.add_parser(kind, help=f"compare a {'Wan' if kind == 'video' else 'FLUX'} pipeline in bf16 and FP8",
                       description="Same seed in bf16 and with a preset or plan: per-block attention error, "
                       "final-latent rel. L2, PSNR and SSIM of the output, time.",
                       epilog=EXAMPLES["compare"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_generation_args(p, kind)
    _add_plan_args(p)
    p.add_argument("--plot", type=Path, help="PNG of the per-block attention error")
    p.add_argument("--json", type=Path, help="write the report here")
    p.set_defaults(func=_compare, kind=kind)


def _add_calibrate(sub, kind: str) -> None:
    p = sub.add_parser(kind, help=f"calibrate a {'Wan' if kind == 'video' else 'FLUX'} pipeline",
                       description="Run one bf16 generation, measure every self-attention's FP8 error per "
                       "block and step range, keep the worst in bf16 within a budget, write a plan JSON.",
                       epilog=EXAMPLES["calibrate"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_generation_args(p, kind)
    p.add_argument("--budget", type=float, default=0.1, help="fraction of (block, step) cells kept bf16 (default 0.1)")
    p.add_argument("--max-error", type=float, help="instead: keep bf16 every cell whose FP8 rel. L2 error exceeds this")
    p.add_argument("--bins", type=int, default=10, help="step ranges the schedule is cut into (default 10)")
    p.add_argument("--out", type=Path, default=Path("plan.json"), help="plan file to write (default plan.json)")
    p.set_defaults(func=_calibrate, kind=kind)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accel",
        description="FP8 attention for diffusion transformers (Wan, FLUX) on NVIDIA Hopper GPUs.",
        epilog='examples:\n  accel generate video --prompt "a fox in the snow"\n  accel info',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"accel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = sub.add_parser("generate", help="generate a video or an image",
                         description="Generate a video (Wan) or an image (FLUX) with FP8 attention.",
                         epilog=EXAMPLES["video"] + "\n" + EXAMPLES["image"].replace("examples:\n", ""),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    gen_sub = gen.add_subparsers(dest="kind", metavar="KIND", required=True)
    _add_generate(gen_sub, "video")
    _add_generate(gen_sub, "image")

    cal = sub.add_parser("calibrate", help="measure FP8 error per block and step; write a plan",
                         description="Calibrate a pipeline: a plan JSON that keeps the most FP8-sensitive "
                         "attention blocks and steps in bf16.",
                         epilog=EXAMPLES["calibrate"], formatter_class=argparse.RawDescriptionHelpFormatter)
    cal_sub = cal.add_subparsers(dest="kind", metavar="KIND", required=True)
    _add_calibrate(cal_sub, "video")
    _add_calibrate(cal_sub, "image")

    cmp = sub.add_parser("compare", help="fidelity report: bf16 against a preset or plan, same seed",
                         description="Fidelity report: bf16 against a preset or plan with the same seed.",
                         epilog=EXAMPLES["compare"], formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp_sub = cmp.add_subparsers(dest="kind", metavar="KIND", required=True)
    _add_compare(cmp_sub, "video")
    _add_compare(cmp_sub, "image")

    bench = sub.add_parser("bench", help="benchmarks (need a CUDA GPU)",
                           description="Run a benchmark; arguments after the name go to it (--help there).",
                           epilog=EXAMPLES["bench"], formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("what", choices=["attention", "pipeline"],
                       help="attention: FP8 backends against bf16 SDPA and FA3; pipeline: one transformer "
                       "forward of real-size Wan/FLUX with random weights, per backend and preset")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(func=_bench)

    info = sub.add_parser(
        "info", help="GPU, compute capability, FP8 support, available backends and versions",
        description="Print the GPU, its compute capability and FP8 support, which FP8 attention "
        "backends can run here (and why not), and package versions.",
        epilog="examples:\n  accel info\n  accel info --json > env.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_info)
    return parser


def _told_by_rank_0(exc: Exception) -> bool:
    """A --cp check that every rank of a torchrun launch failed alike: rank 0 alone reports it."""
    from .pipelines.parallel import ParallelSetupError

    return isinstance(exc, ParallelSetupError) and exc.rank != 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # no raw tracebacks unless asked for
        if args.debug:
            raise
        if _told_by_rank_0(exc):
            return 1
        print(f"accel {args.command}: error: {exc}\n(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
