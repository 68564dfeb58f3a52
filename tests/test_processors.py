"""FP8 attention processors and accel.apply on tiny random Wan (T2V, I2V) and Flux transformers."""

import pytest
import torch
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

import accel
from accel import _warnings
from accel._warnings import AccelFallbackWarning
from accel.kernels.configs import interpreting
from accel.testing import rel_l2
from fake_fa3 import fake_fa3  # noqa: F401  (a fixture)
from tiny_models import flux_inputs, tiny_flux, tiny_wan, wan_inputs

# A tiny random model's output after 4 blocks whose attentions each carry ~5% FP8 error
# (tests/error_bounds.py), diluted by residual connections and MLPs: measured 0.001-0.005.
# A lost scale or a wrong RoPE/layout pushes it past 0.1.
MODEL_BOUND = 0.03


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


@pytest.fixture(autouse=True)
def fresh_warnings():
    _warnings._seen.clear()


@pytest.mark.parametrize("i2v", [False, True])
def test_wan_fp8_off_is_bit_identical(i2v):
    model, inputs = tiny_wan(i2v), wan_inputs(i2v)
    stock = run(model, inputs)
    model.set_attn_processor(accel.WanFP8AttnProcessor(self_attention=False))
    assert torch.equal(run(model, inputs), stock)


def test_flux_fp8_off_is_bit_identical():
    model, inputs = tiny_flux(), flux_inputs()
    stock = run(model, inputs)
    model.set_attn_processor(accel.FluxFP8AttnProcessor(double_stream=False, single_stream=False))
    assert torch.equal(run(model, inputs), stock)


@pytest.mark.parametrize("i2v", [False, True])
@pytest.mark.parametrize("granularity", ["head", "token"])
def test_wan_fp8_close_to_stock(i2v, granularity):
    model, inputs = tiny_wan(i2v), wan_inputs(i2v)
    stock = run(model, inputs)
    model.set_attn_processor(accel.WanFP8AttnProcessor(
        cross_attention=True, image_attention=True, granularity=granularity, backend="reference"))
    out = run(model, inputs)
    assert out.isfinite().all()
    assert 0 < rel_l2(out, stock) < MODEL_BOUND


def test_short_attentions_below_min_keys_run_stock():
    """min_keys keeps shorter attentions bf16 (bit-identical to stock); None means no minimum
    on the CPU (the GPU's crossover, CUDA_MIN_KEYS, is a speed property)."""
    model, inputs = tiny_wan(False), wan_inputs(False)
    stock = run(model, inputs)
    tokens = 48  # 3 latent frames of 8x8 in (1, 2, 2) patches
    model.set_attn_processor(accel.WanFP8AttnProcessor(backend="reference", min_keys=tokens + 1))
    assert torch.equal(run(model, inputs), stock)
    model.set_attn_processor(accel.WanFP8AttnProcessor(backend="reference", min_keys=tokens))
    assert rel_l2(run(model, inputs), stock) > 0
    model.set_attn_processor(accel.WanFP8AttnProcessor(backend="reference", min_keys=None))
    assert rel_l2(run(model, inputs), stock) > 0
    flux, flux_in = tiny_flux(), flux_inputs()
    flux_stock = run(flux, flux_in)
    flux.set_attn_processor(accel.FluxFP8AttnProcessor(backend="reference", min_keys=10**6))
    assert torch.equal(run(flux, flux_in), flux_stock)


def test_gpu_crossover_depends_on_the_granularity():
    """On a GPU, min_keys=None is the measured crossover of the call's scales: per head Flux
    1024x1024's 4608 keys run FP8, per token they stay bf16; on the CPU every call runs FP8."""
    from accel.processors.common import CUDA_MIN_KEYS, FP8Numerics

    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    head, token = FP8Numerics("head", min_keys=None), FP8Numerics("token", min_keys=None)
    assert head.serves(4608, gpu) and not head.serves(CUDA_MIN_KEYS["head"] - 1, gpu)
    assert not token.serves(4608, gpu) and token.serves(CUDA_MIN_KEYS["token"], gpu)
    assert head.serves(1, cpu) and token.serves(1, cpu)
    assert FP8Numerics("token", min_keys=0).serves(1, gpu)


