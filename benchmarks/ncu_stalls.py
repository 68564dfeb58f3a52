"""Where an attention kernel's main loop stalls, from Nsight Compute's SASS source page.

Reads ``ncu --import REP --page source --csv --print-source sass`` output (``gpu_session.sh 21``
and ``22`` write it) and, for each profiled kernel, takes its main loop as the instructions
executed as often as its hottest ``MUFU.EX2`` (one key block each), then prints the loop's
instruction mix and its warp-stall samples by reason and by opcode (percent of the loop's
samples). No GPU needed:

    python benchmarks/ncu_stalls.py ncu-d128-sass.csv
"""

from __future__ import annotations

import argparse
import collections
import csv

REASONS = ("wait", "selected", "short_sb", "long_sb", "not_selected", "dispatch", "mio", "barrier", "math")


def read_kernels(path: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(kernel name, header, rows) per kernel in the file."""
    kernels = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            if row[0] == "Kernel Name":
                kernels.append((row[1], [], []))
            elif row[0] == "Address" and kernels:
                kernels[-1][1].extend(row)
            elif kernels and kernels[-1][1]:
                kernels[-1][2].append(row)
    return kernels


def opcode(source: str) -> str:
    words = source.split()
    return (words[1] if words[0].startswith("@") else words[0]).split(".")[0]


def summarize(name: str, header: list[str], rows: list[list[str]]) -> str:
    samples = header.index("Warp Stall Sampling (All Samples)")
    executed = header.index("Instructions Executed")
    stalls = {c[len("stall_"):]: i for i, c in enumerate(header) if c.startswith("stall_") and "Not Issued" not in c}
    ex2 = [int(r[executed]) for r in rows if "MUFU.EX2" in r[1]]
    if not ex2:
        return f"{name[:90]}: no MUFU.EX2 (not an attention kernel?)"
    loop = [r for r in rows if int(r[executed]) == max(ex2)]
    total = sum(int(r[samples]) for r in loop) or 1
    everywhere = sum(int(r[samples]) for r in rows) or 1
    by_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    mix: collections.Counter = collections.Counter()
    for r in loop:
        op = opcode(r[1])
        mix[op] += 1
        for reason, i in stalls.items():
            by_op[op][reason] += int(r[i])
    by_reason = collections.Counter()
    for counts in by_op.values():
        by_reason.update(counts)
    lines = [f"{name[:100]}",
             f"  main loop: {len(loop)} instructions (executed {max(ex2)} times each), "
             f"{100 * total / everywhere:.0f}% of the kernel's stall samples",
             "  mix: " + ", ".join(f"{op} {n}" for op, n in mix.most_common(12)),
             "  stalls: " + ", ".join(f"{r} {100 * n / total:.1f}%" for r, n in by_reason.most_common(9)),
             f"  {'opcode':<10}" + "".join(f"{r:>13}" for r in REASONS)]
    for op, counts in sorted(by_op.items(), key=lambda kv: -sum(kv[1].values()))[:8]:
        lines.append(f"  {op:<10}" + "".join(f"{100 * counts[r] / total:13.1f}" for r in REASONS))
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="+", help="ncu --page source --csv --print-source sass output")
    args = p.parse_args(argv)
    for path in args.csv:
        for kernel in read_kernels(path):
            print(summarize(*kernel), end="\n\n")


if __name__ == "__main__":
    main()
