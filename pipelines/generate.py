"""One generation run for the command line: sizes checked, FP8 applied, steps timed, output and
sidecar written. ``accel generate video|image`` is a thin layer over :func:`generate`."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import accel

from . import parallel
from .export import IMAGE_SUFFIXES, VIDEO_SUFFIXES, check_output_path, write_image, write_sidecar, write_video
from .loading import Loaded, load_pipeline
from .tiny import RANDOM_WEIGHTS_NOTICE

VIDEO_FPS = 16  # Wan's frame rate
#: Defaults for real checkpoints / for the embedded tiny pipeline (seconds on a CPU).
DEFAULTS = {
    "video": dict(height=480, width=832, frames=81, steps=50, guidance=5.0),
    "image": dict(height=1024, width=1024, frames=1, steps=28, guidance=3.5),
}
TINY_DEFAULTS = {
    "video": dict(height=64, width=64, frames=9, steps=4, guidance=5.0),
    "image": dict(height=64, width=64, frames=1, steps=4, guidance=3.5),
}


@dataclass
class GenerateSettings:
    kind: str  # "video" or "image"
    prompt: str
    out: Path
    model: str | None = None
    negative_prompt: str | None = None
    image: Path | None = None
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    preset: str = "balanced"
    plan: Path | None = None
    backend: str = "auto"
    dtype: str = "bf16"
    cpu_offload: bool = False
    compare: bool = False
    overwrite: bool = False
    cp: str | None = None  # context parallelism under torchrun: "ulysses" or "ring"
    notices: list[str] = field(default_factory=list)

    def resolve(self) -> None:
        """Fill defaults, round sizes the models cannot take, refuse what rounding would hide."""
        defaults = (TINY_DEFAULTS if self.model is None else DEFAULTS)[self.kind]
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        for key in ("height", "width"):
            value = getattr(self, key)
            if value < 16:
                raise ValueError(f"--{key} must be at least 16, got {value}")
            if value % 16:
                rounded = max(16, round(value / 16) * 16)
                self.notices.append(f"--{key} {value} is not a multiple of 16: using {rounded}")
                setattr(self, key, rounded)
        if self.kind == "video":
            if self.frames < 1:
                raise ValueError(f"--frames must be at least 1, got {self.frames}")
            if (self.frames - 1) % 4:
                rounded = (self.frames - 1 + 2) // 4 * 4 + 1
                self.notices.append(f"--frames {self.frames} is not 4k+1 (Wan's VAE packs 4 frames): using {rounded}")
                self.frames = rounded
        if self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        if self.image is not None and not Path(self.image).exists():
            raise FileNotFoundError(f"--image {self.image} does not exist")
        if self.plan is not None:
            accel.Plan.load(self.plan)  # a bad plan fails here, before loading a model


def _call_kwargs(s: GenerateSettings) -> dict:
    kwargs = dict(prompt=s.prompt, height=s.height, width=s.width, num_inference_steps=s.steps,
                  guidance_scale=s.guidance, generator=torch.Generator().manual_seed(s.seed))
    if s.kind == "video":
        kwargs.update(num_frames=s.frames, negative_prompt=s.negative_prompt, output_type="np")
        if s.image is not None:
            from PIL import Image

            kwargs["image"] = Image.open(s.image).convert("RGB")
    elif s.negative_prompt:
        kwargs.update(negative_prompt=s.negative_prompt, true_cfg_scale=max(s.guidance, 1.0))
    return kwargs


def _run(pipe, s: GenerateSettings) -> tuple[object, dict]:
    """Generate once; return the frames (video) or image, and timings."""
    step_ends: list[float] = []

    def on_step_end(pipeline, step, timestep, callback_kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        step_ends.append(time.perf_counter())
        return callback_kwargs

    start = time.perf_counter()
    result = pipe(**_call_kwargs(s), callback_on_step_end=on_step_end)
    total = time.perf_counter() - start
    steps = np.diff([start, *step_ends]).tolist()
    output = result.frames[0] if s.kind == "video" else result.images[0]
    return output, {"total_s": total, "step_s": steps,
                    "median_step_s": float(np.median(steps)) if steps else None}


def _fidelity(fp8, ref) -> dict:
    a = np.asarray(fp8, dtype=np.float64) / (255.0 if np.asarray(fp8).dtype == np.uint8 else 1.0)
    b = np.asarray(ref, dtype=np.float64) / (255.0 if np.asarray(ref).dtype == np.uint8 else 1.0)
    mse = float(np.mean((a - b) ** 2))
    return {"psnr_db": float("inf") if mse == 0 else 10 * np.log10(1.0 / mse),
            "rel_l2": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))}


def generate(s: GenerateSettings, log=print) -> dict:
    """Run the whole job; returns the sidecar record (also written next to the output). With
    ``s.cp``, this is one rank of a torchrun launch: every rank generates, rank 0 alone writes
    and prints."""
    s.resolve()
    check_output_path(s.out, VIDEO_SUFFIXES if s.kind == "video" else IMAGE_SUFFIXES, s.overwrite)
    launch = parallel.launch_from_environment(s.cp)
    lead = launch is None or launch.lead
    try:
        return _generate(s, launch, log if lead else _silent)
    finally:
        parallel.shutdown(launch)


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0: one summary per launch."""