def test_flux_fp8_close_to_stock():
    model, inputs = tiny_flux(), flux_inputs()
    stock = run(model, inputs)
    model.set_attn_processor(accel.FluxFP8AttnProcessor(backend="reference"))
    out = run(model, inputs)
    assert out.isfinite().all() and 0 < rel_l2(out, stock) < MODEL_BOUND


@pytest.mark.skipif(not interpreting(), reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")
def test_wan_triton_kernels_match_reference_backend():
    model, inputs = tiny_wan(), wan_inputs()
    model.set_attn_processor(accel.WanFP8AttnProcessor(backend="reference"))
    ref = run(model, inputs)
    model.set_attn_processor(accel.WanFP8AttnProcessor(backend="triton"))
    assert rel_l2(run(model, inputs), ref) < 1e-2


def test_apply_and_remove_restore_exactly():
    model, inputs = tiny_wan(layers=4), wan_inputs()
    stock = run(model, inputs)
    before = dict(model.attn_processors)
    handle = accel.apply(model, preset="speed", backend="reference")
    fp8 = [n for n, p in model.attn_processors.items() if isinstance(p, accel.WanFP8AttnProcessor)]
    assert fp8 == [f"blocks.{i}.attn1.processor" for i in range(4)]  # self-attention only
    assert handle.fp8_modules() == [4] and "plan='speed'" in repr(handle) and "4 of 8" in repr(handle)
    assert not torch.equal(run(model, inputs), stock)
    handle.remove()
    assert handle.fp8_modules() == [0]
    assert all(model.attn_processors[n] is p for n, p in before.items())
    assert torch.equal(run(model, inputs), stock)


def test_presets_keep_edge_blocks_bf16():
    model = tiny_wan(layers=20)
    with accel.apply(model, preset="balanced", backend="reference"):
        fp8 = sorted(int(n.split(".")[1]) for n, p in model.attn_processors.items()
                     if isinstance(p, accel.WanFP8AttnProcessor))
        assert fp8 == list(range(1, 19))  # 5% of 20 blocks = 1 at each end
        assert all(model.attn_processors[f"blocks.{i}.attn1.processor"].active["self"].granularity == "head"
                   for i in fp8)
    with accel.apply(model, preset="quality"):  # same blocks, plus bf16 steps
        assert sum(isinstance(p, accel.WanFP8AttnProcessor) for p in model.attn_processors.values()) == 18
    with accel.apply(model, preset="off"):
        assert not any(isinstance(p, accel.WanFP8AttnProcessor) for p in model.attn_processors.values())
    assert all(type(p) is WanAttnProcessor for p in model.attn_processors.values())


def test_apply_twice_does_not_stack():
    model = tiny_wan()
    original = dict(model.attn_processors)
    accel.apply(model, preset="speed")
    handle = accel.apply(model, preset="balanced")
    assert model.attn_processors["blocks.1.attn1.processor"].active["self"].smooth_v  # balanced's, not speed's
    handle.remove()
    assert all(model.attn_processors[n] is p for n, p in original.items())


def test_apply_keeps_backend_and_custom_processors():
    model = tiny_flux()
    processors = dict(model.attn_processors)
    processors["transformer_blocks.1.attn.processor"] = type("MyProcessor", (FluxAttnProcessor,), {})()
    model.set_attn_processor(processors)
    for p in model.attn_processors.values():
        p._attention_backend = "native"
    with accel.apply(model, preset="speed"):
        procs = model.attn_processors
        assert type(procs["transformer_blocks.1.attn.processor"]).__name__ == "MyProcessor"
        assert isinstance(procs["transformer_blocks.0.attn.processor"], accel.FluxFP8AttnProcessor)
        assert all(p._attention_backend == "native" for p in procs.values())


def test_apply_to_pipeline_with_two_transformers():
    """Wan 2.2: the pipeline's transformer and transformer_2 both get FP8 processors."""
    from diffusers import WanPipeline

    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None,
                       transformer=tiny_wan(), transformer_2=tiny_wan(seed=3))
    with accel.apply(pipe, preset="speed"):
        for t in (pipe.transformer, pipe.transformer_2):
            assert isinstance(t.attn_processors["blocks.0.attn1.processor"], accel.WanFP8AttnProcessor)
    for t in (pipe.transformer, pipe.transformer_2):
        assert type(t.attn_processors["blocks.0.attn1.processor"]) is WanAttnProcessor


