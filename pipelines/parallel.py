"""``accel generate --cp ulysses|ring`` under torchrun: one process per GPU, each holding the whole
pipeline, each transformer's attention split over all of them by diffusers' context parallelism
(``transformer.enable_parallelism(config=ContextParallelConfig(...))``). FP8 attention follows it
through :mod:`accel.parallel`; this module only launches, checks the sizes and switches it on.

Order matters: :func:`launch_from_environment` before loading (it picks this rank's GPU, where the
pipeline then lands), :func:`enable` after loading and before ``accel.apply`` (``apply`` copies each
stock processor's ``_parallel_config`` and attention backend into the FP8 processor that replaces
it; the other way round, the stock processors that ``apply`` keeps to restore would never learn
of the parallelism), :func:`shutdown` at the end.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

CP_MODES = ("ulysses", "ring")
#: Degrees named in error messages: processes on one host.
_MAX_SUGGESTED_DEGREE = 8


class ParallelSetupError(ValueError):
    """``--cp`` cannot run as launched or with these sizes; the message says what to change.
    Every rank raises the same one; ``rank`` lets the command line print it once."""

    def __init__(self, message: str, rank: int = 0):
        super().__init__(message)
        self.rank = rank


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun launch."""

    mode: str  # "ulysses" or "ring"
    world_size: int
    rank: int
    local_rank: int

    @property
    def lead(self) -> bool:
        """Rank 0 alone writes the output and prints."""
        return self.rank == 0


def launch_from_environment(mode: str | None, env=os.environ) -> Launch | None:
    """None without ``--cp``; else this process's place from torchrun's WORLD_SIZE, RANK and
    LOCAL_RANK (and its GPU made the current one, so that ``pipe.to("cuda")`` lands there)."""
    if mode is None:
        return None
    if mode not in CP_MODES:
        raise ValueError(f"--cp must be one of {CP_MODES}, got {mode!r}")
    world_size = int(env.get("WORLD_SIZE", "1"))
    if world_size < 2:
        raise ParallelSetupError(
            f"--cp {mode} splits attention over several processes, one per GPU, and this is a single "
            f"process (WORLD_SIZE {env.get('WORLD_SIZE', 'unset')}): launch it with "
            f"`torchrun --nproc-per-node N -m accel generate ...` (N >= 2), or drop --cp")
    rank = int(env.get("RANK", 0))
    local_rank = int(env.get("LOCAL_RANK", rank))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ParallelSetupError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are "
                                     "visible: --nproc-per-node must not exceed the GPU count", rank)
        torch.cuda.set_device(local_rank)
    return Launch(mode, world_size, rank, local_rank)


def transformers_of(pipe) -> list[torch.nn.Module]:
    """The pipeline's transformers: Wan 2.2 has two experts (``transformer_2``)."""
    return [t for t in (getattr(pipe, name, None) for name in ("transformer", "transformer_2")) if t is not None]


