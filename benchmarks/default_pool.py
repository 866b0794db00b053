"""The shipped model's default sampler pooled over every seed it was sampled on (0-4, 5,000 molecules).

The default now (51 moves, four corrector steps after each move that ends at t <= 200; 97 calls) is
the sampler screen's `r4-below200-51x4` cell, seeds 0-4 (benchmarks/results/sampler-screen/metrics.json).
The earlier default (32 moves, two corrector steps after each; 98 calls) on the same weights lives
in two studies: the sampler screen's `card-adaptive` (seeds 0, 3, 4) and the cooldown's `cooldown`
(seeds 1, 2; benchmarks/results/cooldown/metrics.json), 1,000 molecules per seed. This prints both
pools as the README's quality-table rows:

    python benchmarks/default_pool.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_grid import pct, pooled  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = ((RESULTS / "sampler-screen" / "metrics.json", "card-adaptive"),
           (RESULTS / "cooldown" / "metrics.json", "cooldown"))


DEFAULT = (RESULTS / "sampler-screen" / "metrics.json", "r4-below200-51x4")


def shipped_runs() -> list[dict]:
    """The earlier default sampler's per-seed runs on the shipped weights, from both studies, by seed."""
    runs = [r for path, label in SOURCES for r in json.loads(path.read_text())[label]["runs"]]
    return sorted(runs, key=lambda r: r["seed"])


def default_runs() -> list[dict]:
    """The default sampler's per-seed runs on the shipped weights, by seed."""
    path, label = DEFAULT
    return sorted(json.loads(path.read_text())[label]["runs"], key=lambda r: r["seed"])


def main() -> int:
    for name, runs in (("adaptive, default", default_runs()), ("adaptive, earlier default", shipped_runs())):
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds) or len({r["network_calls"] for r in runs}) != 1:
            print("default_pool.py: the cells overlap in seeds or differ in network calls", file=sys.stderr)
            return 2
        mean, n, calls = pooled({"runs": runs}, seeds)
        print(f"| {name}, seeds {','.join(map(str, seeds))} ({n:,} molecules, {calls:.0f} calls) | "
              f"{pct(mean['atom_stability'])} | {pct(mean['molecule_stability'])} | {pct(mean['validity'])} | "
              f"{pct(mean['valid_and_unique'])} | {pct(mean['novelty'])} | – | – |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
