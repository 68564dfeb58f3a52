"""`accel generate --cp ulysses|ring` (accel.pipelines.parallel) on the CPU: its refusals through
the command line's main(), and one real 2-process torchrun launch of the tiny Wan pipeline on gloo.

The refusals run in this one process with torchrun's variables set by hand: every check happens
after loading and before the process group is joined, so no other rank is waited for.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageSequence

from accel.cli import main


def _torchrun_env(monkeypatch, world_size: int, rank: int = 0) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))


def _generate(tmp_path, kind: str, *extra: str) -> int:
    out = tmp_path / ("clip.gif" if kind == "video" else "image.png")
    return main(["generate", kind, "--prompt", "a fox", "--out", str(out), *extra])


def _refused(capsys, tmp_path) -> str:
    """The CLI's error line, last on stderr with its --debug hint (no traceback of ours; a library's
    logging may come before it), and nothing written."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "(rerun with --debug for the traceback)"
    assert lines[-2].startswith("accel generate: error: ")
    assert list(tmp_path.iterdir()) == []
    return lines[-2]


@pytest.mark.parametrize("world_size", [None, "1"])
def test_cp_without_torchrun_says_how_to_launch(world_size, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if world_size is not None:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    assert _generate(tmp_path, "video", "--cp", "ulysses") == 1
    err = _refused(capsys, tmp_path)
    assert "torchrun --nproc-per-node N -m accel generate" in err
    assert f"WORLD_SIZE {world_size or 'unset'}" in err


def test_ulysses_needs_heads_divisible(monkeypatch, tmp_path, capsys):
    """The tiny Wan has 2 heads (48 tokens): 4 processes cannot share them."""
    _torchrun_env(monkeypatch, 4)
    assert _generate(tmp_path, "video", "--cp", "ulysses") == 1
    err = _refused(capsys, tmp_path)
    assert "4 does not divide 2" in err
    assert "use --nproc-per-node 2 " in err  # the one degree that divides the heads and tokens
    assert "ulysses_anything" in err and "--cp ring" in err


def test_ring_needs_tokens_divisible(monkeypatch, tmp_path, capsys):
    """64x64, 9 frames: 3 latent frames x 4 x 4 patches = 48 tokens, not a multiple of 5; at
    --height 80, 3 x 5 x 4 = 60 is."""
    _torchrun_env(monkeypatch, 5)
    assert _generate(tmp_path, "video", "--cp", "ring", "--preset", "speed") == 1
    err = _refused(capsys, tmp_path)
    assert "48 video tokens" in err and "do not split into 5" in err
    assert "use --nproc-per-node 2, 3, 4, 6 or 8" in err
    assert "--height 80 with 5 processes" in err


def test_flux_counts_image_and_text_tokens(monkeypatch, tmp_path, capsys):
    """The tiny Flux at 64x64 packs 16x16 = 256 image tokens; its T5 text has 512. Neither splits
    into 3, and no height fixes the text."""
    _torchrun_env(monkeypatch, 3)
    assert _generate(tmp_path, "image", "--cp", "ring", "--preset", "speed") == 1
    err = _refused(capsys, tmp_path)
    assert "256 image tokens and 512 text tokens" in err
    assert "use --nproc-per-node 2, 4 or 8" in err and "--height" not in err


def test_ring_on_cpu_needs_fp8_everywhere(monkeypatch, tmp_path, capsys):
    """The balanced preset keeps the edge blocks bf16; diffusers' CPU attention cannot ring them."""
    _torchrun_env(monkeypatch, 2)
    assert _generate(tmp_path, "video", "--cp", "ring") == 1
    err = _refused(capsys, tmp_path)
    assert "log-sum-exp" in err and "--preset speed" in err


def test_only_rank_0_reports_a_refusal(monkeypatch, tmp_path, capsys):
    _torchrun_env(monkeypatch, 4, rank=1)
    assert _generate(tmp_path, "video", "--cp", "ulysses") == 1
    captured = capsys.readouterr()
    assert "error" not in captured.err and captured.out == ""
    assert list(tmp_path.iterdir()) == []


def _frames(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.stack([np.asarray(f.convert("RGB"), dtype=np.int16) for f in ImageSequence.Iterator(im)])


# Started in every process of the launch (through PYTHONPATH): says who writes which file. All
# outputs go through export._atomic_write, so a rank writing anything shows here.
_SITECUSTOMIZE = """
import os
from accel.pipelines import export

_write = export._atomic_write

def _told(path, write):
    print(f"[rank {os.environ.get('RANK')} writes {path.name}]", flush=True)
    _write(path, write)

export._atomic_write = _told
"""


def test_torchrun_two_processes_ulysses_matches_one_process(tmp_path):
    """A real launch: 2 gloo processes, Ulysses over the tiny Wan's 2 heads. Ulysses gives each
    rank whole sequences, so the FP8 attention, and the video, are those of one process.

    --backend reference on both sides: under TRITON_INTERPRET=1 one process would take Wan's fused
    norm+RoPE Triton kernel, which context parallelism turns off (another FP8 rounding; on the
    tiny random model any change moves pixels by ~10 on average, FP8 against bf16 as much)."""
    args = ["generate", "video", "--prompt", "a fox", "--seed", "3", "--backend", "reference", "--out", "clip.gif"]
    single, parallel, hook = tmp_path / "single", tmp_path / "parallel", tmp_path / "hook"
    for folder in (single, parallel, hook):
        folder.mkdir()
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    assert main([*args[:-1], str(single / "clip.gif")]) == 0

    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "accel", *args, "--cp", "ulysses"],
        cwd=parallel, capture_output=True, text=True, timeout=180,
        env={**os.environ, "TRITON_INTERPRET": "1",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # rank 0 alone wrote (the output and its sidecar, nothing else) and printed
    writes = [line for line in run.stdout.splitlines() if " writes " in line]
    assert writes == ["[rank 0 writes clip.gif]", "[rank 0 writes clip.gif.json]"]
    assert sorted(p.name for p in parallel.iterdir()) == ["clip.gif", "clip.gif.json"]
    assert run.stdout.count("wrote clip.gif") == 1 and "on 2 processes (ulysses)" in run.stdout
    assert run.stdout.count("RANDOM weights") == 2  # rank 0's notice and note; rank 1 silent
    record = json.loads((parallel / "clip.gif.json").read_text())
    assert record["parallel"] == {"cp": "ulysses", "processes": 2}
    assert record["plan"]["fp8_attention_modules"] > 0

    ours, reference = _frames(parallel / "clip.gif"), _frames(single / "clip.gif")
    assert ours.shape == reference.shape == (9, 64, 64, 3)
    assert np.abs(ours - reference).max() <= 2  # measured 0