def token_counts(pipe, kind: str, height: int, width: int, frames: int | None) -> dict[str, int]:
    """The sequences diffusers' context-parallel plan splits evenly over the ranks, by name:
    Wan's video tokens (latent frames x patches; its text is not split), Flux's packed image
    tokens and its T5 text tokens (``max_sequence_length``, 512 unless passed)."""
    if kind == "video":
        p_t, p_h, p_w = pipe.transformer.config.patch_size
        latent_frames = (frames - 1) // pipe.vae_scale_factor_temporal + 1
        spatial = pipe.vae_scale_factor_spatial
        return {"video": (latent_frames // p_t) * (height // spatial // p_h) * (width // spatial // p_w)}
    import inspect

    packed = pipe.vae_scale_factor * 2  # the VAE's downscale, then 2x2 latent patches per token
    text = inspect.signature(pipe.__call__).parameters["max_sequence_length"].default
    return {"image": (height // packed) * (width // packed), "text": text}


def _degrees(*counts: int) -> list[int]:
    """Degrees from 2 to _MAX_SUGGESTED_DEGREE that divide every count."""
    common = math.gcd(*counts)
    return [d for d in range(2, _MAX_SUGGESTED_DEGREE + 1) if common % d == 0]


def _degree_advice(counts: list[int]) -> str:
    """Which --nproc-per-node would split every count evenly."""
    degrees = [str(d) for d in _degrees(*counts)]
    if not degrees:
        return f"no --nproc-per-node from 2 to {_MAX_SUGGESTED_DEGREE} splits them"
    return "use --nproc-per-node " + (degrees[0] if len(degrees) == 1 else
                                      f"{', '.join(degrees[:-1])} or {degrees[-1]}")


def _height_that_splits(pipe, s, degree: int) -> int | None:
    """The nearest --height (a multiple of 16, same width and frames) whose sequences all split
    into ``degree``; None if none within 1024 pixels."""
    for step in range(1, 65):
        for height in (s.height + 16 * step, s.height - 16 * step):
            if height >= 16 and all(n % degree == 0
                                    for n in token_counts(pipe, s.kind, height, s.width, s.frames).values()):
                return height
    return None


def check(pipe, launch: Launch, s, device: str) -> None:
    """Refuse, before any collective, what diffusers' context parallelism cannot split evenly:
    Ulysses splits the attention heads over the ranks, and both modes split the sequences. ``s``
    is the resolved :class:`accel.pipelines.generate.GenerateSettings`."""
    n, mode, rank = launch.world_size, launch.mode, launch.rank
    heads = pipe.transformer.config.num_attention_heads
    counts = token_counts(pipe, s.kind, s.height, s.width, s.frames)
    if mode == "ulysses" and heads % n:
        raise ParallelSetupError(
            f"--cp ulysses over {n} processes: Ulysses gives each process a share of the {heads} attention "
            f"heads, and {n} does not divide {heads}; {_degree_advice([heads, *counts.values()])} "
            f"(or use --cp ring). diffusers' ContextParallelConfig(ulysses_anything=True) takes uneven "
            f"head counts from Python; the command line keeps to even splits.", rank)
    uneven = {name: count for name, count in counts.items() if count % n}
    if uneven:
        what = " and ".join(f"{count} {name} tokens" for name, count in uneven.items())
        advice = _degree_advice([heads, *counts.values()] if mode == "ulysses" else list(counts.values()))
        height = _height_that_splits(pipe, s, n)
        if height is not None:
            advice += f", or --height {height} with {n} processes"
        raise ParallelSetupError(
            f"--cp {mode} over {n} processes splits the sequence evenly, and the {what} "
            f"(at {s.width}x{s.height}{f', {s.frames} frames' if s.kind == 'video' else ''}) do not split "
            f"into {n}: {advice}", rank)
    if s.cpu_offload and device == "cuda":
        raise ParallelSetupError("--cpu-offload cannot be combined with --cp: every process holds the whole "
                                 "pipeline on its own GPU", rank)
    if mode == "ring" and device == "cuda" and s.dtype == "fp32":
        raise ParallelSetupError("--cp ring runs the attentions left in bf16 through cuDNN, which takes bf16 or "
                                 "fp16: use --dtype bf16 or fp16", rank)
    if mode == "ring" and device != "cuda":
        _check_ring_on_cpu(pipe, s, sum(counts.values()) // n, rank)


def _check_ring_on_cpu(pipe, s, keys_per_shard: int, rank: int) -> None:
    """Ring attention merges partial results by their log-sum-exp. accel's FP8 op returns one;
    of diffusers' attention backends only CUDA ones do (its CPU ``native`` backend refuses
    ``return_lse``), so on the CPU every self-attention must run FP8 at every step."""
    from accel.plan import resolve_plan

    if s.compare or _stock_self_attention(pipe, resolve_plan(s.preset, s.plan), keys_per_shard):
        raise ParallelSetupError(
            "--cp ring on the CPU needs every self-attention in FP8 at every step"
            f"{' and no --compare' if s.compare else ''}: ring attention merges partial results by "
            "their log-sum-exp, which accel's FP8 attention returns and diffusers' CPU attention does not "
            "(on GPUs the attentions a plan keeps in bf16 run cuDNN, which does). Use --preset speed, "
            "or --cp ulysses", rank)


def _stock_self_attention(pipe, plan, keys_per_shard: int) -> bool:
    """Whether ``plan`` leaves any self-attention of the pipeline to stock attention at any step."""
    from accel.integration import family_of

    for transformer in transformers_of(pipe):
        family = family_of(transformer)
        for name in transformer.attn_processors:
            where = family.locate(name, transformer)
            if where is None:
                continue
            block, n_blocks, slots = where
            for kind in slots.values():
                if kind != "self":
                    continue
                # a config's min_keys sends short calls to stock attention; a ring call sees one shard
                if any(config is None or (config.min_keys or 0) > keys_per_shard
                       for *_, config in plan.schedule(kind, block, n_blocks).pieces):
                    return True
    return False


def enable(pipe, launch: Launch, device: str) -> None:
    """Join the process group (NCCL on GPUs, gloo on the CPU) and split every transformer's
    attention over it. Call after :func:`check` and before ``accel.apply``."""
    from diffusers import ContextParallelConfig
    from diffusers.utils import logging as diffusers_logging

    if not dist.is_initialized():
        if device == "cuda":
            dist.init_process_group("nccl", device_id=torch.device("cuda", launch.local_rank))
        else:
            dist.init_process_group("gloo")
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # both calls warn "experimental" on every rank
    try:
        for transformer in transformers_of(pipe):
            if launch.mode == "ring" and device == "cuda":
                # diffusers' default `native` backend returns no log-sum-exp, so it cannot ring:
                # the attentions a plan keeps in bf16 (and the stock ones) run cuDNN instead
                transformer.set_attention_backend("_native_cudnn")
            config = ContextParallelConfig(**{f"{launch.mode}_degree": launch.world_size})
            with _cpu_device_count():
                transformer.enable_parallelism(config=config)
    finally:
        diffusers_logging.set_verbosity(verbosity)


@contextlib.contextmanager
def _cpu_device_count():
    """diffusers 0.42.1 computes ``rank % torch.accelerator.device_count()``, which divides by
    zero on a machine without accelerators: count the CPU as one device meanwhile (the mesh's
    device type comes from ``torch._C._get_accelerator()``, "cpu", so it is a gloo mesh)."""
    original = torch.accelerator.device_count
    if original() > 0:
        yield
        return
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def shutdown(launch: Launch | None) -> None:
    """Leave the process group, if this launch joined one."""
    if launch is not None and dist.is_initialized():
        dist.destroy_process_group()
