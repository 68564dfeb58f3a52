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
