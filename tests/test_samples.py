import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_attention_sample_runs():
    result = subprocess.run([sys.executable, str(ROOT / "samples" / "attention.py")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    error = float(result.stdout.rsplit(" ", 1)[-1])
    assert 0 < error < 0.1


def test_generation_samples_run_on_tiny_models(tmp_path):
    for script, out in (("generate_video.py", "v.mp4"), ("generate_image.py", "i.png")):
        result = subprocess.run([sys.executable, str(ROOT / "samples" / script), "--prompt", "a fox",
                                 "--out", str(tmp_path / out)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / out).stat().st_size > 0
