"""Calibration: measure each attention's FP8 error on a real generation, keep the most sensitive
(block, step range) cells in bf16 within a budget, and write the result as a :class:`Plan`.

The generation itself runs in bf16: every self-attention call also runs FP8 on the same inputs,
and the relative L2 error of the FP8 output against the bf16 one is recorded per block and per
bin of the denoising progress. Nothing is stored but those numbers, so real sizes fit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .measure import measure_attention
from .plan import FP8Config, Plan, Rule


@dataclass
class CalibrationReport:
    """Mean FP8 error per (block, step bin) of the self-attentions, and what was kept in bf16."""

    bins: int
    n_blocks: int
    errors: dict[tuple[int, int], float] = field(default_factory=dict)  # (block, bin) -> mean rel. L2
    cosines: dict[tuple[int, int], float] = field(default_factory=dict)
    kept_bf16: list[tuple[int, int]] = field(default_factory=list)

    def table(self, top: int = 10) -> str:
        worst = sorted(self.errors.items(), key=lambda kv: -kv[1])[:top]
        lines = [f"{'block':>5} {'steps':>11} {'rel. L2':>8} {'cosine':>8}  decision"]
        for (block, b), err in worst:
            lo, hi = b / self.bins, (b + 1) / self.bins
            decision = "bf16" if (block, b) in self.kept_bf16 else "fp8"
            lines.append(f"{block:>5} {lo:>5.2f}-{hi:<5.2f} {err:>8.4f} {self.cosines[(block, b)]:>8.5f}  {decision}")
        return "\n".join(lines)


def calibrate(
    pipe,
    *,
    budget: float | None = 0.1,
    max_error: float | None = None,
    bins: int = 10,
    fp8: FP8Config = FP8Config("head", smooth_k=True, smooth_v=True),
    backend: str = "auto",
    fp8_fn: Callable | None = None,
    **call_kwargs,
) -> tuple[Plan, CalibrationReport]:
    """Run ``pipe(**call_kwargs)`` once (bf16) measuring every self-attention's FP8 error, and
    return a plan that runs FP8 (``fp8`` numerics) everywhere except the worst (block, step bin)
    cells: the worst ``budget`` fraction of them, or (with ``max_error``) every cell whose mean
    relative L2 error exceeds it. ``fp8`` defaults to ``balanced``'s numerics (one scale per head,
    smooth_k, smooth_v: as close to bf16 as per-token scales on the models measured, and served by
    the faster of our kernel and FA3's, ``backend="auto"``). ``fp8_fn(q, k, v, numerics)``
    replaces the FP8 attention measured (tests inject errors with it).

    Example::

        plan, report = accel.calibrate(pipe, prompt="a fox in the snow", num_inference_steps=20)
        plan.save("plan.json"); print(report.table())
    """
    if (budget is None) == (max_error is None):
        raise ValueError("give exactly one of budget (a bf16 fraction in [0, 1]) or max_error")
    if budget is not None and not 0 <= budget <= 1:
        raise ValueError(f"budget is a fraction of attention cells kept in bf16, in [0, 1]; got {budget}")
    with measure_attention(pipe, Plan((Rule(fp8),)), backend, forward_fp8=False, bins=bins,
                           fp8_fn=fp8_fn) as recorder, torch.no_grad():
        pipe(**call_kwargs)
    report = CalibrationReport(bins, recorder.n_blocks)
    for cell, (err, cos) in recorder.means().items():
        report.errors[cell] = err
        report.cosines[cell] = cos
    ranked = sorted(report.errors, key=lambda c: -report.errors[c])
    if max_error is not None:
        report.kept_bf16 = [c for c in ranked if report.errors[c] > max_error]
    else:
        report.kept_bf16 = ranked[: math.floor(budget * len(ranked) + 1e-9)]
    return _plan_from(report, fp8), report


def _plan_from(report: CalibrationReport, fp8: FP8Config) -> Plan:
    """FP8 self-attention everywhere, then one bf16 rule per block per run of adjacent kept bins."""
    rules = [Rule(fp8)]
    by_block: dict[int, list[int]] = defaultdict(list)
    for block, b in report.kept_bf16:
        by_block[block].append(b)
    for block in sorted(by_block):
        runs, bins = [], sorted(by_block[block])
        for b in bins:
            if runs and runs[-1][1] == b:
                runs[-1][1] = b + 1
            else:
                runs.append([b, b + 1])
        rules += [Rule(None, blocks=(block,), steps=(lo / report.bins, hi / report.bins)) for lo, hi in runs]
    return Plan(tuple(rules), "calibrated")
