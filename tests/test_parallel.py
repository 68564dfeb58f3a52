"""FP8 attention under diffusers' context parallelism (accel.parallel), on the CPU.

The multi-process tests run diffusers' real Ulysses all-to-all, ring all-gather + LSE merge and
input/output sharding hooks, over gloo, in spawned processes. One patch makes that possible:
``ModelMixin._resolve_parallel_config`` (diffusers 0.42.1, modeling_utils.py line 1719) computes
``rank % torch.accelerator.device_count()``, which is 0 on a machine without accelerators
(ZeroDivisionError). The workers make it return 1; the device type comes from
``torch._C._get_accelerator()`` ("cpu"), so the device mesh is a CPU (gloo) mesh.
"""

import types
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import accel
from accel._warnings import AccelFallbackWarning
from accel.parallel import _fp8_forward_op, fp8_context_parallel_attention, keys_per_call
from accel.processors.common import FP8Numerics
from accel.testing import activation_like_qkv, exact_attention, rel_l2
from error_bounds import BOUNDS
from tiny_models import flux_inputs, tiny_flux, tiny_wan, wan_inputs

REFERENCE = FP8Numerics(granularity="token", backend="reference")
# Ring attention quantizes each K/V shard with its own scales: a different FP8 rounding of the
# same attention, merged exactly. Against the single-process FP8 model that is FP8 noise diluted
# by the model (measured 0.004-0.005, like FP8 vs stock); a lost shard or a misplaced token is
# far above. (A tiny random model's attention is near-uniform, so it barely sees how the shards
# are weighed: _attention_errors checks the LSE merge.)
RING_BOUND = 0.02
# Ulysses gives each rank whole sequences: the very same FP8 attention as in one process.
ULYSSES_BOUND = 1e-6
# FP8 vs the bf16 stock model (test_processors.py's MODEL_BOUND)
MODEL_BOUND = 0.03


# ---- one process: the forward op's contract with diffusers -------------------------------------

@pytest.mark.parametrize("numerics", [REFERENCE, FP8Numerics("head", smooth_v=True, backend="reference")])
def test_forward_op_returns_natural_log_lse_in_model_layout(numerics, gen):
    """diffusers' ring merge takes (B, S, H) natural-log LSEs of the true scores; the output is
    fp8_sdpa's with the processor's numerics."""
    q, k, v = activation_like_qkv(2, 3, 40, 56, 64, "offset_k", layout="bshd", generator=gen)
    out, lse = _fp8_forward_op(None, q, k, v, return_lse=True, numerics=numerics)
    expected = accel.fp8_sdpa(q, k, v, layout="bshd", granularity=numerics.granularity,
                              smooth_k=numerics.smooth_k, smooth_v=numerics.smooth_v, backend="reference")
    assert torch.equal(out, expected)
    assert lse.shape == (2, 40, 3) and lse.dtype == torch.float32
    _, exact_lse = exact_attention(q, k, v, layout="bshd")  # (B, H, S), of the unsmoothed scores
    assert (lse.double() - exact_lse.transpose(1, 2)).abs().max() < 0.02 + 0.03 * exact_lse.abs().max()
    # without LSE (Ulysses), the output alone
    assert torch.equal(_fp8_forward_op(None, q, k, v, numerics=numerics), expected)


def test_forward_op_refuses_masks():
    q = torch.zeros(1, 4, 1, 16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="no mask"):
        _fp8_forward_op(None, q, q, q, torch.ones(4, 4, dtype=torch.bool), numerics=REFERENCE)


def test_keys_per_call_counts_what_each_kernel_call_sees():
    """FP8Numerics.min_keys is judged on a call's keys: Ulysses gathers the whole sequence,
    ring calls see one shard."""
    config = types.SimpleNamespace  # stands for diffusers' ParallelConfig / ContextParallelConfig
    ulysses = config(context_parallel_config=config(ulysses_degree=4, ring_degree=1))
    ring = config(context_parallel_config=config(ulysses_degree=1, ring_degree=4))
    assert keys_per_call(1000, None) == 1000
    assert keys_per_call(1000, ulysses) == 4000
    assert keys_per_call(1000, ring) == 1000
    assert keys_per_call(1000, config(context_parallel_config=None)) == 1000  # tensor parallel only


# ---- several processes over gloo: diffusers' real context parallelism --------------------------

def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0].float()


def _bf16(model, inputs):
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    return model.to(torch.bfloat16), inputs


def _with_fp8(model, family):
    cls = accel.WanFP8AttnProcessor if family == "wan" else accel.FluxFP8AttnProcessor
    model.set_attn_processor(cls(backend="reference"))
    return model


