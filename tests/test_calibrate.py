"""Calibration on a tiny Wan pipeline: it keeps exactly the cells where a test injects error."""

import pytest
import torch

import accel
from accel.calibration import calibrate
from accel.pipelines.tiny import tiny_flux_pipeline, tiny_wan_pipeline
from accel.plan import FP8Config, Plan

CALL = dict(prompt="a fox", negative_prompt="blur", height=32, width=32, num_frames=5, num_inference_steps=10,
            guidance_scale=5.0, output_type="latent")


def _noisy_in(block_to_break):
    """An FP8 attention (the reference emulation) that is badly wrong in one block only; the
    returned state says which block is running."""
    state = {}

    def fp8_fn(q, k, v, numerics):
        out = accel.fp8_sdpa(q, k, v, layout="bshd", backend="reference", granularity=numerics.granularity)
        if state.get("block") == block_to_break:
            out = out + 0.5 * out.abs().mean() * torch.randn_like(out)
        return out

    return state, fp8_fn


def test_calibration_keeps_the_injected_block():
    pipe = tiny_wan_pipeline()
    # the measuring processors call fp8_fn(q, k, v, numerics); tag calls by block through a hook
    blocks = pipe.transformer.blocks
    state, fp8_fn = _noisy_in(2)
    hooks = [blocks[i].register_forward_pre_hook(lambda m, a, i=i: state.__setitem__("block", i))
             for i in range(len(blocks))]
    try:
        plan, report = calibrate(pipe, budget=0.25, bins=2, backend="reference", fp8_fn=fp8_fn, **CALL)
    finally:
        for h in hooks:
            h.remove()
    assert report.n_blocks == 4 and len(report.errors) == 8  # 4 blocks x 2 step bins
    assert sorted(report.kept_bf16) == [(2, 0), (2, 1)]  # exactly the broken block, every step
    assert plan.schedule("self", 2, 4).at(0.5) is None
    assert all(plan.schedule("self", b, 4).at(0.5) == FP8Config("head", True, True) for b in (0, 1, 3))
    assert type(pipe.transformer.attn_processors["blocks.0.attn1.processor"]).__name__ == "WanAttnProcessor"
    assert "bf16" in report.table()


def test_max_error_threshold_and_json(tmp_path):
    pipe = tiny_wan_pipeline()
    plan, report = calibrate(pipe, budget=None, max_error=0.0, bins=2, backend="reference", **CALL)
    assert len(report.kept_bf16) == len(report.errors)  # every cell has some FP8 error > 0
    assert all(0 < e < 0.2 for e in report.errors.values())
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan
    with accel.apply(pipe, plan=tmp_path / "plan.json"):
        assert not any(isinstance(p, accel.WanFP8AttnProcessor) for p in pipe.transformer.attn_processors.values())


def test_flux_calibration_runs():
    pipe = tiny_flux_pipeline()
    plan, report = calibrate(pipe, budget=0.2, backend="reference", prompt="a fox", height=32, width=32,
                             num_inference_steps=4, output_type="latent")
    assert report.n_blocks == 5 and len(report.kept_bf16) == int(0.2 * len(report.errors))


def test_bad_budget():
    with pytest.raises(ValueError, match="exactly one of"):
        calibrate(tiny_wan_pipeline(), budget=None, max_error=None)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        calibrate(tiny_wan_pipeline(), budget=2.0)