def test_per_module_dict():
    model, inputs = tiny_wan(), wan_inputs()
    stock = run(model, inputs)
    processors = dict(model.attn_processors)
    processors["blocks.2.attn1.processor"] = accel.WanFP8AttnProcessor(backend="reference")
    model.set_attn_processor(processors)
    out = run(model, inputs)
    assert 0 < rel_l2(out, stock) < MODEL_BOUND


def test_unsupported_transformer_and_bad_arguments():
    with pytest.raises(TypeError, match="supports WanTransformer3DModel, FluxTransformer2DModel"):
        accel.apply(_WithProcessors())
    with pytest.raises(TypeError, match="pipeline"):
        accel.apply(object())
    with pytest.raises(ValueError, match="preset must be one of"):
        accel.apply(tiny_wan(), preset="fastest")
    with pytest.raises(ValueError, match="granularity must be one of"):
        accel.WanFP8AttnProcessor(granularity="block")


class _WithProcessors(torch.nn.Module):
    attn_processors = {}


def test_mask_runs_stock_with_one_warning():
    model = tiny_wan()
    attn = model.blocks[0].attn1
    x = torch.randn(1, 16, 64)
    mask = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    stock = WanAttnProcessor()(attn, x, attention_mask=mask)
    with pytest.warns(AccelFallbackWarning, match="attention mask"):
        out = accel.WanFP8AttnProcessor(backend="reference")(attn, x, attention_mask=mask)
    assert torch.equal(out, stock)


def test_compiled_transformer_has_no_graph_breaks():
    model, inputs = tiny_wan(layers=2), wan_inputs()
    model.set_attn_processor(accel.WanFP8AttnProcessor(backend="reference"))
    eager = run(model, inputs)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**inputs, return_dict=False)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert rel_l2(run(compiled, inputs), eager) < 1e-3


@pytest.mark.skipif(not interpreting(), reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")
@pytest.mark.parametrize("family", ["wan", "flux"])
def test_fused_norm_rope_paths_compile_without_graph_breaks(family):
    """The fused RMSNorm + RoPE + quantization ops (custom ops with fakes) under a whole-model
    fullgraph compile."""
    model, inputs = (tiny_wan(layers=2), wan_inputs()) if family == "wan" else (tiny_flux(head_dim=32), flux_inputs())
    model = model.to(torch.bfloat16)
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() and k != "timestep" else v for k, v in inputs.items()}
    processor = accel.WanFP8AttnProcessor if family == "wan" else accel.FluxFP8AttnProcessor
    model.set_attn_processor(processor(backend="triton"))
    eager = run(model, inputs)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**inputs, return_dict=False)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    ops = {str(node.target) for graph in explanation.graphs for node in graph.graph.nodes}
    assert "accel.norm_rope_quantize.default" in ops
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert rel_l2(run(compiled, inputs), eager) < 1e-3


@pytest.mark.skipif(not interpreting(), reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")
@pytest.mark.parametrize("family", ["wan", "flux"])
def test_fused_norm_rope_paths_under_regional_compilation(family):
    """compile_repeated_blocks with the fused paths: no more graphs than stock processors make
    (Wan: one for every block; Flux: diffusers' own recompile for its first single-stream block)."""
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    graphs = {}
    for name in ("stock", "fused"):
        model, inputs = (tiny_wan(layers=3), wan_inputs()) if family == "wan" else (tiny_flux(head_dim=32),
                                                                                   flux_inputs())
        model = model.to(torch.bfloat16)
        inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() and k != "timestep" else v
                  for k, v in inputs.items()}
        stock = WanAttnProcessor() if family == "wan" else FluxAttnProcessor()
        fused = (accel.WanFP8AttnProcessor if family == "wan" else accel.FluxFP8AttnProcessor)(backend="triton")
        model.set_attn_processor(stock if name == "stock" else fused)
        eager = run(model, inputs)
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
        assert rel_l2(run(model, inputs), eager) < 1e-3
        graphs[name] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs["fused"] == graphs["stock"]
    assert family != "wan" or graphs["fused"] == 1


