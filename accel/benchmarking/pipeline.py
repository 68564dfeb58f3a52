"""Pipeline benchmark: one transformer forward of real-size Wan and FLUX architectures with random
weights (no download), under diffusers' attention backends and accel's presets, in one process.

    accel bench pipeline                          # every real-size config (needs a large GPU)
    accel bench pipeline --configs wan-1.3b-480p,flux-dev-1024
    accel bench pipeline --configs tiny-wan --repeats 2   # the code path on a CPU
    accel bench pipeline --configs wan-1.3b-480p --steps 4  # plus a 4-step sampling loop
    accel bench pipeline --configs wan-14b-720p --profile   # plus where each variant's time goes

Per config and variant: median forward time (CUDA events on a GPU), peak GPU memory, and the
output's relative L2 against diffusers' default (``native``) on the same inputs.

With ``--steps N`` (Wan configs), each variant also runs WanPipeline's sampling loop on the bare
transformer: N steps of UniPC (flow sigmas, shift 3.0, as at 480p), classifier-free guidance 5.0
(two forwards a step), the same seeded latent and text embeddings for every variant. Per variant:
the loop's time (one run, after an untimed 1-step loop), the latent's relative L2 against
``native`` after each step and at the end and, for accel's plans, the mean cosine and rel. L2 of
each block's FP8 self-attention against bf16 on the same inputs, from a separate untimed loop.
The JSON keeps these under ``results[config]["loop"][variant]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import platform
import time
from statistics import median_high

import torch

import accel
from accel.backends.env import fa3_reason
from accel.info import package_version
from accel.measure import measure_attention
from accel.plan import PRESETS, Plan, resolve_plan
from accel.testing import rel_l2

from .baselines import sageattention_reason, torchao_reason
from .profile import format_breakdown, time_breakdown

WAN_14B = dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40, text_dim=4096,
               freq_dim=256, in_channels=16, out_channels=16, patch_size=(1, 2, 2), cross_attn_norm=True,
               eps=1e-6)
WAN_1_3B = {**WAN_14B, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30}
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                guidance_embeds=True, axes_dims_rope=(16, 56, 56))
TINY_WAN = dict(num_attention_heads=2, attention_head_dim=32, ffn_dim=64, num_layers=4, text_dim=32, freq_dim=32,
                in_channels=16, out_channels=16, patch_size=(1, 2, 2), cross_attn_norm=True, rope_max_seq_len=64)
TINY_FLUX = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))

#: name -> (family, transformer config, latent size): Wan (frames, height, width) of the latent
#: video; Flux (height, width) of the packed latent image, i.e. pixels / 16.
CONFIGS = {
    "wan-14b-720p": ("wan", WAN_14B, (21, 90, 160)),  # 81 frames 1280x720: 75,600 tokens
    "wan-14b-480p": ("wan", WAN_14B, (21, 60, 104)),  # 81 frames 832x480: 32,760 tokens
    "wan-1.3b-480p": ("wan", WAN_1_3B, (21, 60, 104)),
    "flux-dev-1024": ("flux", FLUX_DEV, (64, 64)),  # 4,096 image + 512 text tokens
    "flux-dev-2048": ("flux", FLUX_DEV, (128, 128)),  # 16,384 + 512
    # one block of each (plus the embeddings and output head, a small share): per-block timing
    "wan-14b-720p-1block": ("wan", {**WAN_14B, "num_layers": 1}, (21, 90, 160)),
    "flux-dev-1024-1block": ("flux", {**FLUX_DEV, "num_layers": 1, "num_single_layers": 1}, (64, 64)),
    "tiny-wan": ("wan", TINY_WAN, (3, 8, 8)),
    "tiny-flux": ("flux", TINY_FLUX, (6, 6)),
}
TEXT_TOKENS = 512  # prompt embedding length of the real configs (Wan's and FLUX-dev's T5)
REAL_CONFIGS = [name for name in CONFIGS if not name.startswith("tiny") and "1block" not in name]
#: WanPipeline's scheduler at 480p (Wan's model cards: flow_shift 3.0 for 480p, 5.0 for 720p)
WAN_SCHEDULER = dict(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                     flow_shift=3.0)
GUIDANCE = 5.0


def build(name: str, device: str, dtype: torch.dtype):
    """Random-weight transformer and matching random inputs (same compute as the real model)."""
    from diffusers import FluxTransformer2DModel, WanTransformer3DModel

    family, config, latent = CONFIGS[name]
    g = torch.Generator(device=device).manual_seed(0)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # initialise in the target dtype: no fp32 copy of 14B weights
        try:
            model = (WanTransformer3DModel if family == "wan" else FluxTransformer2DModel)(**config)
        finally:
            torch.set_default_dtype(previous)
    model = model.to(device).eval()  # already in dtype: built under set_default_dtype
    text = TEXT_TOKENS if family == "wan" or not name.startswith("tiny") else 10
    if family == "wan":
        inputs = dict(
            hidden_states=torch.randn(1, config["in_channels"], *latent, generator=g, device=device, dtype=dtype),
            timestep=torch.tensor([500], device=device),
            encoder_hidden_states=torch.randn(1, text, config["text_dim"], generator=g, device=device, dtype=dtype),
        )
    else:
        h, w = latent
        ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(h * 1.0), torch.arange(w * 1.0),
                                         indexing="ij"), -1).reshape(-1, 3).to(device)
        inputs = dict(
            hidden_states=torch.randn(1, h * w, config["in_channels"], generator=g, device=device, dtype=dtype),
            encoder_hidden_states=torch.randn(1, text, config["joint_attention_dim"], generator=g, device=device,
                                              dtype=dtype),
            pooled_projections=torch.randn(1, config["pooled_projection_dim"], generator=g, device=device,
                                           dtype=dtype),
            timestep=torch.tensor([0.5], device=device), img_ids=ids, txt_ids=torch.zeros(text, 3, device=device),
        )
        if config.get("guidance_embeds"):
            inputs["guidance"] = torch.tensor([3.5], device=device)
    return model, inputs


def variants(device: str, fa3: bool | None = None, torchao: bool | None = None, sage: bool | None = None) -> dict:
    """name -> how to set the model up: ("backend", diffusers backend), ("preset", preset, fp8
    backend) or ("baseline", name) for :mod:`accel.benchmarking.baselines`. ``fa3``: whether
    FlashAttention-3 is importable, ``torchao``: whether torchao's low-precision attention can
    run, ``sage``: whether SageAttention is importable (None: look)."""
    v = {"native": ("backend", "native")}
    fa3 = fa3_reason() is None if fa3 is None else fa3
    if device == "cuda":
        v["_native_cudnn"] = ("backend", "_native_cudnn")
    if fa3:
        v["fa3-bf16"] = ("baseline", "fa3-bf16")
        v["torchao-style"] = ("baseline", "torchao-style")  # plain-torch per-head quantization + FA3 FP8
    if device == "cuda" and (torchao if torchao is not None else torchao_reason() is None):
        v["torchao"] = ("baseline", "torchao")  # torchao's apply_low_precision_attention itself
    if device == "cuda" and (sage if sage is not None else sageattention_reason() is None):
        v["sageattn"] = ("baseline", "sageattn")  # SageAttention's sageattn for every attention
    fp8_backend = "auto" if device == "cuda" else "reference"
    v.update({f"accel-{p}": ("preset", p, fp8_backend) for p in ("speed", "balanced", "quality")})
    if fa3 and device == "cuda":  # `auto` gives FA3 the per-head calls our Gluon kernel leaves: ours alone too
        v["accel-speed-triton"] = ("preset", "speed", "triton")
    if device == "cuda":  # would balanced gain from per-token scales? The same plan with them
        v["balanced-token-scales"] = ("preset", BALANCED_TOKEN_SCALES, fp8_backend)
        # Is the key-count threshold right inside a model, where the host's time per call can
        # overlap the GPU's? speed in FP8 at every key count, on our kernels and on `auto`'s.
        v["speed-all-keys"] = ("preset", SPEED_ALL_KEYS, fp8_backend)
        v["speed-all-keys-triton"] = ("preset", SPEED_ALL_KEYS, "triton")
    return v


def _preset_with(preset: str, name: str, **fp8_changes) -> Plan:
    """A preset's plan with ``fp8_changes`` applied to every FP8 rule's numerics."""
    return Plan(tuple(dataclasses.replace(rule, fp8=dataclasses.replace(rule.fp8, **fp8_changes))
                      if rule.fp8 is not None else rule for rule in PRESETS[preset].rules), name)


#: ``balanced`` with per-token scales (our kernel only: FA3 has one scale per head): keeps
#: measuring whether the finer scales, which cost 15-20% of the kernel, buy fidelity.
BALANCED_TOKEN_SCALES = _preset_with("balanced", "balanced-token-scales", granularity="token")
#: ``speed`` without its key-count threshold (CUDA_MIN_KEYS): FP8 for every attention.
SPEED_ALL_KEYS = _preset_with("speed", "speed-all-keys", min_keys=0)


def _plan(preset_or_plan) -> Plan:
    return preset_or_plan if isinstance(preset_or_plan, Plan) else resolve_plan(preset_or_plan, None)


@contextlib.contextmanager
def configured(model, how):
    """``model`` set up as ``how`` says (see :func:`variants`) for the block; yields what to call:
    ``model``, or the wrapper a baseline puts around it (torchao's)."""
    if how[0] == "backend":
        model.set_attention_backend(how[1])
        try:
            yield model
        finally:
            model.reset_attention_backend()
    elif how[0] == "baseline":
        from . import baselines

        if how[1] == "torchao":
            with baselines.torchao_low_precision(model) as wrapped:
                yield wrapped
        else:
            around = {"fa3-bf16": baselines.fa3_bf16, "torchao-style": baselines.torchao_style,
                      "sageattn": baselines.sageattn_int8}[how[1]]
            with around(model):
                yield model
    else:
        with accel.apply(model, plan=_plan(how[1]), backend=how[2]):
            yield model


def timed(fn, device: str):
    """(seconds, fn()): CUDA events on a GPU, perf_counter on the CPU."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3, result
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def forward_times(model, inputs, repeats: int, device: str) -> list[float]:
    """Seconds of ``repeats`` forwards, after one untimed warm-up."""
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            elapsed, _ = timed(lambda: model(**inputs, return_dict=False), device)
            if i:
                times.append(elapsed)
    return times


def loop_inputs(inputs: dict, device: str) -> dict:
    """Seeded start of the sampling loop, the same for every variant: an fp32 latent (as
    WanPipeline keeps it) and conditional / unconditional text embeddings like ``inputs``'."""
    g = torch.Generator(device=device).manual_seed(1)
    text = inputs["encoder_hidden_states"]
    return dict(latents=torch.randn(inputs["hidden_states"].shape, generator=g, device=device),
                cond=torch.randn(text.shape, generator=g, device=device, dtype=text.dtype),
                uncond=torch.randn(text.shape, generator=g, device=device, dtype=text.dtype))


def denoise(model, start: dict, steps: int) -> list[torch.Tensor]:
    """WanPipeline's denoising loop on a bare Wan transformer (batch 1, CFG: two forwards a step,
    the scheduler's timesteps passed as WanPipeline does). Returns the latent after each step."""
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(**WAN_SCHEDULER)
    scheduler.set_timesteps(steps, device=start["latents"].device)
    scheduler.set_begin_index(0)
    latents, trajectory = start["latents"], []
    with torch.no_grad():
        for t in scheduler.timesteps:
            x, timestep = latents.to(start["cond"].dtype), t.expand(latents.shape[0])
            cond, uncond = (model(hidden_states=x, timestep=timestep, encoder_hidden_states=text,
                                  return_dict=False)[0] for text in (start["cond"], start["uncond"]))
            noise = uncond + GUIDANCE * (cond - uncond)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            trajectory.append(latents)
    return trajectory


def attention_error(model, how, start: dict, steps: int) -> dict:
    """Per block, the mean rel. L2 and cosine of the plan's FP8 self-attentions against bf16 on
    the same inputs, over one untimed loop that continues with FP8 (as the timed one does);
    min and mean cosine over the blocks that ran FP8."""
    with measure_attention(model, _plan(how[1]), how[2], forward_fp8=True, bins=1) as recorder:
        denoise(model, start, steps)
    per_block = {block: {"rel_l2": e, "cosine": c} for (block, _), (e, c) in sorted(recorder.means().items())}
    cosines = [b["cosine"] for b in per_block.values()]
    return {"attn_cos_min": min(cosines, default=None),
            "attn_cos_mean": sum(cosines) / len(cosines) if cosines else None, "attn_per_block": per_block}


def loop_row(model, how, start: dict, steps: int, device: str, native: list | None) -> tuple[dict, list]:
    """One variant's loop: time (after an untimed 1-step loop: compilation, autotuning), latent
    rel. L2 against ``native``'s trajectory (None: this is native), attention error for plans."""
    with configured(model, how) as run:
        denoise(run, start, 1)
        seconds, trajectory = timed(lambda: denoise(run, start, steps), device)
    native = native or trajectory
    per_step = [rel_l2(x, ref) for x, ref in zip(trajectory, native)]
    row = {"s": seconds, "latent_rel_l2_vs_native": per_step[-1], "latent_rel_l2_per_step": per_step}
    if how[0] == "preset":
        row.update(attention_error(model, how, start, steps))
    return row, trajectory


def _error(exc: Exception) -> dict:
    """A backend this machine lacks (or any failure): one line, so the other variants go on."""
    return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"}


def selected_variants(device: str, only: list[str] | None = None) -> dict:
    """:func:`variants`, restricted to the names in ``only`` and run in its order (None: all, in
    their usual order). The order is the user's so that a run can check for order effects."""
    every = variants(device)
    if only is None:
        return every
    with_every_package = variants(device, fa3=True, torchao=True, sage=True)
    unknown = [n for n in only if n not in with_every_package]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown} on this machine; choose from {', '.join(every)}")
    for n in only:
        if n not in every:  # a baseline whose package (FA3, torchao, SageAttention) is missing here
            print(f"skipping {n}: its package is not installed here (accel info, benchmarks/baseline_wheels.sh)")
    return {n: every[n] for n in only if n in every}


