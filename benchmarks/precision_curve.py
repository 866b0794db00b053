"""Two training logs of the same run in two precisions (or any two runs), compared over their common
steps: the logged training loss (each row the mean over its 50 steps) in blocks, the blocks'
difference, and whether it stays within the noise of the loss itself; a PNG of both curves.

    python benchmarks/precision_curve.py FP32_LOG BF16_LOG --labels float32,bf16-mixed \
        --out docs/figures/bf16_vs_fp32_small.png [--block 250] [--json F]

"Within noise": each block's difference is compared with 1.96 standard errors of a difference of
two block means, the standard error taken from the spread of the logged rows inside the block.
The first block holds the steepest fall of the loss and is shown but not judged.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def losses(log: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(log)) if r.get("loss")}


def blocks(a: dict, b: dict, block: int) -> list[dict]:
    """Per block of `block` steps over the steps both logs have: both means, their difference and
    its 95 % noise band (from the rows' spread in the block)."""
    steps = sorted(set(a) & set(b))
    out = []
    for start in range(0, steps[-1] if steps else 0, block):
        inside = [s for s in steps if start < s <= start + block]
        if len(inside) < 2:
            continue
        xa, xb = [a[s] for s in inside], [b[s] for s in inside]
        se = math.sqrt((statistics.variance(xa) + statistics.variance(xb)) / len(inside))
        d = statistics.mean(xb) - statistics.mean(xa)
        out.append({"steps": f"{inside[0]}-{inside[-1]}", "a": statistics.mean(xa), "b": statistics.mean(xb),
                    "diff": d, "band": 1.96 * se, "within": abs(d) <= 1.96 * se})
    return out


def table(rows: list[dict], labels) -> str:
    lines = [f"| steps | {labels[0]} | {labels[1]} | difference | 95 % noise band | within |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        judged = "(not judged)" if i == 0 else ("yes" if r["within"] else "**no**")
        lines.append(f"| {r['steps']} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f} | ±{r['band']:.4f} | {judged} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--labels", default="float32,bf16-mixed")
    p.add_argument("--block", type=int, default=250)
    p.add_argument("--out", type=Path, default=None, help="PNG of both curves")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    labels = args.labels.split(",")
    for log in (args.a, args.b):
        if not log.is_file():
            print(f"precision_curve.py: no log {log}", file=sys.stderr)
            return 2
    a, b = losses(args.a), losses(args.b)
    rows = blocks(a, b, args.block)
    if not rows:
        print("precision_curve.py: the logs share fewer than two logged steps per block", file=sys.stderr)
        return 2
    print(table(rows, labels))
    judged = rows[1:]
    print(f"\n{sum(r['within'] for r in judged)} of {len(judged)} judged blocks within noise; "
          f"steps compared: {rows[0]['steps'].split('-')[0]}-{rows[-1]['steps'].split('-')[1]}")
    if args.out:
        common = sorted(set(a) & set(b))
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for d, label in ((a, labels[0]), (b, labels[1])):
            ax.plot(common, [d[s] for s in common], label=label, lw=1)
        ax.set_xlabel("step (batch 64)")
        ax.set_ylabel("training loss (mean over 50 steps)")
        ax.set_ylim(top=max(min(max(a[s] for s in common), 0.6), min(a[s] for s in common) * 1.5))
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)
    if args.json:
        Path(args.json).write_text(json.dumps({"labels": labels, "block": args.block, "blocks": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
