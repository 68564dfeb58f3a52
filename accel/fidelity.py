"""Fidelity report: the same seed in bf16 and with an FP8 plan; per-block attention error,
final-latent error, PSNR and SSIM of the decoded output, and time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .integration import apply
from .measure import measure_attention
from .plan import Plan, resolve_plan
from .testing import rel_l2


@dataclass
class FidelityReport:
    plan: str
    seconds_bf16: float
    seconds_fp8: float
    latent_rel_l2: float
    psnr_db: float
    ssim: float
    #: block -> (mean rel. L2, mean cosine) of FP8 self-attention outputs against bf16 on the same inputs
    per_block: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        return self.seconds_bf16 / self.seconds_fp8

    def table(self) -> str:
        lines = [f"plan {self.plan}: {self.seconds_fp8:.2f} s against bf16 {self.seconds_bf16:.2f} s "
                 f"(speedup {self.speedup:.2f}x)",
                 f"final latent rel. L2 {self.latent_rel_l2:.4f}   PSNR {self.psnr_db:.2f} dB   SSIM {self.ssim:.4f}",
                 f"{'block':>5} {'attn rel. L2':>13} {'attn cosine':>12}"]
        lines += [f"{b:>5} {e:>13.4f} {c:>12.6f}" for b, (e, c) in sorted(self.per_block.items())]
        return "\n".join(lines)

    def plot(self, path: str | Path) -> None:
        """PNG: per-block attention error (rel. L2) and 1 - cosine against block index."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            import matplotlib.ticker
        except ImportError as exc:
            raise RuntimeError("the plot needs matplotlib: pip install 'dit-accel[report]'") from exc
        blocks = sorted(self.per_block)
        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
        ax.plot(blocks, [self.per_block[b][0] for b in blocks], "o-", label="rel. L2")
        ax.plot(blocks, [1 - self.per_block[b][1] for b in blocks], "s--", label="1 - cosine")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("block")
        ax.set_ylabel("FP8 attention error vs bf16")
        ax.set_yscale("log")
        ax.set_title(f"plan {self.plan}: PSNR {self.psnr_db:.1f} dB, speedup {self.speedup:.2f}x")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def _frames_tensor(output) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] from a pipeline's np / PIL output."""
    array = np.asarray(output if not isinstance(output, list) else [np.asarray(o) for o in output])
    if array.dtype == np.uint8:
        array = array / 255.0
    array = array.reshape(-1, *array.shape[-3:])  # video (F, H, W, 3) or images (N, H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(array)).float().permute(0, 3, 1, 2).clamp(0, 1)


def _run(pipe, seed: int, call_kwargs: dict):
    latents = {}

    def keep_last(pipeline, step, timestep, callback_kwargs):
        latents["last"] = callback_kwargs["latents"].float().cpu()
        return callback_kwargs

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        result = pipe(**call_kwargs, generator=torch.Generator().manual_seed(seed), output_type="np",
                      callback_on_step_end=keep_last)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    output = result.frames[0] if hasattr(result, "frames") else result.images
    return seconds, latents["last"], _frames_tensor(output)


def compare(pipe, preset: str = "balanced", plan: Plan | str | Path | None = None, backend: str = "auto",
            seed: int = 0, **call_kwargs) -> FidelityReport:
    """Generate with the same seed in bf16 and under ``plan`` (or ``preset``); measure the
    difference. A third, measured FP8 run gives the per-block attention error."""
    try:
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
    except ImportError as exc:
        raise RuntimeError("the fidelity report needs torchmetrics: pip install 'dit-accel[report]'") from exc
    resolved = resolve_plan(preset, plan)
    seconds_bf16, latent_bf16, frames_bf16 = _run(pipe, seed, call_kwargs)
    with apply(pipe, plan=resolved, backend=backend):
        seconds_fp8, latent_fp8, frames_fp8 = _run(pipe, seed, call_kwargs)
    with measure_attention(pipe, resolved, backend, forward_fp8=True) as recorder:
        _run(pipe, seed, call_kwargs)
    per_block = {block: means for (block, _), means in recorder.means().items()}
    return FidelityReport(
        plan=resolved.name or "custom",
        seconds_bf16=seconds_bf16, seconds_fp8=seconds_fp8,
        latent_rel_l2=rel_l2(latent_fp8, latent_bf16),
        psnr_db=float(peak_signal_noise_ratio(frames_fp8, frames_bf16, data_range=1.0)),
        ssim=float(structural_similarity_index_measure(frames_fp8, frames_bf16, data_range=1.0)),
        per_block=per_block,
    )
