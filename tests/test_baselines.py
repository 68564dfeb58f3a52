"""The pipeline benchmark's FlashAttention-3 baselines, on the CPU with a stand-in for
``flash_attn_interface`` that runs exact attention on whatever it is given (dequantized when FP8)."""

import dataclasses

import pytest
import torch

from accel.benchmarking import pipeline
from accel.testing import rel_l2
from fake_fa3 import fake_fa3  # noqa: F401  (a fixture)


def test_quantize_per_head_round_trips(gen):
    from accel.benchmarking.baselines import quantize_per_head

    x = torch.randn(2, 50, 3, 64, generator=gen).bfloat16() * torch.tensor([1.0, 10.0, 0.1]).bfloat16()[:, None]
    x8, descale = quantize_per_head(x)
    assert x8.dtype == torch.float8_e4m3fn and descale.shape == (2, 3)
    assert torch.allclose(x8.float().abs().amax(dim=(1, 3)), torch.full((2, 3), 448.0))  # each head's amax -> 448
    assert rel_l2(x8.float() * descale[:, None, :, None], x) < 0.05  # e4m3: 3 mantissa bits


@pytest.mark.parametrize("config", ["tiny-wan", "tiny-flux"])
def test_fa3_baselines_route_every_attention(config, fake_fa3):
    """fa3-bf16 runs every attention through FA3 in bf16 (same result as native); torchao-style
    runs each self-attention (Wan) / attention (Flux) through FA3 in FP8, and the rest stock."""
    model, inputs = pipeline.build(config, "cpu", torch.bfloat16)
    with torch.no_grad():
        native = model(**inputs, return_dict=False)[0]
        rows = {}
        for name in ("fa3-bf16", "torchao-style"):
            fake_fa3.calls.clear()
            with pipeline.configured(model, ("baseline", name)):
                rows[name] = model(**inputs, return_dict=False)[0], list(fake_fa3.calls)
        restored = model(**inputs, return_dict=False)[0]
    n_blocks = len(model.blocks) if config == "tiny-wan" else len(model.transformer_blocks) + len(
        model.single_transformer_blocks)
    attentions = 2 * n_blocks if config == "tiny-wan" else n_blocks  # Wan: self + cross per block
    out, calls = rows["fa3-bf16"]
    assert calls == [torch.bfloat16] * attentions and rel_l2(out, native) < 1e-2
    out, calls = rows["torchao-style"]
    assert calls == [torch.float8_e4m3fn] * n_blocks and 0 < rel_l2(out, native) < 0.05
    assert torch.equal(restored, native)  # both put everything back


def test_variants_offer_the_baselines_only_with_fa3():
    assert {"fa3-bf16", "torchao-style"} <= set(pipeline.variants("cuda", fa3=True))
    assert "accel-speed-triton" in pipeline.variants("cuda", fa3=True)
    assert not {"fa3-bf16", "torchao-style", "accel-speed-triton"} & set(pipeline.variants("cuda", fa3=False))


def test_speed_without_key_threshold_variants():
    """speed's plan with FP8 at every key count, on `auto` and on our kernels (GPU only)."""
    from accel.plan import PRESETS

    plan = pipeline.SPEED_ALL_KEYS
    assert [r.fp8.min_keys for r in plan.rules if r.fp8] == [0]
    assert [dataclasses.replace(r, fp8=dataclasses.replace(r.fp8, min_keys=None)) for r in plan.rules] == list(
        PRESETS["speed"].rules)
    cuda = pipeline.variants("cuda", fa3=False)
    assert cuda["speed-all-keys"] == ("preset", plan, "auto")
    assert cuda["speed-all-keys-triton"] == ("preset", plan, "triton")
    assert "speed-all-keys" not in pipeline.variants("cpu", fa3=False)


def test_balanced_with_token_scales_variant_runs():
    """The GPU-only variant that asks whether balanced would gain from per-token scales:
    balanced's plan with them, installed through the same path as the presets."""
    from accel.plan import PRESETS

    plan = pipeline.BALANCED_TOKEN_SCALES
    assert [r.fp8.granularity for r in plan.rules if r.fp8] == ["token"]
    assert [dataclasses.replace(r, fp8=None) for r in plan.rules] == [
        dataclasses.replace(r, fp8=None) for r in PRESETS["balanced"].rules]
    assert ("preset", plan, "auto") in pipeline.variants("cuda", fa3=False).values()
    model, inputs = pipeline.build("tiny-wan", "cpu", torch.bfloat16)
    with pipeline.configured(model, ("preset", plan, "reference")):
        numerics = [p.active["self"] for p in model.attn_processors.values() if hasattr(p, "active")]
        assert numerics and {n.granularity for n in numerics if n is not None} == {"token"}
        with torch.no_grad():
            assert model(**inputs, return_dict=False)[0].isfinite().all()


def test_variants_offer_torchao_only_where_it_runs():
    """torchao's own low-precision attention is a GPU variant, offered where it can run."""
    assert pipeline.variants("cuda", fa3=True, torchao=True)["torchao"] == ("baseline", "torchao")
    assert "torchao" not in pipeline.variants("cuda", fa3=True, torchao=False)
    assert "torchao" not in pipeline.variants("cpu", fa3=True, torchao=True)


