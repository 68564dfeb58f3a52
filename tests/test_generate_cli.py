"""`accel generate` end to end on the built-in tiny pipelines (CPU), and its error paths."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from accel.cli import main

SIDECAR_KEYS = {"settings", "model", "random_weights", "device", "versions", "timings", "plan", "output"}


def _sidecar(path):
    return json.loads(path.with_name(path.name + ".json").read_text())


def test_video_default_writes_playable_mp4(tmp_path, capsys):
    out = tmp_path / "fox.mp4"
    assert main(["generate", "video", "--prompt", "a fox in the snow", "--out", str(out)]) == 0
    import imageio.v2 as imageio

    reader = imageio.get_reader(out)
    frames = [f for f in reader]
    assert len(frames) == 9 and frames[0].shape == (64, 64, 3)
    record = _sidecar(out)
    assert SIDECAR_KEYS <= set(record)
    assert record["random_weights"] is True and record["settings"]["frames"] == 9
    assert record["plan"]["preset"] == "balanced" and record["plan"]["fp8_attention_modules"] > 0
    assert len(record["timings"]["fp8"]["step_s"]) == 4
    assert "RANDOM weights" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_video_animated_formats(tmp_path, suffix):
    out = tmp_path / f"clip{suffix}"
    assert main(["generate", "video", "--prompt", "a cat", "--frames", "5", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.n_frames == 5 and im.size == (64, 64)


def test_image_default_png(tmp_path):
    out = tmp_path / "fox.png"
    assert main(["generate", "image", "--prompt", "a red fox", "--width", "96", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (96, 64)
    assert _sidecar(out)["settings"]["width"] == 96


def test_compare_reports_speedup_and_fidelity(tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["generate", "image", "--prompt", "a fox", "--compare", "--out", str(out)]) == 0
    record = _sidecar(out)
    assert record["compare"]["speedup"] > 0 and np.isfinite(record["compare"]["psnr_db"])
    assert "bf16" in record["timings"]
    assert "speedup" in capsys.readouterr().out


def test_image_to_video_with_tiny_pipeline(tmp_path):
    first = tmp_path / "first.png"
    Image.fromarray((np.random.rand(64, 64, 3) * 255).astype(np.uint8)).save(first)
    out = tmp_path / "i2v.gif"
    assert main(["generate", "video", "--prompt", "a fox", "--image", str(first), "--out", str(out)]) == 0
    assert _sidecar(out)["settings"]["image"] == str(first)


def test_rounding_notices(tmp_path, capsys):
    out = tmp_path / "r.gif"
    assert main(["generate", "video", "--prompt", "x", "--height", "70", "--frames", "7", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not a multiple of 16: using 64" in text and "not 4k+1" in text
    with Image.open(out) as im:
        assert im.n_frames == 9


def test_local_folder_loads_safetensors(tmp_path):
    from accel.pipelines.tiny import tiny_flux_pipeline

    folder = tmp_path / "tiny-flux"
    tiny_flux_pipeline().save_pretrained(folder, safe_serialization=True)
    out = tmp_path / "local.png"
    assert main(["generate", "image", "--model", str(folder), "--prompt", "a fox", "--steps", "2",
                 "--height", "64", "--width", "64", "--out", str(out)]) == 0
    assert _sidecar(out)["random_weights"] is False


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "keep.png"
    out.write_bytes(b"user's file")
    assert main(["generate", "image", "--prompt", "x", "--out", str(out)]) == 1
    assert out.read_bytes() == b"user's file"
    assert "--overwrite" in capsys.readouterr().err
    assert main(["generate", "image", "--prompt", "x", "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"user's file"


@pytest.mark.parametrize("argv, message", [
    (["generate", "video", "--prompt", "x", "--out", "clip.avi"], "--out must end in one of"),
    (["generate", "video", "--prompt", "x", "--image", "/nonexistent.png"], "does not exist"),
    (["generate", "image", "--prompt", "x", "--height", "8"], "at least 16"),
    (["generate", "image", "--prompt", "x", "--model", "/nonexistent/folder"], "could not"),
    (["generate", "video", "--prompt", "x", "--out", "/nonexistent/dir/a.mp4"], "does not exist"),
])
def test_errors_are_one_clear_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_not_a_pipeline_folder(tmp_path, capsys):
    assert main(["generate", "image", "--prompt", "x", "--model", str(tmp_path)]) == 1
    assert "not a diffusers pipeline folder" in capsys.readouterr().err


def test_hub_id_without_network(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "x.png"
    assert main(["generate", "image", "--model", "someone/missing-model", "--prompt", "x", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--model DIR" in err or "could not load" in err


def test_debug_shows_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "accel", "--debug", "generate", "image", "--prompt", "x",
                             "--height", "8"], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["generate", "video", "--help"],
                                  ["generate", "image", "--help"], ["bench", "--help"], ["info", "--help"],
                                  ["calibrate", "--help"], ["calibrate", "video", "--help"]])
def test_help_everywhere_with_examples(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "example" in capsys.readouterr().out


def test_wan22_two_experts_from_local_folder(tmp_path):
    """A Wan 2.2-style pipeline (transformer + transformer_2, boundary_ratio) saved as safetensors:
    both experts get FP8 processors."""
    from diffusers import WanPipeline

    from accel.pipelines.tiny import tiny_wan_pipeline

    base = tiny_wan_pipeline()
    second = tiny_wan_pipeline(seed=1).transformer
    pipe = WanPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                       scheduler=base.scheduler, transformer=base.transformer, transformer_2=second,
                       boundary_ratio=0.875)
    folder = tmp_path / "tiny-wan22"
    pipe.save_pretrained(folder, safe_serialization=True)
    out = tmp_path / "w22.gif"
    assert main(["generate", "video", "--model", str(folder), "--prompt", "a fox", "--steps", "4",
                 "--height", "64", "--width", "64", "--frames", "5", "--preset", "speed", "--backend", "reference",
                 "--out", str(out)]) == 0
    record = _sidecar(out)
    assert record["plan"]["fp8_attention_modules"] == 8  # 4 self-attentions in each expert


def test_plan_file(tmp_path):
    import accel

    plan_path = tmp_path / "plan.json"
    accel.Plan((accel.Rule(accel.FP8Config("head")),)).save(plan_path)
    out = tmp_path / "p.png"
    assert main(["generate", "image", "--prompt", "x", "--plan", str(plan_path), "--out", str(out)]) == 0
    record = _sidecar(out)
    assert record["plan"]["file"] == str(plan_path) and record["plan"]["rules"][0]["fp8"]["granularity"] == "head"
    assert record["plan"]["fp8_attention_modules"] == 5  # 2 double + 3 single blocks


def test_bad_plan_file_fails_before_loading(tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    plan_path.write_text('{"format": "accel-plan", "version": 1, "rules": [{"fp8": {"granularity": "x"}}]}')
    assert main(["generate", "image", "--prompt", "x", "--plan", str(plan_path), "--out", str(tmp_path / "a.png")]) == 1
    assert "rules[0].fp8.granularity" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU path")
def test_real_model_on_cpu_runs_bf16_with_notice(tmp_path, capsys):
    from accel.pipelines.tiny import tiny_flux_pipeline

    folder = tmp_path / "flux"
    tiny_flux_pipeline().save_pretrained(folder, safe_serialization=True)
    out = tmp_path / "cpu.png"
    assert main(["generate", "image", "--model", str(folder), "--prompt", "x", "--height", "64", "--width", "64",
                 "--steps", "2", "--cpu-offload", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "running bf16 on the CPU" in text and "--cpu-offload ignored" in text
    assert _sidecar(out)["plan"]["fp8_attention_modules"] == 0


def test_calibrate_writes_a_plan_generate_accepts(tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    assert main(["calibrate", "video", "--prompt", "a fox", "--budget", "0.25", "--bins", "2",
                 "--out", str(plan_path)]) == 0
    import accel

    plan = accel.Plan.load(plan_path)
    assert plan.name == "calibrated" and len(plan.rules) >= 2  # FP8 everywhere + kept cells
    assert "cells kept in bf16" in capsys.readouterr().out
    out = tmp_path / "v.gif"
    assert main(["generate", "video", "--prompt", "a fox", "--plan", str(plan_path), "--out", str(out)]) == 0
    assert main(["calibrate", "video", "--prompt", "a fox", "--out", str(plan_path)]) == 1  # no overwrite
    assert main(["calibrate", "image", "--prompt", "a fox", "--out", str(tmp_path / "p.txt")]) == 1
