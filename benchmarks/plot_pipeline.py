"""Chart of pipeline benchmark runs: one forward's speedup over cuDNN bf16 for each variant,
configurations ordered by the token count of their attentions.

    python benchmarks/plot_pipeline.py out.png benchmarks/data/pipeline-h200-2026-12-02-*.json

Each speedup is against the ``_native_cudnn`` row of the same file (the same process): timings
from different runs are never divided by each other.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from accel.benchmarking.pipeline import CONFIGS, TEXT_TOKENS  # noqa: E402

SERIES = {  # variant -> label
    "native": "diffusers native (bf16)",
    "fa3-bf16": "FA3 bf16",
    "torchao-style": "torchao-style: plain-torch per-head quant. + FA3 FP8",
    "torchao": "torchao apply_low_precision_attention (FA3 FP8)",
    "sageattn": "SageAttention (pip, INT8 QK)",
    "accel-speed": "accel speed",
    "accel-speed-triton": "accel speed, our kernel only",
    "accel-quality": "accel quality",
}


def tokens(name: str) -> int:
    """Keys per self-attention: video latents patchified 1x2x2; Flux's packed latents plus the
    text tokens of its joint attention."""
    family, _, latent = CONFIGS[name]
    if family == "wan":
        f, h, w = latent
        return f * (h // 2) * (w // 2)
    h, w = latent
    return h * w + TEXT_TOKENS


def speedups(paths: list[str]) -> dict[str, dict[str, float]]:
    """config -> variant -> speedup over the same file's ``_native_cudnn``."""
    out = {}
    for path in paths:
        for name, rows in json.load(open(path))["results"].items():
            if "1block" in name or "_native_cudnn" not in rows or "s" not in rows["_native_cudnn"]:
                continue
            base = rows["_native_cudnn"]["s"]
            out[name] = {v: base / r["s"] for v, r in rows.items() if isinstance(r, dict) and "s" in r}
    return out


def main(dst: str, *paths: str) -> None:
    data = speedups(list(paths))
    names = sorted(data, key=lambda n: (tokens(n), n))
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    for variant, label in SERIES.items():
        pts = [(i, data[n][variant]) for i, n in zip(x, names) if variant in data[n]]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(list(x), [f"{n}\n{tokens(n):,} tokens" for n in names], fontsize=8)
    ax.set_ylabel("speedup over cuDNN bf16 (one forward)")
    ax.set_title("Real-size transformers, random weights, batch 1 (H200)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], *sys.argv[2:])
