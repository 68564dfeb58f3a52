"""torch.compile(fullgraph=True) traces through fp8_sdpa: no graph break, shapes from the fakes."""

import pytest
import torch

import accel
from accel.kernels.configs import interpreting
from accel.testing import activation_like_qkv, rel_l2


class Block(torch.nn.Module):
    def __init__(self, backend, granularity):
        super().__init__()
        self.proj = torch.nn.Linear(64, 64, dtype=torch.bfloat16)
        self.backend, self.granularity = backend, granularity

    def forward(self, q, k, v):
        out = accel.fp8_sdpa(q, k, v, layout="bshd", backend=self.backend, granularity=self.granularity)
        return self.proj(out)


def _backends():
    backends = ["reference"]
    if interpreting() or torch.cuda.is_available():
        backends.append("triton")
    return backends


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("granularity", ["head", "token"])
def test_fullgraph_compile(backend, granularity, gen):
    torch._dynamo.reset()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v = activation_like_qkv(1, 33, 45, 2, 64, "gaussian", layout="bshd", generator=gen)
    q, k, v = (t.to(device) for t in (q, k, v))
    block = Block(backend, granularity).to(device)
    eager = block(q, k, v)
    explanation = torch._dynamo.explain(block)(q, k, v)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v)
    assert out.shape == eager.shape and rel_l2(out, eager) < 1e-2


def test_fake_tensor_shapes():
    """The custom ops' fake implementations agree with the real ones on shapes and strides."""
    pytest.importorskip("triton")
    if not (interpreting() or torch.cuda.is_available()):
        pytest.skip("needs the Triton interpreter or a GPU")
    from torch._subclasses.fake_tensor import FakeTensorMode

    from accel.kernels import ops

    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v = (torch.randn(2, 3, n, 80, device=device).bfloat16() for n in (37, 50, 50))
    for gran, smooth_q in (("head", False), ("token", True)):
        real = ops.quantize_qkv(q, k, v, gran, True, True, True, smooth_q)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = ops.quantize_qkv(*(mode.from_tensor(t) for t in (q, k, v)), gran, True, True, True, smooth_q)
        for r, f in zip(real, fake):
            assert r.shape == f.shape and r.dtype == f.dtype and r.stride() == f.stride()
        *quantized, k_bias = real
        out_real = ops.fp8_attention(*quantized, 80, 0.1, False, torch.bfloat16, "bshd", True, k_bias)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            out_fake = ops.fp8_attention(*(mode.from_tensor(t) for t in quantized), 80, 0.1, False,
                                         torch.bfloat16, "bshd", True, mode.from_tensor(k_bias))
        for r, f in zip(out_real, out_fake):
            assert r.shape == f.shape and r.dtype == f.dtype and r.stride() == f.stride()
    x = torch.randn(2, 37, 3 * 64, device=device).bfloat16()
    w, cos, sin = torch.ones(3 * 64, device=device), torch.rand(37, 32, device=device), torch.rand(37, 32, device=device)
    for gran, smooth in (("head", True), ("token", False)):
        real = ops.norm_rope_quantize(x, w, 1e-6, cos, sin, 3, gran, smooth) + ops.quantize_value(q, gran, smooth)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fx, fw, fc, fs, fq = (mode.from_tensor(t) for t in (x, w, cos, sin, q))
            fake = ops.norm_rope_quantize(fx, fw, 1e-6, fc, fs, 3, gran, smooth) + ops.quantize_value(fq, gran, smooth)
        for r, f in zip(real, fake):
            assert r.shape == f.shape and r.dtype == f.dtype and r.stride() == f.stride()
    text, w_head = torch.randn(2, 11, 3 * 64, device=device).bfloat16(), torch.ones(64, device=device)
    cos, sin = torch.rand(48, 32, device=device), torch.rand(48, 32, device=device)
    for gran, smooth in (("head", True), ("token", False)):  # FLUX: per-head norms, text tokens first
        real = ops.norm_rope_quantize(x, w_head, 1e-6, cos, sin, 3, gran, smooth, True, text, w_head, 1e-6)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fx, fw, fc, fs, ft = (mode.from_tensor(t) for t in (x, w_head, cos, sin, text))
            fake = ops.norm_rope_quantize(fx, fw, 1e-6, fc, fs, 3, gran, smooth, True, ft, fw, 1e-6)
        for r, f in zip(real, fake):
            assert r.shape == f.shape and r.dtype == f.dtype and r.stride() == f.stride()
    real = ops.quantize_kv(k, v, "token", True, True, True)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = ops.quantize_kv(mode.from_tensor(k), mode.from_tensor(v), "token", True, True, True)
    for r, f in zip(real, fake):
        assert r.shape == f.shape and r.dtype == f.dtype and r.stride() == f.stride()
    out_real = ops.fp8_attention(q, real[0], real[1], real[2].new_empty((0,)), real[2], real[3], real[4], 80, 0.1,
                                 False, torch.bfloat16, "bshd", True)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fq, fk8, fv8, fkd, fvd, fvm = (mode.from_tensor(t) for t in (q, *real[:4], real[4]))
        out_fake = ops.fp8_attention(fq, fk8, fv8, fkd.new_empty((0,)), fkd, fvd, fvm, 80, 0.1, False,
                                     torch.bfloat16, "bshd", True)
    for r, f in zip(out_real, out_fake):
        assert r.shape == f.shape and r.dtype == f.dtype and r.stride() == f.stride()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("granularity", ["head", "token"])
def test_inductor_with_cuda_graphs_replays_match_eager(granularity):
    """torch.compile as users compile a transformer: Inductor, fullgraph, CUDA graphs
    (mode="reduce-overhead", which removes the host's time per call). Recorded and replayed
    calls, on the inputs of the recording and on fresh ones, match eager calls; at D = 128 and
    1024 keys, a call the Gluon kernel serves on Hopper."""
    torch._dynamo.reset()
    g = torch.Generator(device="cuda")
    g.seed()  # fresh inputs every run

    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return accel.fp8_sdpa(q, k, v, layout="bshd", backend="triton", granularity=granularity) * 2.0

    def draw():
        return activation_like_qkv(1, 8, 1024, 1024, 128, "activation", layout="bshd", device="cuda", generator=g)

    model, inputs = Attention(), [draw() for _ in range(2)]
    eager = [model(*qkv) for qkv in inputs]
    compiled = torch.compile(model, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):  # warm-up, recording, replays
        outs = [compiled(*qkv).clone() for qkv in inputs]  # a replay overwrites the last one's output
    for out, ref in zip(outs, eager):
        assert out.shape == ref.shape and out.isfinite().all()
        assert rel_l2(out, ref) < 1e-3  # the same kernels on the same inputs
    assert rel_l2(outs[0], outs[1]) > 0.1  # each replay read its own inputs