def _worker(rank, world, init_file, configs, families, queue):
    """Each family: the bf16 stock and FP8 models in this process alone, then FP8 under each
    context-parallel config; then one attention per config, and a backward. Rank 0 reports
    rel. L2 errors, the backward's error and any fallback warning."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.accelerator.device_count = lambda: 1  # see the module docstring: 0 on a CPU machine
    from diffusers import ContextParallelConfig

    builds = {"wan": (tiny_wan, wan_inputs), "flux": (tiny_flux, flux_inputs)}
    builds = {family: builds[family] for family in families}
    results, parallel_configs = {}, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AccelFallbackWarning)
        for family, (build, make_inputs) in builds.items():
            stock = _run(*_bf16(build(), make_inputs()))
            model, inputs = _bf16(_with_fp8(build(), family), make_inputs())
            single = _run(model, inputs)
            results[family, "single"] = rel_l2(single, stock)
            for name, degrees in configs.items():
                model, inputs = _bf16(_with_fp8(build(), family), make_inputs())
                model.enable_parallelism(config=ContextParallelConfig(**degrees))
                out = _run(model, inputs)
                results[family, name] = (rel_l2(out, single), rel_l2(out, stock))
                parallel_configs[name] = next(iter(model.attn_processors.values()))._parallel_config
        for name, config in parallel_configs.items():
            results["attention", name] = _attention_errors(config)
        results["backward"] = _backward_error(next(iter(parallel_configs.values())))
    results["fallbacks"] = [str(w.message) for w in caught if issubclass(w.category, AccelFallbackWarning)]
    if rank == 0:
        queue.put(results)
    dist.barrier()  # neither rank tears gloo down while the other may still talk to it
    dist.destroy_process_group()


def _attention_errors(config) -> tuple[float, float, float]:
    """One attention on K with channel offsets that differ between shards, so that smooth-K
    shifts each shard's scores differently: a wrong LSE merge is far off here (measured in one
    process: log2 LSEs 0.11-0.12, no smooth-K correction 0.36-0.42, equal weights 0.39-0.42,
    against 0.042-0.046 right), where a tiny model's near-uniform attention would hide it.
    Returns rel. L2 of the gathered FP8 context-parallel output against single-process FP8 and
    against exact attention, and of single-process FP8 against exact."""
    q, k, v = activation_like_qkv(1, 2, 64, 64, 64, "offset_k", layout="bshd",
                                  generator=torch.Generator().manual_seed(0))
    k[:, 32:] += 1.0  # the second half of the keys (another rank's shard): another mean
    world, rank = dist.get_world_size(), dist.get_rank()
    # the flattened (ring, ulysses) mesh's rank is the global one: the same sharding as the hooks
    local = (t.chunk(world, dim=1)[rank] for t in (q, k, v))
    with torch.no_grad():
        out = fp8_context_parallel_attention(*local, REFERENCE, config)
    parts = [torch.empty_like(out) for _ in range(world)]
    dist.all_gather(parts, out.contiguous())
    out = torch.cat(parts, dim=1)
    single = accel.fp8_sdpa(q, k, v, layout="bshd", granularity="token", backend="reference")
    exact = exact_attention(q, k, v, layout="bshd")[0].transpose(1, 2)
    return rel_l2(out, single), rel_l2(out, exact), rel_l2(single, exact)


def _backward_error(config) -> str:
    """What a backward through the FP8 context-parallel attention raises under ``config``."""
    q = torch.randn(1, 8, 2, 16, dtype=torch.bfloat16, requires_grad=True)
    out = fp8_context_parallel_attention(q, q, q, REFERENCE, config)
    try:
        out.float().sum().backward()
    except NotImplementedError as e:
        return str(e)
    return "no error"


def _spawn(world, configs, tmp_path, families=("wan", "flux")) -> dict:
    queue = mp.get_context("spawn").Queue()
    mp.spawn(_worker, args=(world, str(tmp_path / "rendezvous"), configs, families, queue), nprocs=world)
    return queue.get(timeout=10)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    configs = {"ulysses": {"ulysses_degree": 2}, "ring": {"ring_degree": 2}}
    return _spawn(2, configs, tmp_path_factory.mktemp("cp"))


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_ulysses_is_single_process_fp8_exactly(two_ranks, family):
    assert 0 < two_ranks[family, "single"] < MODEL_BOUND  # FP8 differs from stock, a little
    to_single, to_stock = two_ranks[family, "ulysses"]
    assert to_single < ULYSSES_BOUND  # so FP8 ran, not stock
    assert 0 < to_stock < MODEL_BOUND


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_ring_merges_fp8_shards(two_ranks, family):
    to_single, to_stock = two_ranks[family, "ring"]
    assert to_single < RING_BOUND
    assert 0 < to_stock < MODEL_BOUND


def test_ulysses_attention_is_single_process_fp8(two_ranks):
    to_single, to_exact, single_to_exact = two_ranks["attention", "ulysses"]
    assert to_single < ULYSSES_BOUND
    assert to_exact < BOUNDS["offset_k", "token"]


def test_ring_attention_merge_is_exact(two_ranks):
    """Per-shard FP8 merged by LSE: as accurate as one process's FP8 (0.046 here)."""
    to_single, to_exact, single_to_exact = two_ranks["attention", "ring"]
    assert to_exact < BOUNDS["offset_k", "token"]
    assert single_to_exact < BOUNDS["offset_k", "token"]
    assert to_single > 0  # each shard had its own scales: not the one-process rounding


def test_no_fallback_and_no_backward(two_ranks):
    assert two_ranks["fallbacks"] == []
    assert "inference-only" in two_ranks["backward"]


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    """Ring 2 x Ulysses 2 (diffusers' unified attention). Wan only: Flux's 10 text tokens do not
    split in 4."""
    configs = {"unified": {"ring_degree": 2, "ulysses_degree": 2}}
    return _spawn(4, configs, tmp_path_factory.mktemp("cp"), families=("wan",))


def test_ring_and_ulysses_together(four_ranks):
    to_single, to_stock = four_ranks["wan", "unified"]
    assert to_single < RING_BOUND
    assert 0 < to_stock < MODEL_BOUND
    to_single, to_exact, _ = four_ranks["attention", "unified"]
    assert 0 < to_single and to_exact < BOUNDS["offset_k", "token"]
    assert four_ranks["fallbacks"] == []
