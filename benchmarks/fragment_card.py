"""The fragment-trained model without a fragment: does its unconditional card stay with the shipped model's?

`ead train --fragment-share 0.5` fine-tunes the shipped lineage with half of the molecules
carrying a held fragment (docs/fragments.md). Before it ships, its free molecules must stay within
noise of the model it started from. Both are sampled with the default sampler (adaptive, 32
ancestral moves, two corrector steps each at r = 0.5; 98 calls) on seeds 1 and 2, chosen before
sampling, 1,000 molecules per seed; the shipped model's cells are cooldown.py's (the same sampler,
seeds and weights), so both sets of cells live in one folder:

    python benchmarks/fragment_card.py cells > cells.json
    python benchmarks/sample_grid.py sample cells.json --out corrector/ --threads 1
    python benchmarks/fragment_card.py report corrector/ --json benchmarks/results/fragments/unconditional.json \\
        --update-doc docs/fragments.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cooldown  # noqa: E402
from sample_grid import cells_report_main  # noqa: E402

BLOCK = "fragment-card-table"
MODEL = "training/qm9-small-c9-fragment/model"
LABEL = "fragment-trained"


def cells() -> list[dict]:
    return [dict(c, label=LABEL, model=MODEL) for c in cooldown.cells()]


def render(res: dict) -> str:
    return cooldown.weights_table(res, ((cooldown.LABEL, "shipped (run 14, cpu12 EMA)"),
                                        (LABEL, "fragment-trained (from run 14)")), cooldown.SEEDS)


def main(argv=None) -> int:
    return cells_report_main(__doc__, cells, (cooldown.LABEL, LABEL), render, BLOCK, argv)


if __name__ == "__main__":
    raise SystemExit(main())