def bench_config(name: str, repeats: int, device: str, steps: int = 0, profile: bool = False,
                 only: list[str] | None = None, rounds: int = 1) -> dict:
    """variant -> forward row; with ``steps`` on a Wan config, also "loop": variant -> loop row.
    ``profile``: each row also gets "profile", one more forward's time per category
    (:mod:`accel.benchmarking.profile`). ``only``: these variants alone (see :func:`selected_variants`).
    ``rounds`` > 1: the forwards are timed again in that many rounds over all variants, each round
    in a rotated order, and "s" is the median of every round's times: a variant's place in the
    order then no longer biases it (the same code path measured 0.171 s first and 0.181-0.192 s
    later in a run on Flux 1024x1024, H200)."""
    chosen = selected_variants(device, only)
    model, inputs = build(name, device, torch.bfloat16)
    with torch.no_grad():
        reference = model(**inputs, return_dict=False)[0].float()
    rows = {}
    for variant, how in chosen.items():
        try:
            with configured(model, how) as run:
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                times = forward_times(run, inputs, repeats, device)
                with torch.no_grad():
                    out = run(**inputs, return_dict=False)[0]
                    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
                    split = time_breakdown(lambda: run(**inputs, return_dict=False), device) if profile else None
            rows[variant] = {"s": median_high(times), "times": times, "rel_l2_vs_native": rel_l2(out, reference),
                             "peak_gib": peak}
            if split is not None:
                rows[variant]["profile"] = split
        except Exception as exc:  # a backend this machine lacks: say so, keep going
            rows[variant] = _error(exc)
    ran = [v for v in chosen if "error" not in rows[v]]
    for r in range(1, rounds) if ran else ():
        for variant in ran[r % len(ran):] + ran[:r % len(ran)]:
            with configured(model, chosen[variant]) as run:
                rows[variant]["times"] += forward_times(run, inputs, repeats, device)
    for variant in ran:
        rows[variant]["s"] = median_high(rows[variant]["times"])
    if steps and CONFIGS[name][0] == "wan":
        rows["loop"] = bench_loop(model, inputs, steps, device, chosen)
    del model, inputs
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def bench_loop(model, inputs: dict, steps: int, device: str, chosen: dict) -> dict:
    """variant -> loop row (see :func:`loop_row`) for the ``chosen`` variants; ``native`` runs
    first in any case: it is the reference."""
    start, native, rows = loop_inputs(inputs, device), None, {}
    for variant, how in {"native": ("backend", "native"), **chosen}.items():
        try:
            rows[variant], trajectory = loop_row(model, how, start, steps, device, native)
            if variant == "native":
                native = trajectory
        except Exception as exc:
            rows[variant] = _error(exc)
        if native is None:  # without native's latents there is nothing to compare against
            break
    return rows


