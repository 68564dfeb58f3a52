import json
import subprocess
import sys

from accel.cli import main


def test_info_text(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch:" in out and "backends:" in out and "reference  available" in out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["backends"]) == {"triton", "fa3", "torch", "reference"}
    assert isinstance(report["gpus"], list)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "info" in capsys.readouterr().out


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "accel", "info"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "backends:" in result.stdout


def test_bench_pipeline_on_tiny_configs(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    assert main(["bench", "pipeline", "--configs", "tiny-wan,tiny-flux", "--repeats", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    for name in ("tiny-wan", "tiny-flux"):
        rows = results[name]
        assert {"native", "accel-speed", "accel-balanced", "accel-quality"} <= set(rows)
        assert rows["native"]["rel_l2_vs_native"] == 0
        assert 0 < rows["accel-speed"]["rel_l2_vs_native"] < 0.05  # FP8 changed the output, a little


def test_bench_refuses_what_needs_a_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert main(["bench", "pipeline", "--configs", "wan-14b-720p"]) == 1
    assert "need a CUDA GPU" in capsys.readouterr().err
    try:
        main(["bench", "attention", "--quick"])
    except SystemExit as exc:
        assert "needs a CUDA GPU" in str(exc.code)
