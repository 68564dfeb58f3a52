"""The real Triton kernels (on the CPU through Triton's interpreter, or on a GPU) against the
reference backend, which emulates the same numerics in torch."""

import math

import pytest
import torch

pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import accel  # noqa: E402
from accel.kernels._triton_utils import to_e4m3  # noqa: E402
from accel.backends.reference import quantize_reference  # noqa: E402
from accel.kernels.configs import interpreting  # noqa: E402
from accel.testing import activation_like_qkv, exact_attention, rel_l2  # noqa: E402
from fake_fa3 import fake_fa3  # noqa: E402,F401  (a fixture)

DEVICE = "cpu" if interpreting() else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA GPU", allow_module_level=True)
# Under the interpreter both sides do the same fp32 arithmetic: outputs agree to a bf16 rounding
# or two. On a GPU the tensor cores accumulate FP8 products in their own order and precision.
TOL = 2e-3 if interpreting() else 3e-2


def _gen():
    g = torch.Generator(device=DEVICE)
    g.seed()
    return g


@pytest.mark.parametrize("granularity", ["head", "token"])
@pytest.mark.parametrize("smooth", [False, True])
def test_quantize_matches_reference(granularity, smooth):
    from accel.kernels.quantize import quantize_fp8

    x = activation_like_qkv(2, 3, 150, 150, 64, "activation", device=DEVICE, generator=_gen())[1]
    x8, descale = quantize_fp8(x, granularity, smooth)
    r8, rdescale = quantize_reference(x, granularity, smooth)
    assert torch.equal(descale, rdescale) if not smooth else torch.allclose(descale, rdescale, rtol=1e-6)
    mismatch = (x8.float() != r8.float()).float().mean().item()
    # the kernel's chunked channel mean differs from torch's by ulps: rare one-step roundings
    assert mismatch == 0 if not smooth else mismatch < 1e-3


def _rms_rope_fp64(x, weight, eps, cos, sin, heads, per_head_norm):
    """RMSNorm (across heads, or per head) then interleaved RoPE in fp64: (B, S, H*D) -> (B, H, S, D)."""
    x = x.double().unflatten(-1, (heads, -1))
    flat = x if per_head_norm else x.flatten(-2)
    normed = (flat * torch.rsqrt(flat.pow(2).mean(-1, keepdim=True) + eps)).reshape(x.shape)
    y = (normed * weight.double().reshape(-1, x.shape[-1]) if per_head_norm else
         normed.flatten(-2) * weight.double()).reshape(x.shape).transpose(1, 2)
    even, odd = y[..., 0::2], y[..., 1::2]
    c, s = cos.double(), sin.double()
    return torch.stack([even * c - odd * s, even * s + odd * c], -1).flatten(-2)