def _generate(s: GenerateSettings, launch: parallel.Launch | None, log) -> dict:
    for notice in s.notices:
        log(f"notice: {notice}")
    t0 = time.perf_counter()
    loaded: Loaded = load_pipeline(s.kind, s.model, s.dtype, image_to_video=s.image is not None,
                                   cpu_offload=s.cpu_offload)
    load_s = time.perf_counter() - t0
    if loaded.random_weights:
        log(f"notice: {RANDOM_WEIGHTS_NOTICE}")
    if s.cpu_offload and loaded.device == "cpu":
        log("notice: --cpu-offload ignored: no CUDA GPU visible, everything already runs on the CPU")
    if loaded.device == "cpu":
        if loaded.random_weights:
            log("notice: no CUDA GPU visible: running on the CPU; FP8 attention is emulated there "
                "(the reference backend): correct, and fast enough for the tiny pipeline only")
        elif (s.preset != "off" or s.plan is not None) and s.backend != "reference":
            log("notice: no CUDA GPU visible: running bf16 on the CPU (FP8 attention needs a GPU with "
                "FP8 tensor cores; emulating it on a CPU, --backend reference, is slow for a real model)")
            s.preset, s.plan = "off", None
    if launch is not None:  # before accel.apply and the --compare run: see accel.pipelines.parallel
        parallel.check(loaded.pipe, launch, s, loaded.device)
        parallel.enable(loaded.pipe, launch, loaded.device)
    pipe = loaded.pipe
    pipe.set_progress_bar_config(desc="denoising", disable=launch is not None and not launch.lead)

    record: dict = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
                    "model": loaded.model, "random_weights": loaded.random_weights,
                    "device": torch.cuda.get_device_name() if loaded.device == "cuda" else platform.processor() or "cpu",
                    "versions": _versions(), "timings": {"load_s": load_s},
                    "parallel": None if launch is None else {"cp": launch.mode, "processes": launch.world_size}}
    reference = None
    if s.compare:
        log("bf16 run (stock attention) for --compare")
        reference, record["timings"]["bf16"] = _run(pipe, s)
    with accel.apply(pipe, preset=s.preset, plan=s.plan, backend=s.backend) as handle:
        record["plan"] = {"preset": None if s.plan else s.preset, "file": str(s.plan) if s.plan else None,
                          "backend": s.backend, "fp8_attention_modules": sum(handle.fp8_modules()),
                          **handle.plan.to_dict()}
        output, record["timings"]["fp8"] = _run(pipe, s)
    if reference is not None:
        record["compare"] = {"speedup": record["timings"]["bf16"]["total_s"] / record["timings"]["fp8"]["total_s"],
                             **_fidelity(output, reference)}
    record["output"] = str(s.out)
    if launch is None or launch.lead:  # every rank holds the whole output: one writes it
        if s.kind == "video":
            write_video(output, s.out, VIDEO_FPS)
        else:
            write_image(output, s.out)
        write_sidecar(s.out, record)
    _summary(record, log)
    return record


