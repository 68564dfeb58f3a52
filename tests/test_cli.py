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


def test_info_says_why_the_gluon_kernel_does_not_serve():
    from accel.info import _gluon_status, format_report

    status = _gluon_status(0)  # CI: no GPU, and a triton the Gluon kernel was not written for
    assert status.startswith("no (") and "Triton kernel serves" in status
    gpu = {"index": 0, "name": "H200", "compute capability": "9.0", "memory GiB": 139.8, "fp8": "yes",
           "gluon kernel": status}
    assert format_report({"gpus": [gpu]}).endswith(f"FP8: yes, Gluon kernel: {status}")


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "info" in capsys.readouterr().out


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "accel", "info"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "backends:" in result.stdout


def test_a_checkout_on_sys_path_leaves_hugging_face_kernels_its_name():
    """Run from the repository root, Python finds our kernels/ folder as a top-level ``kernels``
    package; where Hugging Face's ``kernels`` is installed (transformers and diffusers import it),
    that name must still be theirs, and ``accel.kernels`` ours."""
    import importlib.machinery
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != root]
    theirs = importlib.machinery.PathFinder.find_spec("kernels", elsewhere)
    probe = "import kernels, accel.kernels; print(kernels.__file__); print(accel.kernels.__file__)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    top_level, ours = (Path(line).resolve() for line in result.stdout.split())
    assert ours == root / "kernels" / "__init__.py"
    assert top_level == (Path(theirs.origin).resolve() if theirs is not None else ours)


def test_bench_pipeline_on_tiny_configs(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    assert main(["bench", "pipeline", "--configs", "tiny-wan,tiny-flux", "--repeats", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    for name in ("tiny-wan", "tiny-flux"):
        rows = results[name]
        assert {"native", "accel-speed", "accel-balanced", "accel-quality"} <= set(rows)
        assert rows["native"]["rel_l2_vs_native"] == 0
        assert 0 < rows["accel-speed"]["rel_l2_vs_native"] < 0.05  # FP8 changed the output, a little


def test_bench_pipeline_loop_on_tiny_wan(tmp_path, capsys):
    import math

    out = tmp_path / "pipeline.json"
    assert main(["bench", "pipeline", "--configs", "tiny-wan", "--repeats", "1", "--steps", "2",
                 "--json", str(out)]) == 0
    assert "2-step loop" in capsys.readouterr().out
    loop = json.loads(out.read_text())["results"]["tiny-wan"]["loop"]
    assert set(loop) == {"native", "accel-speed", "accel-balanced", "accel-quality"}
    for row in loop.values():
        assert "error" not in row and math.isfinite(row["s"]) and row["s"] > 0
        assert len(row["latent_rel_l2_per_step"]) == 2
        assert row["latent_rel_l2_vs_native"] == row["latent_rel_l2_per_step"][-1]
    assert loop["native"]["latent_rel_l2_per_step"] == [0.0, 0.0]
    assert "attn_cos_min" not in loop["native"]  # bf16: nothing measured
    for variant in ("accel-speed", "accel-balanced", "accel-quality"):
        row = loop[variant]
        assert 0 < row["attn_cos_min"] <= row["attn_cos_mean"] <= 1.0000001
        assert all(0 < b["cosine"] <= 1.0000001 and 0 < b["rel_l2"] < 0.2 for b in row["attn_per_block"].values())
        assert 0 < row["latent_rel_l2_vs_native"] < 0.1  # FP8 moved the latent, a little
    # only the blocks the plan runs in FP8 are measured: balanced and quality keep the edge blocks bf16
    assert set(loop["accel-speed"]["attn_per_block"]) == {"0", "1", "2", "3"}
    assert set(loop["accel-balanced"]["attn_per_block"]) == {"1", "2"}
    # quality keeps the first step (t = 999, progress < 0.2) bf16: identical to native there; the
    # second (t = 750) runs FP8. Wrong timesteps would make both steps bf16 or both FP8.
    assert loop["accel-quality"]["latent_rel_l2_per_step"][0] == 0.0
    assert loop["accel-balanced"]["latent_rel_l2_per_step"][0] > 0


def test_bench_pipeline_variants_subset(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    assert main(["bench", "pipeline", "--configs", "tiny-wan", "--repeats", "1", "--steps", "1",
                 "--variants", "accel-speed", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]["tiny-wan"]
    assert set(rows) == {"accel-speed", "loop"}
    assert set(rows["loop"]) == {"native", "accel-speed"}  # the loop's reference runs anyway
    assert rows["loop"]["accel-speed"]["latent_rel_l2_vs_native"] > 0
    assert main(["bench", "pipeline", "--configs", "tiny-wan", "--variants", "accel-fast"]) != 0
    assert "accel-fast" in capsys.readouterr().err


def test_bench_pipeline_rounds_time_every_variant_again(tmp_path):
    out = tmp_path / "pipeline.json"
    assert main(["bench", "pipeline", "--configs", "tiny-flux", "--repeats", "2", "--rounds", "3",
                 "--variants", "accel-speed,native", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]["tiny-flux"]
    for row in rows.values():
        assert len(row["times"]) == 6 and sorted(row["times"])[3] == row["s"]
    assert main(["bench", "pipeline", "--configs", "tiny-flux", "--rounds", "0"]) != 0


def test_bench_pipeline_loop_passes_wan_timesteps():
    import torch

    from accel.benchmarking.pipeline import build, denoise, loop_inputs

    model, inputs = build("tiny-wan", "cpu", torch.bfloat16)
    start, seen = loop_inputs(inputs, "cpu"), []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append((kw["timestep"], kw["encoder_hidden_states"])),
                                    with_kwargs=True)
    trajectory = denoise(model, start, 2)
    assert len(trajectory) == 2 and trajectory[-1].dtype == torch.float32
    assert [t.shape for t, _ in seen] == [(1,)] * 4  # WanPipeline's t.expand(batch)
    assert [int(t) for t, _ in seen] == [999, 999, 750, 750]  # UniPC, flow shift 3: conditional, unconditional
    assert [text is start["cond"] for _, text in seen] == [True, False, True, False]
    assert torch.equal(denoise(model, start, 2)[-1], trajectory[-1])  # seeded start, deterministic


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


def test_bench_pipeline_profile_splits_the_time(tmp_path, capsys):
    """--profile: each variant's forward split into attention, quantization, GEMMs and the rest;
    on the CPU these are aten ops' own times, which add up to no more than the wall time."""
    out = tmp_path / "pipeline.json"
    assert main(["bench", "pipeline", "--configs", "tiny-wan", "--repeats", "1", "--profile", "--json", str(out)]) == 0
    assert "profile" in capsys.readouterr().out
    for variant, row in json.loads(out.read_text())["results"]["tiny-wan"].items():
        split = row["profile"]
        assert set(split) == {"attention", "quantization", "gemm", "other", "total"}, variant
        assert split["gemm"] > 0 and split["attention"] > 0, variant  # projections, and SDPA or the reference
        assert sum(v for k, v in split.items() if k != "total") <= 1.05 * split["total"], variant


def test_profile_categories_name_the_kernels():
    from accel.benchmarking.profile import category

    assert category("_fp8_attention_kernel") == "attention"
    assert category("void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<>>>") == "attention"
    assert category("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7") == "attention"
    assert category("_norm_rope_quant_kernel") == category("_channel_stats_kernel") == "quantization"
    assert category("nvjet_tst_192x192_64x4_1x2_h_bz_coopA_NNT") == category("sm90_xmma_gemm_bf16bf16") == "gemm"
    assert category("void at::native::vectorized_elementwise_kernel<4>") == "other"