@pytest.mark.parametrize("tiles", [None, (16, 4)])  # the defaults; five programs of 16 tokens
@pytest.mark.parametrize("per_head_norm", [False, True])
@pytest.mark.parametrize("granularity", ["head", "token"])
@pytest.mark.parametrize("smooth", [False, True])
def test_norm_rope_quantize_matches_fp64(per_head_norm, granularity, smooth, tiles):
    """The fused RMSNorm + RoPE + e4m3 kernel, dequantized, against fp64 norm and rotation, on
    tokens whose norms span three orders of magnitude plus an all-zero token. Every path: one read
    per token (Wan, per token, unsmoothed: the 1/RMS goes into the descales), the 1/RMS from its
    own pass, per-head norms. A lost or doubled 1/RMS is off by orders."""
    from accel.kernels.norm_rope import norm_rope_quantize

    g = _gen()
    B, S, H, D = 2, 70, 3, 64
    x = torch.randn(B, S, H * D, device=DEVICE, generator=g) * torch.exp(
        2 * torch.randn(B, S, 1, device=DEVICE, generator=g))
    x[1, 5] = 0
    x = x.bfloat16()
    weight = torch.rand(D if per_head_norm else H * D, device=DEVICE, generator=g) + 0.5
    angles = torch.rand(S, D // 2, device=DEVICE, generator=g) * 6
    x8, descale, mean = norm_rope_quantize(x, weight, 1e-6, angles.cos(), angles.sin(), H, granularity, smooth,
                                           tiles, per_head_norm=per_head_norm)
    exact = _rms_rope_fp64(x, weight, 1e-6, angles.cos(), angles.sin(), H, per_head_norm)
    if smooth:
        assert torch.allclose(mean.double(), exact.mean(2), rtol=1e-4, atol=1e-5)
        exact = exact - exact.mean(2, keepdim=True)
    assert descale.isfinite().all()
    dequantized = x8.double() * (descale[..., None, None] if granularity == "head" else descale[..., None])
    # per token, each row has its own scale: the error is relative per row (e4m3: ~2-3%)
    if granularity == "token":
        rows = (dequantized - exact).norm(dim=-1) / exact.norm(dim=-1)
        assert rows[exact.norm(dim=-1) > 0].max() < 0.04
    else:
        assert rel_l2(dequantized, exact) < 0.04
    if not smooth:
        assert (dequantized[1, :, 5] == 0).all()


def test_quantize_transposed_and_per_channel():
    from accel.kernels.quantize import quantize_fp8

    v = activation_like_qkv(1, 2, 77, 77, 64, "gaussian", device=DEVICE, generator=_gen())[2]
    v8t, descale = quantize_fp8(v, "channel", transpose=True)
    r8, rdescale = quantize_reference(v, "channel")
    assert v8t.shape == (1, 2, 64, 80)  # tokens padded to 16, with zeros
    assert (v8t[..., 77:].float() == 0).all()
    assert torch.equal(v8t[..., :77].transpose(-1, -2).float(), r8.float())
    assert torch.equal(descale, rdescale)


@pytest.mark.parametrize("tokens", [37, 129, 256, 300])
def test_quantize_transposed_in_the_gluon_kernels_key_order(tokens):
    """V^T for the Gluon kernel: whole key blocks, keys right-aligned behind zero columns, each
    32-key chunk in mma_key_order; the same e4m3 values as the natural order. The storage is
    poisoned first: the padding must be written, not left as it was."""
    from accel.kernels.numerics import mma_key_order, mma_row_length
    from accel.kernels.quantize import quantize_fp8

    v = activation_like_qkv(2, 3, tokens, tokens, 128, "gaussian", device=DEVICE, generator=_gen())[2]
    natural, descale = quantize_fp8(v, "head", transpose=True)
    torch.empty(2 * 3 * 128 * 512, device=DEVICE).fill_(float("nan"))  # reused by the allocator on a GPU
    mma, mma_descale = quantize_fp8(v, "head", transpose=True, key_order="mma")
    length = mma_row_length(tokens)
    assert mma.shape == (2, 3, 128, length) and length % 128 == 0 and length - tokens < 128
    unpermuted = torch.empty_like(mma)
    unpermuted[..., mma_key_order(length).to(mma.device)] = mma  # column c holds key pi(c)
    pad = length - tokens
    assert torch.equal(unpermuted[..., pad:].float(), natural[..., :tokens].float())
    assert (unpermuted[..., :pad].float() == 0).all()
    assert torch.equal(descale, mma_descale)


def test_mma_key_order_is_the_register_order_of_an_fp8_a_operand():
    """Thread t of a quad holds accumulator columns {8i + 2t + e} of each 32-key chunk and A
    operand columns {4t + e4 + 16c}: pi maps every A column a thread holds to a key it holds."""
    from accel.kernels.numerics import mma_key_order

    pi = mma_key_order(64)
    assert sorted(pi.tolist()) == list(range(64))
    for t in range(4):
        a_cols = [4 * t + e4 + 16 * c for c in (0, 1) for e4 in range(4)]
        acc_cols = {8 * i + 2 * t + e for i in range(4) for e in (0, 1)}
        assert {pi[a].item() for a in a_cols} == acc_cols
    with pytest.raises(ValueError, match="multiple of 32"):
        mma_key_order(48)


def test_gluon_dispatch_falls_back_to_the_triton_kernel(monkeypatch):
    """Off Hopper / off triton 3.6 (CI), with ACCEL_GLUON=0, and for numerics or shapes the Gluon
    kernel does not serve, every call takes the Triton kernel, with a reason that says why."""
    from accel.kernels.dispatch import attention_kernel, gluon_reason, v_key_order
    from accel.kernels.gluon_attention import gluon_unsupported_reason

    dev = torch.device(DEVICE)
    if DEVICE == "cpu":
        assert gluon_reason(dev) is not None
        assert attention_kernel(dev, 128, 4096, "head", False, False, False) == "triton"
    monkeypatch.setenv("ACCEL_GLUON", "0")
    assert gluon_reason(dev) == "ACCEL_GLUON=0"
    assert attention_kernel(dev, 128, 4096, "head", False, False, False) == "triton"
    assert gluon_unsupported_reason(128, 4096, False, False, False) is None
    assert gluon_unsupported_reason(128, 512, False, False, False) is None
    assert "causal" in gluon_unsupported_reason(128, 4096, True, False, False)
    assert "causal" in gluon_unsupported_reason(128, 4096, False, True, False)
    assert "smooth-Q" in gluon_unsupported_reason(128, 4096, False, False, True)
    assert gluon_unsupported_reason(64, 4096, False, False, False) is None
    assert "head dim 96" in gluon_unsupported_reason(96, 4096, False, False, False)
    assert "256 keys" in gluon_unsupported_reason(128, 256, False, False, False)
    assert v_key_order("gluon") == "mma" and v_key_order("triton") == "natural"


@pytest.fixture
def untested_triton(monkeypatch):
    """The installed Triton as one the Gluon kernel has not run with on a GPU; dispatch caches cleared."""
    from accel.kernels import dispatch, gluon_attention as ga

    if ga._IMPORT_ERROR is not None:
        pytest.skip(f"no Gluon: {ga._IMPORT_ERROR!r}")
    monkeypatch.setattr(ga, "TESTED_TRITON", ("0.0.",))
    monkeypatch.delenv("ACCEL_GLUON", raising=False)
    dispatch._gluon_reason_cached.cache_clear()
    yield dispatch
    dispatch._gluon_reason_cached.cache_clear()


def test_gluon_kernel_takes_an_untested_triton_only_when_asked(untested_triton, monkeypatch):
    """A Triton the Gluon kernel has not run with on a GPU keeps it off, with a reason; on a Hopper
    GPU, where nothing else stands in the way, one warning names ACCEL_GLUON=1, which lets it
    through; ACCEL_GLUON=0 keeps it off silently; other values are an error naming the choices."""
    import warnings

    dispatch = untested_triton
    cpu = torch.device("cpu")
    assert "triton 0.0.x only" in dispatch.gluon_reason(cpu)
    monkeypatch.setenv("ACCEL_GLUON", "1")
    assert dispatch.gluon_reason(cpu) == "the Gluon kernel needs a CUDA GPU"  # the next check

    # An H100 stand-in: the device checks pass, so the version alone decides.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    hopper = torch.device("cuda", 0)
    assert dispatch.gluon_reason(hopper) is None
    assert dispatch.attention_kernel(hopper, 128, 4096, "head", False, False, False) == "gluon"
    monkeypatch.delenv("ACCEL_GLUON")
    with pytest.warns(dispatch.SlowerKernelWarning, match="ACCEL_GLUON=1"):
        assert "triton 0.0.x only" in dispatch.gluon_reason(hopper)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device and setting
        assert dispatch.attention_kernel(hopper, 128, 4096, "head", False, False, False) == "triton"
        monkeypatch.setenv("ACCEL_GLUON", "0")
        assert dispatch.gluon_reason(hopper) == "ACCEL_GLUON=0"
    monkeypatch.setenv("ACCEL_GLUON", "yes")
    with pytest.raises(ValueError, match="ACCEL_GLUON='yes'.*leave it unset"):
        dispatch.gluon_reason(hopper)
    monkeypatch.delenv("ACCEL_GLUON")
    from accel.info import _gluon_status

    dispatch._gluon_reason_cached.cache_clear()  # so that the report's query would warn again
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # accel info reports it, without the warning
        status = _gluon_status(0)
    assert status.startswith("no (") and "triton 0.0.x only" in status and "ACCEL_GLUON=1 takes it" in status


def test_gluon_kernel_needs_triton_36s_gluon_api_even_when_asked(untested_triton, monkeypatch):
    """Below 3.6 Gluon's API differs (3.5's warp_specialize fails to compile the kernel):
    ACCEL_GLUON=1 cannot take the kernel there; version strings with local parts parse."""
    from accel.kernels import gluon_attention as ga

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    hopper = torch.device("cuda", 0)
    monkeypatch.setattr(triton, "__version__", "3.5.0")
    assert ">= 3.6" in ga.gluon_api_reason() and "found 3.5.0" in ga.gluon_api_reason()
    assert ga.gluon_unavailable_reason(hopper, allow_untested_triton=True) == ga.gluon_api_reason()
    monkeypatch.setattr(triton, "__version__", "3.10.0+git0a1b2c3")
    assert ga._triton_version() == (3, 10) and ga.gluon_api_reason() is None
    assert ga.gluon_unavailable_reason(hopper, allow_untested_triton=True) is None


def test_gluon_kernel_stays_quiet_off_hopper_with_an_untested_triton(untested_triton, monkeypatch):
    """Off Hopper the Gluon kernel could not run whatever the Triton: no warning about the version."""
    import warnings

    dispatch = untested_triton
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "triton 0.0.x only" in dispatch.gluon_reason(torch.device("cuda", 0))
        assert "triton 0.0.x only" in dispatch.gluon_reason(torch.device("cpu"))


@pytest.mark.parametrize("keys", [128, 192])
@pytest.mark.parametrize("tokens", [257, 2100, 4097, 4608])
def test_gluon_key_descales_start_their_tma_boxes_on_16_bytes(tokens, keys):
    """Per-token key descales reach the Gluon kernel by TMA, whose boxes must start on 16 bytes
    (an fp32 box at 4 n + 1 is an illegal instruction on H100): the quantizer's rows serve as they
    are when block 0's padding is a multiple of 4 keys; otherwise a right-aligned copy does, whose
    leading padding is zeros. Either way every block's box starts on 16 bytes, for 128- and
    192-key blocks (boxes of 128 and 256 descales)."""
    from accel.kernels import gluon_attention as ga
    from accel.kernels import quantize

    if ga._IMPORT_ERROR is not None:
        pytest.skip(f"no Gluon API here: {ga._IMPORT_ERROR!r}")
    x = torch.randn(1, 3, tokens, 128, device=DEVICE, generator=_gen()).bfloat16()
    kd = quantize.quantize_many([quantize.QuantizeJob(x, "token")])[0].descale
    desc, kd_pad = ga._key_descale_desc(kd, keys, ga._layouts(128, keys)[3])
    assert desc.block_shape == [1, 128 if keys == 128 else 256]
    key_pad = -tokens % keys
    assert kd_pad == (key_pad if key_pad % 4 == 0 else 0)
    rows = desc.base
    assert rows.data_ptr() % 16 == 0 and rows.stride(0) % 4 == 0 and (kd_pad * 4) % 16 == 0
    assert torch.equal(rows[:, key_pad - kd_pad:key_pad - kd_pad + tokens], kd.view(3, tokens))
    if kd_pad == 0:
        assert rows.shape[1] % keys == 0 and not rows[:, :key_pad].any()


def test_gluon_descriptors_from_checked_fields_match_triton_s():
    """The launcher builds its TMA descriptors from fields checked once per geometry, with no 2-D
    view (host time): the same fields as Triton's descriptor of the 2-D view, the tensor itself as
    the base, and the base's 16-byte alignment still checked on every call."""
    from accel.kernels import gluon_attention as ga

    if ga._IMPORT_ERROR is not None:
        pytest.skip(f"no Gluon API here: {ga._IMPORT_ERROR!r}")
    layout = ga._layouts(128)[1]

    def fields(desc):
        return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in vars(desc).items() if k != "base"}

    for heads, tokens in ((3, 257), (24, 2048)):
        x = torch.empty(1, heads, tokens, 128, dtype=torch.float8_e4m3fn, device=DEVICE)
        desc = ga._rows_desc(x, (ga.BLOCK_N, 128), layout)
        ref = ga.TensorDescriptor.from_tensor(x.view(-1, 128), [ga.BLOCK_N, 128], layout)
        assert type(desc) is type(ref) and desc.base is x and fields(desc) == fields(ref)
    misaligned = torch.empty(2 * 128 * 128 + 1, dtype=torch.float8_e4m3fn, device=DEVICE)[1:].view(2, 128, 128)
    with pytest.raises(AssertionError, match="16 bytes"):
        ga._rows_desc(misaligned, (ga.BLOCK_N, 128), layout)