def _base_seconds(rows: dict) -> float | None:
    """The time speedups are against: ``_native_cudnn`` where it ran, else ``native``."""
    return rows.get("_native_cudnn", {}).get("s") or rows.get("native", {}).get("s")


def print_forward(name: str, rows: dict) -> None:
    base = _base_seconds(rows)
    for variant, r in rows.items():
        if variant == "loop":
            continue
        if "error" in r:
            print(f"{name:<15} {variant:<22} ERROR {r['error']}", flush=True)
        else:
            mem = f"{r['peak_gib']:6.1f} GiB" if r["peak_gib"] is not None else ""
            speedup = f"x{base / r['s']:5.2f}" if base else ""
            print(f"{name:<15} {variant:<22} {r['s']:9.4f} s  {speedup}  "
                  f"rel.L2 {r['rel_l2_vs_native']:.4f}  {mem}", flush=True)
            if "profile" in r:
                print(f"{'':<15} {'':<22} profile {format_breakdown(r['profile'])}", flush=True)


def print_loop(name: str, rows: dict, steps: int) -> None:
    """Second table: the sampling loop's time, speedup, final-latent error, attention cosines."""
    base = _base_seconds(rows)
    print(f"\n{name}: {steps}-step loop, CFG {GUIDANCE}  (variant, s, speedup, latent rel.L2, "
          f"attn cosine min / mean)", flush=True)
    for variant, r in rows.items():
        if "error" in r:
            print(f"{name:<15} {variant:<22} ERROR {r['error']}", flush=True)
            continue
        cos = (f"{r['attn_cos_min']:.6f} / {r['attn_cos_mean']:.6f}" if r.get("attn_cos_min") is not None
               else "-")
        speedup = f"x{base / r['s']:5.2f}" if base else ""
        print(f"{name:<15} {variant:<22} {r['s']:9.3f} s  {speedup}  "
              f"latent rel.L2 {r['latent_rel_l2_vs_native']:.4f}  cos {cos}", flush=True)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="accel bench pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(REAL_CONFIGS), help=f"comma-separated from {', '.join(CONFIGS)}")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per variant and round (median)")
    p.add_argument("--rounds", type=int, default=1,
                   help="time every variant again in this many rounds, each in a rotated order (order effects)")
    p.add_argument("--steps", type=int, default=0,
                   help="also run an N-step sampling loop (CFG, UniPC) per variant on Wan configs; 0: off")
    p.add_argument("--profile", action="store_true",
                   help="also profile one forward per variant: time in attention, quantization, GEMMs, the rest")
    p.add_argument("--variants", default=None,
                   help="comma-separated subset of the variants (default: all this machine can run)")
    p.add_argument("--json", help="write all results here")
    args = p.parse_args(argv)
    only = args.variants.split(",") if args.variants else None
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if args.rounds < 1 or args.repeats < 1:
        raise ValueError(f"--rounds and --repeats must be >= 1, got {args.rounds} and {args.repeats}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and any(not n.startswith("tiny") for n in names):
        raise ValueError("real-size configs need a CUDA GPU; on the CPU use --configs tiny-wan,tiny-flux")
    selected_variants(device, only)  # an unknown name fails before any model is built
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
           "date": datetime.date.today().isoformat(), "torch": torch.__version__, "accel": accel.__version__,
           **{package: package_version(package) for package in ("triton", "diffusers", "torchao")}}
    print(json.dumps(env))
    results = {}
    for name in names:
        results[name] = rows = bench_config(name, args.repeats, device, args.steps, args.profile, only, args.rounds)
        print_forward(name, rows)
        if "loop" in rows:
            print_loop(name, rows["loop"], args.steps)
        elif args.steps:
            print(f"{name}: no loop (--steps runs on Wan configs only)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