def test_compile_repeated_blocks_with_fp8_processors():
    """diffusers' regional compilation: each block compiled once, reused for every block."""
    model, inputs = tiny_wan(layers=3), wan_inputs()
    model.set_attn_processor(accel.WanFP8AttnProcessor(backend="reference"))
    eager = run(model, inputs)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
    assert rel_l2(run(model, inputs), eager) < 1e-3
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one graph serves all 3 blocks
    assert rel_l2(run(model, wan_inputs(seed=5)), run(tiny_wan(layers=3), wan_inputs(seed=5))) < 0.05


@pytest.mark.skipif(not interpreting(), reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")
@pytest.mark.parametrize("granularity", ["head", "token"])
def test_fused_norm_rope_quantization_matches_unfused(granularity):
    """Wan self-attention through the fused RMSNorm + RoPE + quantization kernel gives what stock
    norm + RoPE followed by our quantization gives (up to the bf16 rounding the fused path skips)."""
    model, inputs = tiny_wan(), wan_inputs()
    model = model.to(torch.bfloat16)
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    calls = []
    from accel.kernels import ops

    original = ops.norm_rope_quantize
    ops.norm_rope_quantize = lambda *a: calls.append(a[6]) or original(*a)
    try:
        model.set_attn_processor(accel.WanFP8AttnProcessor(granularity=granularity, backend="triton"))
        fused = run(model, inputs)
    finally:
        ops.norm_rope_quantize = original
    assert calls.count(granularity) == 2 * 4  # Q and K of every block's self-attention
    model.set_attn_processor(accel.WanFP8AttnProcessor(granularity=granularity, backend="triton", fused_qk=False))
    unfused = run(model, inputs)
    assert rel_l2(fused, unfused) < 1e-2


@pytest.mark.skipif(not interpreting(), reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")
@pytest.mark.parametrize("granularity", ["head", "token"])
@pytest.mark.parametrize("fused_projections", [False, True])
def test_flux_fused_norm_rope_quantization_matches_unfused(granularity, fused_projections):
    """Flux double- and single-stream attention through the fused per-head RMSNorm + RoPE +
    quantization kernel (text and image projections read in place, also as the strided views of
    fused QKV projections) is as close to stock as stock norms, joining and RoPE followed by our
    quantization (the two differ by FP8 roundings that the skipped bf16 roundings flip)."""
    model = tiny_flux(head_dim=32)
    g = torch.Generator().manual_seed(3)
    for norm in model.modules():  # norms initialize to ones: random weights catch a mixed-up norm
        if isinstance(norm, torch.nn.RMSNorm):
            norm.weight.data = torch.rand(norm.weight.shape, generator=g) + 0.5
    if fused_projections:
        model.fuse_qkv_projections()
    model = model.to(torch.bfloat16)
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() and k != "timestep" else v
              for k, v in flux_inputs().items()}
    calls = []
    from accel.kernels import ops

    original = ops.norm_rope_quantize
    ops.norm_rope_quantize = lambda *a, **kw: calls.append((a[6], "prefix" in kw)) or original(*a, **kw)
    fused = accel.FluxFP8AttnProcessor(granularity=granularity, backend="triton")
    try:
        model.set_attn_processor(fused)
        assert run(model, inputs).isfinite().all()
    finally:
        ops.norm_rope_quantize = original
    # Q and K of 2 double-stream blocks (text tokens as the prefix) and of 3 single-stream blocks
    assert sorted(calls) == sorted([(granularity, True)] * 4 + [(granularity, False)] * 6)

    rope = model.pos_embed(torch.cat([inputs["txt_ids"], inputs["img_ids"]]))
    image = torch.randn(1, 36, 64, generator=g).bfloat16() * 2
    text = torch.randn(1, 10, 64, generator=g).bfloat16() * 2
    unfused = accel.FluxFP8AttnProcessor(granularity=granularity, backend="triton", fused_qk=False)
    for attn, args in ((model.transformer_blocks[0].attn, (image, text)),
                       (model.single_transformer_blocks[0].attn, (torch.cat([text, image], 1), None))):
        with torch.no_grad():
            outs = [torch.cat(out, 1) if isinstance(out, tuple) else out
                    for out in (proc(attn, *args, None, rope) for proc in (fused, unfused, FluxAttnProcessor()))]
        err_fused, err_unfused = rel_l2(outs[0], outs[2]), rel_l2(outs[1], outs[2])
        assert 0 < err_fused <= 1.15 * err_unfused + 0.005, (err_fused, err_unfused)  # measured 0.04 / 0.04


@pytest.mark.skipif(not interpreting(), reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")
@pytest.mark.parametrize("family", ["wan", "flux"])
def test_fused_norm_rope_feeds_fa3_where_auto_picks_it(family, fake_fa3, monkeypatch):
    """Where ``auto`` picks FA3's FP8 kernel (per-head scales on Hopper; here a stand-in computing
    exact attention on its e4m3 inputs), the fused norm + RoPE + quantization kernel feeds it: the
    model runs FA3 for every FP8 attention and lands as close to our kernel's result as FP8 is."""
    from accel.backends import BACKENDS
    from accel.processors import common

    model, inputs = (tiny_wan(), wan_inputs()) if family == "wan" else (tiny_flux(head_dim=32), flux_inputs())
    model = model.to(torch.bfloat16)
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() and k != "timestep" else v for k, v in inputs.items()}
    processor = accel.WanFP8AttnProcessor if family == "wan" else accel.FluxFP8AttnProcessor
    model.set_attn_processor(processor(granularity="head", backend="triton"))
    ours = run(model, inputs)
    monkeypatch.setattr(common, "select_backend", lambda call, requested: (BACKENDS["fa3"], ""), raising=False)
    model.set_attn_processor(processor(granularity="head", backend="auto"))
    fa3 = run(model, inputs)
    attentions = 4 if family == "wan" else 5  # Wan's self-attentions; Flux's 2 double + 3 single blocks
    assert fake_fa3.calls == [torch.float8_e4m3fn] * attentions
    assert fa3.isfinite().all() and rel_l2(fa3, ours) < MODEL_BOUND


@pytest.mark.skipif(not interpreting(), reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")
def test_flux_without_a_rotary_table_takes_the_unfused_path():
    """No (tokens, head_dim) cos/sin table (here no rotary embedding at all, which the stock
    processor accepts): stock norms, no RoPE, then FP8; the fused kernel is not called."""
    from accel.kernels import ops

    model = tiny_flux(head_dim=32).to(torch.bfloat16)
    attn = model.single_transformer_blocks[0].attn
    x = torch.randn(1, 46, 64, generator=torch.Generator().manual_seed(0)).bfloat16()
    calls = []
    original = ops.norm_rope_quantize
    ops.norm_rope_quantize = lambda *a, **kw: calls.append(a) or original(*a, **kw)
    try:
        with torch.no_grad():
            out = accel.FluxFP8AttnProcessor(backend="triton")(attn, x, None, None, None)
    finally:
        ops.norm_rope_quantize = original
    with torch.no_grad():
        unfused = accel.FluxFP8AttnProcessor(backend="triton", fused_qk=False)(attn, x, None, None, None)
        stock = FluxAttnProcessor()(attn, x, None, None, None)
    assert not calls and torch.equal(out, unfused) and 0 < rel_l2(out, stock) < 0.1


def test_plans_with_smooth_q_and_hadamard_reach_the_kernels():
    """A plan's smooth_q / hadamard reach fp8_sdpa (through the unfused path on Wan): outputs
    differ from plain FP8, and stay as close to stock as FP8 is."""
    from accel.plan import FP8Config, Plan, Rule

    model, inputs = tiny_wan(False), wan_inputs(False)
    stock = run(model, inputs)
    outs = {}
    for name, config in (("plain", FP8Config("token")), ("smooth_q", FP8Config("token", smooth_q=True)),
                         ("hadamard", FP8Config("token", hadamard=True))):
        with accel.apply(model, plan=Plan((Rule(config),)), backend="reference"):
            outs[name] = run(model, inputs)
    for name, out in outs.items():
        assert 0 < rel_l2(out, stock) < MODEL_BOUND, name
    assert not torch.equal(outs["smooth_q"], outs["plain"]) and not torch.equal(outs["hadamard"], outs["plain"])
