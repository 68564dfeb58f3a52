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

from accel.testing import INPUT_KINDS, activation_like_qkv, rel_l2

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max


def round_trip(k: torch.Tensor, group: int | None) -> torch.Tensor:
    """K (or Q) (B, H, S, D) fp64 through e4m3 with one scale per group of ``group`` tokens
    counted from the last one (None: one per head)."""
    amax = k.abs().amax(dim=-1)  # (B, H, S)
    if group is None:
        scale = amax.amax(dim=-1, keepdim=True).expand_as(amax)
    else:
        pad = -amax.shape[-1] % group
        gmax = torch.nn.functional.pad(amax, (pad, 0)).unflatten(-1, (-1, group)).amax(dim=-1)
        scale = gmax.repeat_interleave(group, dim=-1)[..., pad:]
    descale = (scale / E4M3_MAX).clamp_min(1e-30).unsqueeze(-1)
    return (k / descale).to(torch.float8_e4m3fn).double() * descale


def attention(q, k, v):
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.softmax(s, dim=-1) @ v


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=2048)
    args = p.parse_args(argv)
    granularities = {"head": None, "group128": 128, "group64": 64, "group32": 32, "token": 1}
    print(f"rel. L2 against exact attention, only K through e4m3 (2 heads, 512 queries, {args.tokens} keys, "
          f"D = 128, mean of {args.seeds} seeds); 'x norms': the keys scaled by exp(N(0, 1/4)) per token")
    print(f"{'input kind':<22}" + "".join(f"{n:>10}" for n in granularities))
    for kind in INPUT_KINDS:
        for varied in (False, True):
            errs = {n: 0.0 for n in granularities}
            for seed in range(args.seeds):
                g = torch.Generator().manual_seed(seed)
                q, k, v = (t.double() for t in activation_like_qkv(1, 2, 512, args.tokens, 128, kind, generator=g))
                if varied:
                    k = k * torch.exp(0.5 * torch.randn(args.tokens, generator=g, dtype=torch.float64)).view(-1, 1)
                k = k - k.mean(dim=2, keepdim=True)  # smooth_k, as the product does
                ref = attention(q, k, v)
                for n, group in granularities.items():
                    errs[n] += rel_l2(attention(q, round_trip(k, group), v), ref) / args.seeds
            print(f"{kind + (' x norms' if varied else ''):<22}" + "".join(f"{errs[n]:10.5f}" for n in granularities))
    # Which operand's per-token scale buys the accuracy: Q's (free in the kernel: a row factor) or K's?
    schemes = {"head/head": (None, None), "Q token": (1, None), "K token": (None, 1), "token/token": (1, 1)}
    print(f"\nQ and K through e4m3 (granularity of Q / of K), same inputs without the varied norms")
    print(f"{'input kind':<22}" + "".join(f"{n:>13}" for n in schemes))
    for kind in INPUT_KINDS:
        errs = {n: 0.0 for n in schemes}
        for seed in range(args.seeds):
            g = torch.Generator().manual_seed(seed)
            q, k, v = (t.double() for t in activation_like_qkv(1, 2, 512, args.tokens, 128, kind, generator=g))
            k = k - k.mean(dim=2, keepdim=True)
            ref = attention(q, k, v)
            for n, (gq, gk) in schemes.items():
                errs[n] += rel_l2(attention(round_trip(q, gq), round_trip(k, gk), v), ref) / args.seeds
        print(f"{kind:<22}" + "".join(f"{errs[n]:13.5f}" for n in schemes))


if __name__ == "__main__":
    main()
