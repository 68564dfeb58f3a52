"""The fidelity report (`accel.compare`, `accel compare`) on the tiny pipelines."""

import json

import pytest

pytest.importorskip("torchmetrics")

import accel  # noqa: E402
from accel.cli import main  # noqa: E402
from accel.pipelines.tiny import tiny_flux_pipeline, tiny_wan_pipeline  # noqa: E402


def test_compare_wan_quality_plan(tmp_path):
    report = accel.compare(tiny_wan_pipeline(), preset="quality", backend="reference", prompt="a fox",
                           height=32, width=32, num_frames=5, num_inference_steps=6)
    assert report.plan == "quality" and report.seconds_bf16 > 0 and report.seconds_fp8 > 0
    assert 0 < report.latent_rel_l2 < 0.05 and 20 < report.psnr_db < 100 and 0.9 < report.ssim <= 1
    assert set(report.per_block) == {1, 2}  # quality keeps the edge blocks of 4 in bf16
    assert all(0 < e < 0.1 and c > 0.99 for e, c in report.per_block.values())
    report.plot(tmp_path / "err.png")
    assert (tmp_path / "err.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_off_measures_nothing():
    """Preset off: no FP8 attention to measure; the two runs differ only by the CPU's run-to-run
    noise (multithreaded reductions: ~1e-3 on this tiny model)."""
    report = accel.compare(tiny_flux_pipeline(), preset="off", prompt="a fox", height=32, width=32,
                           num_inference_steps=3)
    assert report.per_block == {} and report.latent_rel_l2 < 0.01


def test_compare_cli(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["compare", "image", "--prompt", "a fox", "--preset", "speed", "--backend", "reference",
                 "--plot", str(tmp_path / "p.png"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert {"psnr_db", "ssim", "latent_rel_l2", "per_block", "speedup", "versions"} <= set(record)
    assert len(record["per_block"]) == 5
    assert "PSNR" in capsys.readouterr().out
    assert main(["compare", "image", "--prompt", "a fox", "--json", str(out)]) == 1  # kept, not overwritten
