"""How much accuracy K's scale granularity costs, isolated (CPU, fp64; NOTES 49): exact
attention with only K replaced by its e4m3 round trip (one scale per head, per group of 32 / 64 /
128 keys counted from the last key, or per key; K smoothed first), on the test suite's input
kinds, as they are and with the keys' norms varied per token; then Q's and K's per-token scales
one at a time.

    python benchmarks/key_groups_numerics.py --seeds 3
"""

from __future__ import annotations

import argparse

import torch

from accel.kernels.numerics import E4M3_MAX
from accel.testing import INPUT_KINDS, activation_like_qkv, group_amax, rel_l2

EXACT = "exact"  # a scheme's Q left unquantized


def round_trip(x: torch.Tensor, group: int | None) -> torch.Tensor:
    """K (or Q) (B, H, S, D) fp64 through e4m3 with one scale per group of ``group`` tokens
    counted from the last one (None: one per head)."""
    if group is None:
        scale = x.abs().amax(dim=(-2, -1)).unsqueeze(-1)
    else:
        scale = group_amax(x, group)
    descale = (scale / E4M3_MAX).clamp_min(1e-30).unsqueeze(-1)
    return (x / descale).to(torch.float8_e4m3fn).double() * descale


def attention(q, k, v):
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.softmax(s, dim=-1) @ v


def mean_errors(kind: str, schemes: dict, seeds: int, tokens: int, varied_norms: bool = False) -> dict:
    """Each scheme's rel. L2 against exact attention, mean over seeds. A scheme is (Q's group, K's
    group) for :func:`round_trip`, Q's EXACT to leave Q unquantized."""
    errs = {n: 0.0 for n in schemes}
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        q, k, v = (t.double() for t in activation_like_qkv(1, 2, 512, tokens, 128, kind, generator=g))
        if varied_norms:
            k = k * torch.exp(0.5 * torch.randn(tokens, generator=g, dtype=torch.float64)).view(-1, 1)
        k = k - k.mean(dim=2, keepdim=True)  # smooth_k, as the product does
        ref = attention(q, k, v)
        for n, (gq, gk) in schemes.items():
            q_used = q if gq == EXACT else round_trip(q, gq)
            errs[n] += rel_l2(attention(q_used, round_trip(k, gk), v), ref) / seeds
    return errs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=2048)
    args = p.parse_args(argv)
    granularities = {"head": None, "group128": 128, "group64": 64, "group32": 32, "token": 1}
    print(f"rel. L2 against exact attention, only K through e4m3 (2 heads, 512 queries, {args.tokens} keys, "
          f"D = 128, mean of {args.seeds} seeds); 'x norms': the keys scaled by exp(N(0, 1/4)) per token")
    print(f"{'input kind':<22}" + "".join(f"{n:>10}" for n in granularities))
    k_only = {n: (EXACT, group) for n, group in granularities.items()}
    for kind in INPUT_KINDS:
        for varied in (False, True):
            errs = mean_errors(kind, k_only, args.seeds, args.tokens, varied)
            print(f"{kind + (' x norms' if varied else ''):<22}" + "".join(f"{errs[n]:10.5f}" for n in granularities))
    # Which operand's per-token scale buys the accuracy: Q's (free in the kernel: a row factor) or K's?
    schemes = {"head/head": (None, None), "Q token": (1, None), "K token": (None, 1), "token/token": (1, 1)}
    print(f"\nQ and K through e4m3 (granularity of Q / of K), same inputs without the varied norms")
    print(f"{'input kind':<22}" + "".join(f"{n:>13}" for n in schemes))
    for kind in INPUT_KINDS:
        errs = mean_errors(kind, schemes, args.seeds, args.tokens)
        print(f"{kind:<22}" + "".join(f"{errs[n]:13.5f}" for n in schemes))


if __name__ == "__main__":
    main()
