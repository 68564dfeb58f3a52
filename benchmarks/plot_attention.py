"""Chart of an attention benchmark run: speedup over cuDNN bf16 against sequence length.

    python benchmarks/plot_attention.py benchmarks/data/attention-h200-2026-11-27.json out.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = {  # method -> label; the whole call from bf16 inputs unless said
    "accel-triton-head": "accel (our kernels), per-head (quant. incl.)",
    "accel-triton-token": "accel (our kernels), per-token (quant. incl.)",
    "accel-fa3-head": "accel quant. + FA3 FP8",
    "fa3-fp8-kernel-only": "FA3 FP8 kernel only (pre-quantized)",
    "fa3-bf16": "FA3 bf16",
    "sdpa-flash-bf16": "torch flash bf16",
}


def main(src: str, dst: str) -> None:
    data = json.load(open(src))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120, sharey=True)
    for ax, d in zip(axes, (128, 64)):
        rows = sorted((r for r in data["table"] if r["d"] == d and r["sq"] == r["skv"]), key=lambda r: r["sq"])
        seq = [r["sq"] for r in rows]
        for method, label in SERIES.items():
            if not any("ms" in r["results"].get(method, {}) for r in rows):
                continue  # not in this run
            ratios = [r["results"]["sdpa-cudnn-bf16"]["ms"] / r["results"][method]["ms"]
                      if "ms" in r["results"].get(method, {}) else float("nan") for r in rows]
            ax.plot(seq, ratios, "o-", label=label)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(seq, [str(s) for s in seq], rotation=30)
        ax.minorticks_off()
        ax.set_xlabel("tokens (self-attention, B=1)")
        ax.set_title(f"head dim {d}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup over cuDNN bf16 SDPA")
    axes[1].legend(fontsize=7, loc="lower right")
    env = data["env"]
    fig.suptitle(f"{env['device']}, torch {env['torch']}, triton {env['triton']}, {env['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(*sys.argv[1:3])