def _versions() -> dict:
    import diffusers

    versions = {"accel": accel.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        versions["triton"] = None
    return versions


def _summary(record: dict, log) -> None:
    t = record["timings"]["fp8"]
    line = f"wrote {record['output']}: {t['total_s']:.2f} s total, {t['median_step_s']:.3f} s/step (median)"
    if record["parallel"]:
        line += f" on {record['parallel']['processes']} processes ({record['parallel']['cp']})"
    if "compare" in record:
        c = record["compare"]
        line += (f"; bf16 {record['timings']['bf16']['total_s']:.2f} s, speedup {c['speedup']:.2f}x, "
                 f"PSNR {c['psnr_db']:.1f} dB, rel. L2 {c['rel_l2']:.4f} against bf16")
    log(line)
    if record["random_weights"]:
        log(f"note: {RANDOM_WEIGHTS_NOTICE}")


def _load_for_measuring(s: GenerateSettings, log) -> tuple[Loaded, str]:
    """Load for calibration or comparison; FP8 is measured with the emulation on a CPU."""
    for notice in s.notices:
        log(f"notice: {notice}")
    loaded = load_pipeline(s.kind, s.model, s.dtype, image_to_video=s.image is not None, cpu_offload=s.cpu_offload)
    if loaded.random_weights:
        log(f"notice: {RANDOM_WEIGHTS_NOTICE} Measurements on it say nothing about a real model.")
    return loaded, (s.backend if loaded.device == "cuda" else "reference")


def calibrate_to_file(s: GenerateSettings, budget: float | None, max_error: float | None, bins: int,
                      log=print) -> dict:
    """``accel calibrate``: one measured bf16 generation, then the plan JSON at ``s.out``."""
    s.resolve()
    if s.out.suffix.lower() != ".json":
        raise ValueError(f"--out must be a .json plan file (got {s.out.name!r})")
    if s.out.exists() and not s.overwrite:
        raise FileExistsError(f"{s.out} exists; pass --overwrite to replace it, or choose another --out")
    loaded, backend = _load_for_measuring(s, log)
    kwargs = _call_kwargs(s)
    plan, report = accel.calibrate(loaded.pipe, budget=budget, max_error=max_error, bins=bins, backend=backend,
                                   **kwargs)
    plan.save(s.out)
    log(report.table())
    log(f"wrote {s.out}: FP8 self-attention except {len(report.kept_bf16)} of {len(report.errors)} "
        f"(block, step) cells kept in bf16; use it with --plan {s.out} or accel.apply(pipe, plan=...)")
    return {"plan": plan.to_dict(), "kept_bf16": report.kept_bf16}


def compare_report(s: GenerateSettings, plot: Path | None, json_out: Path | None, log=print) -> dict:
    """``accel compare``: bf16 against a preset or plan, same seed; table, optional PNG and JSON."""
    import json

    s.resolve()
    for path in (plot, json_out):
        if path is not None and path.exists() and not s.overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    loaded, backend = _load_for_measuring(s, log)
    kwargs = _call_kwargs(s)
    kwargs.pop("generator")
    kwargs.pop("output_type", None)
    report = accel.compare(loaded.pipe, preset=s.preset, plan=s.plan, backend=backend, seed=s.seed, **kwargs)
    log(report.table())
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()
                if k not in ("out", "compare", "overwrite")}
    record = {"settings": settings, "model": loaded.model, "versions": _versions(), "speedup": report.speedup,
              **asdict(report),
              "per_block": {str(b): {"rel_l2": e, "cosine": c} for b, (e, c) in report.per_block.items()}}
    if plot is not None:
        report.plot(plot)
        log(f"wrote {plot}")
    if json_out is not None:
        json_out.write_text(json.dumps(record, indent=2, default=str))
        log(f"wrote {json_out}")
    return record