def test_gluon_key_blocks_are_wide_where_their_padding_pays():
    """Per head at D = 128 a call takes 192-key blocks where they fit twice and padding the keys
    to whole wide blocks costs less than their speed gains; per token, at D = 64 and from 192
    keys down, 128."""
    from accel.kernels import gluon_attention as ga

    wide = {skv for skv in range(129, 20000) if ga.key_block(128, False, skv) == 192}
    assert {2048, 4608, 8192, 16384} <= wide
    assert ga.key_block(128, False, 32760) == ga.key_block(128, False, 75600) == 192
    assert not {129, 192, 512, 640, 1024} & wide  # 576 / 768 / 1152 keys padded: more than 128-key blocks take
    for skv in wide:
        assert -(-skv // 192) * 192 * ga.WIDE_KEY_COST <= -(-skv // 128) * 128
    assert all(ga.key_block(d, per_token, skv) == 128 for d, per_token in ((128, True), (64, False), (64, True))
               for skv in (129, 512, 8192))


@pytest.mark.parametrize("skv", [129, 300, 1024])
@pytest.mark.parametrize("group", [32, 64])
def test_gluon_key_group_descales_tile_the_kernel_blocks(skv, group):
    """The key-group probe's inputs (NOTES 49): K quantized with one scale per group of keys
    counted from the last key, and the kernel's layout of those scales, one 8-float row a
    128-key block, right-aligned like the keys, padding groups 1."""
    from accel.kernels import gluon_attention as ga
    from accel.testing import grouped_keys

    k = torch.randn(1, 2, skv, 128, generator=torch.Generator().manual_seed(skv)) * torch.rand(skv, 1) * 4
    k8, descale = grouped_keys(k, group)
    # each key's descale is its group's, groups end-aligned; K8 x descale is K smoothed
    firsts = (skv - 1 - torch.arange(skv)) // group
    for g in firsts.unique():
        assert descale[..., firsts == g].unique(dim=-1).shape[-1] == 1
    smoothed = k - k.mean(dim=2, keepdim=True)
    assert rel_l2(k8.float() * descale.unsqueeze(-1), smoothed) < 0.05
    rows = ga.key_group_descales(descale, 128, group).view(2, -1, 8)
    blocks, per_block = -(-skv // 128), 128 // group
    assert rows.shape[1] == blocks and (rows[..., per_block:] == 1).all()
    padded = rows[..., :per_block].reshape(2, -1)  # the group descales along the padded key axis
    for key in range(skv):
        col = key + blocks * 128 - skv  # keys are right-aligned in whole blocks
        assert padded[:, col // group].equal(descale[0, :, key])
    assert (padded[:, :(blocks * 128 - skv) // group] == 1).all()  # groups of padding only


def test_gluon_warp_groups_fit_the_register_file():
    """Each head dim's split of warps and registers fits an H100/H200 SM's 64 K registers at
    launch (every warp at maxnreg; warps come in whole warpgroups) and after setmaxnreg (each
    consumer warpgroup at its count, the producer's at 24), in setmaxnreg's steps of 8; every
    per-head-dim table names the same head dims."""
    from accel.kernels import gluon_attention as ga

    tables = (ga.HEAD_DIMS, ga.PRELOAD_KEY_SCALES, ga.KEYS_PER_BLOCK, ga.KEYS_PER_BLOCK_TOKEN)
    assert all(set(table) == set(ga.WARP_GROUPS) for table in tables)
    for head_dim, wg in ga.WARP_GROUPS.items():
        warpgroups = wg.consumers + 1  # the producer's single warp takes a warpgroup's registers
        assert wg.maxnreg * warpgroups * 128 <= 65536, head_dim
        assert (wg.consumers * wg.consumer_regs + 24) * 128 <= 65536, head_dim
        assert wg.consumer_regs % 8 == 0 and wg.maxnreg % 8 == 0 and wg.block_m == 64 * wg.consumers


def test_gluon_query_maps_the_callers_view():
    """The query the Gluon kernel quantizes itself is read by TMA straight from the caller's
    (B, H, S, D) view: diffusers' (B, S, H, D) memory and torch's (B, H, S, D) both map, with the
    fields Triton's own descriptor of that view has; views TMA cannot read (rows off 16 bytes,
    channels not contiguous, fp8) are named."""
    from accel.kernels import gluon_attention as ga

    if ga._IMPORT_ERROR is not None:
        pytest.skip(f"no Gluon API here: {ga._IMPORT_ERROR!r}")

    def fields(desc):
        return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in vars(desc).items() if k != "base"}

    box = (1, 1, ga.WG_M, 128)
    for dtype in (torch.bfloat16, torch.float16):
        layout = ga._row_box_layout(128, dtype)
        bshd = torch.empty(2, 300, 5, 128, dtype=dtype, device=DEVICE).transpose(1, 2)
        bhsd = torch.empty(2, 5, 300, 128, dtype=dtype, device=DEVICE)
        for q in (bshd, bhsd):
            assert ga.query_in_kernel_reason(q) is None
            desc = ga._desc(q, tuple(q.shape), tuple(q.stride()), box, layout)
            ref = ga.TensorDescriptor(q, list(q.shape), list(q.stride()), list(box), layout)
            assert desc.base is q and fields(desc) == fields(ref)
    wide = torch.empty(1, 300, 5, 136, dtype=torch.bfloat16, device=DEVICE)
    assert "strides" in ga.query_in_kernel_reason(wide[..., 1:129].transpose(1, 2))  # rows start 2 bytes in
    assert "strides" in ga.query_in_kernel_reason(wide[..., :128].transpose(1, 3).transpose(2, 3))
    assert "dtype" in ga.query_in_kernel_reason(bhsd.to(torch.float8_e4m3fn))


def test_ops_run_their_body_directly_only_when_nothing_must_see_the_op():
    """Eager calls on plain tensors skip torch's dispatcher (host time); autograd-recording and
    fake-tensor calls go through the custom op; both give the same tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from accel.kernels import ops

    q, k, v = (torch.randn(1, 2, 70, 64, device=DEVICE, generator=_gen()).bfloat16() for _ in range(3))
    with torch.no_grad():
        assert ops._direct((q, k, v, "head"), {})
        direct = ops.quantize_qkv(q, k, v, "head", True, False, True)
        via_op = ops.quantize_qkv.op(q, k, v, "head", True, False, True)
    for i, (a, b) in enumerate(zip(direct, via_op)):
        assert a.shape == b.shape and a.stride() == b.stride()
        if i == 2:  # V^T: tokens past 70 are the padding the kernels never read
            a, b = a[..., :70], b[..., :70]
        assert torch.equal(a.view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a,
                           b.view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b), i
    assert not ops._direct((q.requires_grad_(),), {})
    with torch.no_grad():
        assert ops._direct((q,), {})
        with FakeTensorMode() as mode:
            assert not ops._direct((mode.from_tensor(k),), {})


def test_padded_head_dim_is_zero_filled():
    from accel.kernels.quantize import quantize_fp8

    x = torch.randn(1, 1, 20, 80, device=DEVICE, generator=_gen()).bfloat16()
    x8, _ = quantize_fp8(x, "token")
    assert x8.shape[-1] == 128 and (x8[..., 80:].float() == 0).all()


SHAPES = [  # (B, H, Sq, Skv, D): ragged lengths, cross-attention, padded head dims
    (1, 2, 100, 77, 64), (2, 1, 70, 70, 128), (1, 2, 33, 130, 80), (1, 1, 5, 40, 32), (1, 1, 64, 1, 64),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("granularity", ["head", "token"])
def test_attention_matches_reference(shape, granularity):
    B, H, Sq, Skv, D = shape
    q, k, v = activation_like_qkv(B, H, Sq, Skv, D, "activation", device=DEVICE, generator=_gen())
    out, lse = accel.fp8_sdpa(q, k, v, granularity=granularity, backend="triton", return_lse=True)
    ref, ref_lse = accel.fp8_sdpa(q, k, v, granularity=granularity, backend="reference", return_lse=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    if interpreting():  # same fp32 arithmetic on both sides
        assert rel_l2(out, ref) < TOL
        assert torch.allclose(lse, ref_lse, atol=1e-3, rtol=1e-4)
    else:  # tensor cores accumulate FP8 products in their own precision: closer to the
        # reference than the reference is to exact attention, by a wide margin
        exact, exact_lse = exact_attention(q, k, v)
        # (a single key: all three equal V's rounding, and both errors are 0)
        assert rel_l2(out, ref) <= 0.5 * rel_l2(ref, exact) + 1e-6
        assert (lse - ref_lse).abs().max() <= (ref_lse.double() - exact_lse).abs().max() + 0.05


@pytest.mark.parametrize("layout", ["bhsd", "bshd"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_causal_layouts_dtypes(layout, dtype):
    q, k, v = activation_like_qkv(1, 2, 90, 90, 64, "gaussian", layout=layout, dtype=dtype,
                                  device=DEVICE, generator=_gen())
    for granularity in ("head", "token"):
        out = accel.fp8_sdpa(q, k, v, is_causal=True, layout=layout, granularity=granularity, backend="triton")
        ref = accel.fp8_sdpa(q, k, v, is_causal=True, layout=layout, granularity=granularity, backend="reference")
        assert out.dtype == dtype and out.shape == q.shape
        assert rel_l2(out, ref) < TOL


@pytest.mark.parametrize("granularity", ["head", "token"])
def test_smooth_v_matches_reference(granularity):
    q, k, v = activation_like_qkv(1, 2, 60, 70, 64, "gaussian", device=DEVICE, generator=_gen())
    v = (v.float() + 5.0).to(v.dtype)
    out = accel.fp8_sdpa(q, k, v, granularity=granularity, smooth_v=True, backend="triton")
    ref = accel.fp8_sdpa(q, k, v, granularity=granularity, smooth_v=True, backend="reference")
    assert rel_l2(out, ref) < TOL


def test_strided_inputs_are_read_in_place():
    """Any strides: a slice of a fused QKV projection, as diffusers produces, is not copied."""
    qkv = torch.randn(1, 48, 3, 2, 64, device=DEVICE, generator=_gen()).bfloat16()  # (B, S, 3, H, D)
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    out = accel.fp8_sdpa(q, k, v, layout="bshd", backend="triton")
    ref = accel.fp8_sdpa(q.contiguous(), k.contiguous(), v.contiguous(), layout="bshd", backend="reference")
    assert rel_l2(out, ref) < TOL


def test_output_fully_written():
    """Poisoned allocations: every output element must come from the kernel."""
    q, k, v = activation_like_qkv(1, 2, 45, 45, 64, "gaussian", device=DEVICE, generator=_gen())
    torch.empty(10_000_000, device=DEVICE).fill_(float("nan"))  # dirty the allocator's memory
    out = accel.fp8_sdpa(q, k, v, backend="triton", granularity="token")
    assert out.isfinite().all()


@pytest.mark.parametrize("granularity", ["head", "token"])
def test_nonfinite_inputs_never_become_finite(granularity):
    q, k, v = activation_like_qkv(1, 2, 40, 40, 64, "gaussian", device=DEVICE, generator=_gen())
    for tensor, where in ((k, (0, 1, 17, 5)), (v, (0, 1, 3, 9)), (q, (0, 1, 7, 2))):
        bad = tensor.clone()
        bad[where] = float("inf") if tensor is not v else float("nan")
        args = [bad if t is tensor else t for t in (q, k, v)]
        out = accel.fp8_sdpa(*args, granularity=granularity, backend="triton")
        assert out[:, 0].isfinite().all()  # head 0 is untouched
        affected = out[:, 1]
        if tensor is q and granularity == "token":
            assert affected[:, 7].isnan().all() and affected[:, :7].isfinite().all()
        elif tensor is v and granularity == "token":  # per-channel V scales: channel 9 only
            assert affected[..., 9].isnan().all()
        else:
            assert affected.isnan().all()


@triton.jit
def _cast_kernel(x_ptr, y_ptr, N: tl.constexpr, EMULATE: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(y_ptr + offs, to_e4m3(tl.load(x_ptr + offs), EMULATE))


def test_emulated_e4m3_cast_matches_torch():
    """The interpreter's own fp32 -> fp8 cast is wrong at mantissa carries; ours must not be."""
    x = torch.randn(1 << 14, device=DEVICE, generator=_gen()) * torch.logspace(-4, 3, 1 << 14, device=DEVICE)
    x[:4] = torch.tensor([125.9, 200.0, 500.0, -1e4])  # carry, tie-to-even, saturation
    y = torch.empty(1 << 14, device=DEVICE, dtype=torch.float8_e4m3fn)
    _cast_kernel[(1,)](x, y, N=1 << 14, EMULATE=interpreting())
    expected = x.clamp(-448, 448).to(torch.float8_e4m3fn)
    assert torch.equal(y.float(), expected.float())


def test_lse_of_true_scores_with_smoothing():
    """smooth_k shifts each row's scores; the returned LSE is that of the unshifted scores."""
    q, k, v = activation_like_qkv(1, 2, 30, 50, 64, "offset_k", device=DEVICE, generator=_gen())
    _, lse = accel.fp8_sdpa(q, k, v, backend="triton", smooth_k=True, return_lse=True)
    _, lse_plain = accel.fp8_sdpa(q, k, v, backend="triton", smooth_k=False, return_lse=True)
    exact = torch.logsumexp((q.double() @ k.double().transpose(-1, -2)) / math.sqrt(64), dim=-1)
    assert (lse.double() - exact).abs().max() < 0.05 * exact.abs().max()
    assert (lse.double() - exact).abs().max() <= (lse_plain.double() - exact).abs().max() + 0.05


@pytest.mark.parametrize("granularity", ["head", "token"])
@pytest.mark.parametrize("smooth", [False, True])
def test_fused_norm_rope_quantize_matches_stock_then_quantize(granularity, smooth):
    """RMSNorm across heads (torch's module) and Wan's interleaved RoPE in fp32, then our
    reference quantization: the fused kernel produces the same e4m3 values and scales."""
    from accel.kernels.norm_rope import norm_rope_quantize

    g = _gen()
    B, S, H, D = 2, 37, 3, 64
    x = (torch.randn(B, S, H * D, generator=g, device=DEVICE) * 3 + 1).bfloat16()
    weight = (torch.rand(H * D, generator=g, device=DEVICE) + 0.5).bfloat16()
    angles = torch.arange(S, device=DEVICE)[:, None] * torch.exp(
        -torch.arange(D // 2, device=DEVICE) / (D // 2) * math.log(1e4))[None, :]
    cos, sin = angles.cos(), angles.sin()
    norm = torch.nn.RMSNorm(H * D, eps=1e-6).to(DEVICE)
    norm.weight.data = weight.float()
    y = norm(x.float()).unflatten(2, (H, D))
    even, odd, c, s = y[..., 0::2], y[..., 1::2], cos[None, :, None], sin[None, :, None]
    roped = torch.empty_like(y)
    roped[..., 0::2], roped[..., 1::2] = even * c - odd * s, even * s + odd * c
    x8, descale, mean = norm_rope_quantize(x, weight, 1e-6, cos, sin, H, granularity, smooth)
    r8, rdescale = quantize_reference(roped.transpose(1, 2), granularity, smooth)
    mismatch = (x8.float() != r8.float()).float().mean().item()
    assert mismatch < (1e-3 if interpreting() else 2e-2)  # GPU: rsqrt.approx and FMA roundings
    assert torch.allclose(descale, rdescale, rtol=1e-3)
    assert (mean is None) == (not smooth)


@pytest.mark.parametrize("granularity", ["head", "token"])
@pytest.mark.parametrize("smooth", [False, True])
def test_fused_flux_norm_rope_quantize_matches_stock_then_quantize(granularity, smooth):
    """FLUX double-stream: text and image tokens each through their own per-head RMSNorm, joined
    (text first), diffusers' RoPE, then our reference quantization: the fused kernel reads the two
    projection outputs in place (one of them a strided view, as fused QKV projections give) and
    produces the same e4m3 values and scales."""
    from diffusers.models.embeddings import apply_rotary_emb

    from accel.kernels.norm_rope import norm_rope_quantize

    g = _gen()
    B, S_txt, S_img, H, D = 2, 21, 50, 3, 64
    txt = (torch.randn(B, S_txt, H * D, generator=g, device=DEVICE) * 2 - 1).bfloat16()
    img = (torch.randn(B, S_img, 3 * H * D, generator=g, device=DEVICE) * 3 + 1).bfloat16()[..., H * D: 2 * H * D]
    norms = [torch.nn.RMSNorm(D, eps=eps).to(DEVICE) for eps in (1e-6, 1e-5)]
    for norm in norms:
        norm.weight.data = (torch.rand(D, generator=g, device=DEVICE) + 0.5).bfloat16().float()
    S = S_txt + S_img
    angles = torch.arange(S, device=DEVICE)[:, None] * torch.exp(
        -torch.arange(D // 2, device=DEVICE) / (D // 2) * math.log(1e4))[None, :]
    cos, sin = angles.cos(), angles.sin()
    joint = torch.cat([norms[0](txt.float().unflatten(2, (H, D))), norms[1](img.float().unflatten(2, (H, D)))], 1)
    roped = apply_rotary_emb(joint, (cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)), sequence_dim=1)
    x8, descale, mean = norm_rope_quantize(img, norms[1].weight.bfloat16(), 1e-5, cos, sin, H, granularity, smooth,
                                           per_head_norm=True, prefix=(txt, norms[0].weight.bfloat16(), 1e-6))
    r8, rdescale = quantize_reference(roped.transpose(1, 2), granularity, smooth)
    assert x8.shape == (B, H, S, D)
    mismatch = (x8.float() != r8.float()).float().mean().item()
    assert mismatch < (1e-3 if interpreting() else 2e-2)  # GPU: rsqrt.approx and FMA roundings
    assert torch.allclose(descale, rdescale, rtol=1e-3)
    assert (mean is None) == (not smooth)


def test_fused_norm_rope_rejects_what_it_cannot_read():
    from accel.kernels.norm_rope import norm_rope_quantize

    x = torch.randn(1, 8, 2 * 64, device=DEVICE).bfloat16()
    cos = sin = torch.ones(8, 32, device=DEVICE)
    with pytest.raises(ValueError, match="weight"):
        norm_rope_quantize(x, torch.ones(2 * 64, device=DEVICE), 1e-6, cos, sin, 2, "token", per_head_norm=True)
    with pytest.raises(ValueError, match="cos and sin"):
        norm_rope_quantize(x, torch.ones(64, device=DEVICE), 1e-6, cos, sin, 2, "token", per_head_norm=True,
                           prefix=(x, torch.ones(64, device=DEVICE), 1e-6))
    with pytest.raises(ValueError, match="head_dim"):
        norm_rope_quantize(x, torch.ones(2 * 64, device=DEVICE), 1e-6, cos, sin, 4, "token")


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_norm_rope_benchmark_compares_like_with_like(family):
    """benchmarks/norm_rope.py times two paths to the same e4m3 Q and K: check they agree."""
    from accel.benchmarking.norm_rope import variants

    unfused, fused = variants(family, 2, 0 if family == "wan" else 24, 40, "token", _gen())
    for slow, fast in zip(unfused(), fused()):
        assert slow[0].shape == fast[0].shape
        # the bf16 roundings the fused path skips flip ~5% of e4m3 roundings by one step: measured
        # 0.014-0.016 on the dequantized values (a wrong norm or rotation gives ~1)
        assert rel_l2(slow[0].float() * slow[1][..., None], fast[0].float() * fast[1][..., None]) < 0.03


@pytest.mark.parametrize("smooth_v", [False, True])
def test_prequantized_qk_on_our_kernel_and_fa3(smooth_v, fake_fa3):
    """Q and K from the fused norm + RoPE kernel, V straight from its projection (B, S, H, D), as
    the processors hand them over: our kernel and FA3's FP8 path (a stand-in computing exact
    attention on the e4m3 inputs it gets) agree up to the FP8 error of P and V alone."""
    from accel.backends import BACKENDS, AttentionCall
    from accel.kernels import ops

    g = _gen()
    B, S, H, D = 1, 70, 2, 64
    q, k = (torch.randn(B, S, H * D, generator=g, device=DEVICE).bfloat16() for _ in "qk")
    v = torch.randn(B, S, H, D, generator=g, device=DEVICE) + torch.randn(D, generator=g, device=DEVICE) * 4
    v = v.bfloat16()  # channel offsets of ~4 sigma: what smooth_v removes
    ones = torch.ones(H * D, device=DEVICE)
    cos, sin = torch.ones(S, D // 2, device=DEVICE), torch.zeros(S, D // 2, device=DEVICE)  # no rotation
    q8, qd, _ = ops.norm_rope_quantize(q, ones, 1e-6, cos, sin, H, "head", False)
    k8, kd, _ = ops.norm_rope_quantize(k, ones, 1e-6, cos, sin, H, "head", True)
    view = q.unflatten(-1, (H, D)).transpose(1, 2)
    call = AttentionCall(view, view, v.transpose(1, 2), False, D ** -0.5, "bshd", "head", True, False, smooth_v)
    ours = BACKENDS["triton"].run_prequantized(q8, qd, k8, kd, call)
    fa3 = BACKENDS["fa3"].run_prequantized(q8, qd, k8, kd, call)
    assert fake_fa3.calls == [torch.float8_e4m3fn]
    assert ours.shape == fa3.shape == v.shape and ours.dtype == fa3.dtype == torch.bfloat16
    q_deq, k_deq = q8.double() * qd[..., None, None], k8.double() * kd[..., None, None]
    exact = torch.softmax(q_deq @ k_deq.transpose(-1, -2) * D ** -0.5, -1) @ v.transpose(1, 2).double()
    for out in (ours, fa3):  # measured 0.005-0.007 (V, and P for ours, in e4m3), 0.002 with smooth_v
        assert rel_l2(out.transpose(1, 2), exact) < 0.02


@pytest.mark.parametrize("shape", SHAPES)
def test_query_quantized_in_the_attention_kernel_is_the_same(shape):
    """Per-token calls hand the kernel the bf16 query (any strides, padded head dims, a NaN row):
    it quantizes each tile exactly as the quantization kernel would."""
    from accel.kernels import ops

    B, H, Sq, Skv, D = shape
    q, k, v = activation_like_qkv(B, H, Sq, Skv, D, "activation", layout="bshd", device=DEVICE, generator=_gen())
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, S, D) views of diffusers' layout
    q[0, 0, Sq // 2, 0] = float("nan")
    q8, k8, v8t, qd, kd, vd, v_mean, _ = ops.quantize_qkv(q, k, v, "token", True, True, True, False)
    outs = [ops.fp8_attention(query, k8, v8t, descale, kd, vd, v_mean, D, D ** -0.5, False, q.dtype, "bhsd", True)
            for query, descale in ((q8, qd), (q, kd.new_empty((0,))))]
    (a, lse_a), (b, lse_b) = ((out.nan_to_num(7.0), lse.nan_to_num(7.0)) for out, lse in outs)
    assert outs[1][0][0, 0, Sq // 2].isnan().all() and outs[1][0].isnan().sum() == D  # the NaN row alone
    if interpreting():
        assert torch.equal(a, b) and torch.equal(lse_a, lse_b)
    else:  # the same fp32 arithmetic, scheduled by another compilation
        assert rel_l2(a, b) < 1e-3 and torch.allclose(lse_a, lse_b, atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_query_quantized_in_the_kernel_against_keys_per_head(shape):
    """The query the kernel quantizes itself keeps one scale per row against K's and V's one per
    head (the Gluon kernel's ``"head"`` calls): the reference numerics of that mix. (Against exact
    attention it is as accurate as one scale per head for Q: 0.85-1.12x its error in the
    reference, most often below 1.)"""
    from accel.backends.reference import attention_reference
    from accel.kernels import ops

    B, H, Sq, Skv, D = shape
    q, k, v = activation_like_qkv(B, H, Sq, Skv, D, "activation", layout="bshd", device=DEVICE, generator=_gen())
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    k8, v8t, kd, vd, v_mean = ops.quantize_kv(k, v, "head", True, False, True)
    out, lse = ops.fp8_attention(q, k8, v8t, kd, kd, vd, v_mean, D, D ** -0.5, False, q.dtype, "bhsd", True)
    q8_rows, qd_rows = quantize_reference(q, "token")
    k8_ref, kd_ref = quantize_reference(k, "head", smooth=True)
    v8_ref, vd_ref = quantize_reference(v, "head")
    ref, ref_lse = attention_reference(q8_rows, k8_ref, v8_ref, qd_rows, kd_ref, vd_ref, D ** -0.5)
    if interpreting():  # the same fp32 arithmetic
        assert rel_l2(out, ref) < TOL and torch.allclose(lse, ref_lse, atol=1e-3, rtol=1e-4)
    else:  # FP8 tensor cores accumulate Q K^T in less than fp32: LSEs of ~100 move by up to ~0.1
        exact, _ = exact_attention(q, k, v)
        assert rel_l2(out, ref) <= 0.5 * rel_l2(ref, exact)
        assert torch.allclose(lse, ref_lse, rtol=3e-3)


def test_which_calls_hand_the_kernel_their_query():
    """Up to QUANTIZE_Q_IN_KERNEL_MAX_KEYS keys the attention kernel quantizes Q itself: the Gluon
    kernel at both granularities where TMA can read the query, the Triton kernel per token; never
    with smooth-Q (Q's mean comes off first)."""
    from accel.backends.base import AttentionCall
    from accel.backends.triton_backend import _query_in_kernel
    from accel.kernels.configs import QUANTIZE_Q_IN_KERNEL_MAX_KEYS as max_keys

    def call(keys, granularity="head", smooth_q=False, query=None):
        q = torch.empty(1, 300, 4, 128, dtype=torch.bfloat16).transpose(1, 2) if query is None else query
        kv = torch.empty(1, 4, keys, 128, dtype=torch.bfloat16)
        return AttentionCall(q, kv, kv, False, 0.1, "bshd", granularity, True, False, False, smooth_q)

    for granularity in ("head", "token"):
        assert _query_in_kernel("gluon", call(max_keys, granularity))
        assert not _query_in_kernel("gluon", call(max_keys + 1, granularity))
        assert not _query_in_kernel("gluon", call(512, granularity, smooth_q=True))
    odd_rows = torch.empty(1, 300, 4, 136, dtype=torch.bfloat16)[..., 1:129].transpose(1, 2)
    assert not _query_in_kernel("gluon", call(512, query=odd_rows))
    assert _query_in_kernel("triton", call(512, "token")) and not _query_in_kernel("triton", call(512, "head"))
    assert not _query_in_kernel("triton", call(max_keys + 1, "token"))


def test_both_query_paths_through_fp8_sdpa(monkeypatch):
    """Per-token calls up to QUANTIZE_Q_IN_KERNEL_MAX_KEYS keys quantize Q in the attention
    kernel, longer ones in the quantization pass: the same numerics either way."""
    from accel.kernels import configs

    q, k, v = activation_like_qkv(1, 2, 200, 150, 64, "activation", layout="bshd", device=DEVICE, generator=_gen())
    outs = []
    for max_keys in (150, 149):  # in the kernel, then the pass
        monkeypatch.setattr(configs, "QUANTIZE_Q_IN_KERNEL_MAX_KEYS", max_keys)
        outs.append(accel.fp8_sdpa(q, k, v, layout="bshd", granularity="token", backend="triton", strict=True))
    if interpreting():
        assert torch.equal(*outs)
    else:
        assert rel_l2(*outs) < 1e-3


def test_quantize_tiles_do_not_change_results():
    """Any tile configuration of the quantization passes gives the same bytes (up to rare
    one-step roundings where a smoothed channel mean is summed in other chunks)."""
    from accel.kernels.configs import QuantizeConfig
    from accel.kernels.quantize import QuantizeJob, quantize_many

    q, k, v = activation_like_qkv(1, 2, 300, 300, 64, "activation", device=DEVICE, generator=_gen())
    job_list = [QuantizeJob(q, "head"), QuantizeJob(k, "token", True), QuantizeJob(v, "head", False, True)]
    a = quantize_many(job_list)
    b = quantize_many(job_list, QuantizeConfig(stats_tokens=64, stats_block=16, stats_warps=8,
                                               cast_block=32, cast_warps=8))
    for job, x, y in zip(job_list, a, b):
        x8, y8 = (t.x8[..., :300].float() for t in (x, y))  # V's token padding is never written
        mismatch = (x8 != y8).float().mean().item()
        assert mismatch == 0 if not job.smooth else mismatch < 1e-3
        assert torch.allclose(x.descale, y.descale, rtol=1e-6)


@pytest.mark.parametrize("tokens", [45, 300])
def test_one_launch_quantization_matches_the_passes(tokens, monkeypatch):
    """Short tensors take one launch, each cast program computing its head's statistics itself:
    the same bytes, descales and means as the statistics passes (up to rare one-step roundings
    where a smoothed channel mean is summed in another order), at every granularity and layout."""
    from accel.kernels import quantize
    from accel.kernels.configs import default_quantize_config
    from accel.kernels.quantize import QuantizeJob, quantize_many

    statistics_passes = []
    run_statistics = quantize._statistics
    monkeypatch.setattr(quantize, "_statistics", lambda *a: statistics_passes.append(1) or run_statistics(*a))

    q, k, v = activation_like_qkv(2, 3, tokens, tokens, 64, "activation", device=DEVICE, generator=_gen())
    k_bshd = activation_like_qkv(2, 3, tokens, tokens, 64, "offset_k", layout="bshd", device=DEVICE,
                                 generator=_gen())[1].transpose(1, 2)  # diffusers' strides, read in place
    job_sets = [
        [QuantizeJob(q, "head"), QuantizeJob(k, "token", True), QuantizeJob(v, "channel", False, True)],
        [QuantizeJob(k_bshd, "head", True), QuantizeJob(v, "head", True, True, "mma")],
        [QuantizeJob(q, "token")],
    ]
    passes = default_quantize_config()._replace(one_launch_tokens=0)
    one_launch = passes._replace(one_launch_tokens=tokens)
    for jobs in job_sets:
        statistics_passes.clear()
        a = quantize_many(jobs, passes)
        torch.empty(10_000_000, device=DEVICE).fill_(float("nan"))  # dirty a GPU allocator's memory
        b = quantize_many(jobs, one_launch)
        needs_statistics = any(job.smooth or job.granularity != "token" for job in jobs)
        assert len(statistics_passes) == needs_statistics  # only the passes' call ran them
        for job, x, y in zip(jobs, a, b):
            mismatch = (x.x8.float() != y.x8.float()).float().mean().item()
            assert mismatch == 0 if not job.smooth else mismatch < 1e-3, job.granularity
            assert torch.allclose(x.descale, y.descale, rtol=1e-6), job.granularity
            if job.smooth:
                assert torch.allclose(x.mean, y.mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("granularity", ["head", "token"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_smooth_q_and_hadamard_match_reference(granularity, is_causal):
    q, k, v = activation_like_qkv(1, 2, 70, 70, 64, "activation", device=DEVICE, generator=_gen())
    q = (q.float() + 3.0).bfloat16()  # a channel offset for smooth_q to remove
    for extra in (dict(smooth_q=True), dict(hadamard=True), dict(smooth_q=True, smooth_v=True, hadamard=True)):
        out, lse = accel.fp8_sdpa(q, k, v, granularity=granularity, is_causal=is_causal, backend="triton",
                                  return_lse=True, **extra)
        ref, ref_lse = accel.fp8_sdpa(q, k, v, granularity=granularity, is_causal=is_causal, backend="reference",
                                      return_lse=True, **extra)
        if interpreting():
            assert rel_l2(out, ref) < TOL, extra
            assert torch.allclose(lse, ref_lse, atol=1e-3, rtol=1e-4)
        else:
            exact, _ = exact_attention(q, k, v, is_causal=is_causal)
            assert rel_l2(out, ref) <= 0.5 * rel_l2(ref, exact) + 1e-6, extra