@pytest.fixture
def fake_torchao(monkeypatch):
    """``torchao.prototype.attention`` with an ``apply_low_precision_attention`` that, like
    torchao's, sets a process-wide compiler pass and returns a wrapper reading the model's
    attributes through; the wrapper counts its forwards."""
    import sys
    import types

    class Wrapper(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self._orig_mod, self.forwards = model, 0

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._orig_mod, name)

        def forward(self, *args, **kwargs):
            self.forwards += 1
            return self._orig_mod(*args, **kwargs)

    def apply_low_precision_attention(model):
        import torch._inductor.config as inductor_config

        inductor_config.pre_grad_custom_pass = "torchao's pass"
        return Wrapper(model)

    attention = types.ModuleType("torchao.prototype.attention")
    attention.apply_low_precision_attention = apply_low_precision_attention
    for name, module in (("torchao", types.ModuleType("torchao")),
                         ("torchao.prototype", types.ModuleType("torchao.prototype")),
                         ("torchao.prototype.attention", attention)):
        monkeypatch.setitem(sys.modules, name, module)
    return Wrapper


def test_torchao_baseline_times_its_wrapper_and_puts_the_compiler_pass_back(fake_torchao):
    """The pipeline benchmark calls what ``configured`` yields: torchao's wrapper for the torchao
    variant (its FP8 SDPA patch lives in the wrapper's forward), the model itself otherwise; the
    compiler pass torchao installs process-wide is put back when the block ends."""
    import torch._inductor.config as inductor_config

    model, inputs = pipeline.build("tiny-flux", "cpu", torch.bfloat16)
    saved = inductor_config.pre_grad_custom_pass
    with pipeline.configured(model, ("baseline", "torchao")) as run:
        assert isinstance(run, fake_torchao) and run._orig_mod is model
        assert inductor_config.pre_grad_custom_pass == "torchao's pass"
        times = pipeline.forward_times(run, inputs, 2, "cpu")
        assert len(times) == 2 and run.forwards == 3  # one untimed warm-up
        assert run.config is model.config  # read through, as torchao's wrapper does
    assert inductor_config.pre_grad_custom_pass is saved
    with pipeline.configured(model, ("backend", "native")) as run:
        assert run is model


@pytest.fixture
def fake_sageattention(monkeypatch):
    """``sageattention`` whose ``sageattn`` runs exact attention on (B, S, H, D) ("NHD") and
    records each call's layout and scale."""
    import sys
    import types

    import torch.nn.functional as F

    calls = []

    def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, **kwargs):
        calls.append((tensor_layout, sm_scale))
        assert tensor_layout == "NHD"
        out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=is_causal,
                                             scale=sm_scale)
        return out.transpose(1, 2)

    module = types.ModuleType("sageattention")
    module.sageattn = sageattn
    monkeypatch.setitem(sys.modules, "sageattention", module)
    return calls


@pytest.mark.parametrize("config", ["tiny-wan", "tiny-flux"])
def test_sageattn_baseline_routes_every_attention(config, fake_sageattention):
    """The sageattn variant sends every attention of the stock processors to ``sageattn`` in
    (B, S, H, D), and puts diffusers' dispatch back after."""
    from accel.benchmarking.baselines import sageattention_reason

    assert sageattention_reason() is None
    assert pipeline.variants("cuda", fa3=False, torchao=False)["sageattn"] == ("baseline", "sageattn")
    assert "sageattn" not in pipeline.variants("cuda", fa3=False, torchao=False, sage=False)
    model, inputs = pipeline.build(config, "cpu", torch.bfloat16)
    with torch.no_grad():
        native = model(**inputs, return_dict=False)[0]
        with pipeline.configured(model, ("baseline", "sageattn")) as run:
            out = run(**inputs, return_dict=False)[0]
        routed = len(fake_sageattention)
        restored = model(**inputs, return_dict=False)[0]
    n_blocks = len(model.blocks) if config == "tiny-wan" else len(model.transformer_blocks) + len(
        model.single_transformer_blocks)
    assert routed == (2 * n_blocks if config == "tiny-wan" else n_blocks) and len(fake_sageattention) == routed
    assert rel_l2(out, native) < 1e-2 and torch.equal(restored, native)


def test_attention_benchmark_skips_missing_baselines_and_rejects_unknown_rows(capsys):
    """`--methods` naming a row whose package is missing here skips it and says why; a name that
    is no row at all stops the run with the choices."""
    pytest.importorskip("triton")
    from accel.benchmarking import attention
    from accel.benchmarking.baselines import sageattention_reason

    if sageattention_reason() is None:
        pytest.skip("sageattention is installed here: no missing baseline to skip")
    assert attention.chosen_methods("sdpa-cudnn-bf16,sageattn-int8") == ["sdpa-cudnn-bf16"]
    assert "skipping sageattn-int8: sageattention is not importable" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown method.*sdpa-typo; choose from sdpa-flash-bf16"):
        attention.chosen_methods("sdpa-typo")
    assert "sdpa-cudnn-bf16" in attention.chosen_methods(None)


def test_pipeline_benchmark_skips_missing_baselines_and_rejects_unknown_variants(capsys):
    """`--variants` naming a baseline whose package is missing here skips it with a note; a name
    that is no variant anywhere is an error listing the choices."""
    if "torchao" in pipeline.variants("cuda"):
        pytest.skip("torchao runs here: no missing baseline to skip")
    chosen = pipeline.selected_variants("cuda", ["native", "torchao"])
    assert list(chosen) == ["native"]
    assert "skipping torchao" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown variant.*'fa4-fp8'.*choose from native"):
        pipeline.selected_variants("cuda", ["fa4-fp8"])
