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
