"""The fragment-trained model without a fragment: does its unconditional card stay with the shipped model's?

`ead train --fragment-share P` fine-tunes the shipped lineage with a share P of the molecules
carrying a held fragment (docs/fragments.md). Before it ships, its free molecules must stay within
noise of the model it started from. Two fine-tunes are compared: P = 0.5 (its cells were sampled
from the run's exported model, now in the git history) and P = 0.25 (the candidate, `MODEL`). Both are sampled with the default sampler (adaptive, 32
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
MODEL = "training/qm9-small-c9-fragment25/model"   # the candidate's exported EMA weights
LABEL = "fragment-share-0.25"
EARLIER = "fragment-trained"   # the P = 0.5 fine-tune's cells (training/qm9-small-c9-fragment, in the history)
ROWS = ((cooldown.LABEL, "shipped (run 14, cpu12 EMA)"), (EARLIER, "fragment share 0.5 (from run 14)"),
        (LABEL, "fragment share 0.25 (from run 14)"))


def cells() -> list[dict]:
    return [dict(c, label=LABEL, model=MODEL) for c in cooldown.cells()]


def render(res: dict) -> str:
    return cooldown.weights_table(res, ROWS, cooldown.SEEDS)


def main(argv=None) -> int:
    return cells_report_main(__doc__, cells, tuple(label for label, _ in ROWS), render, BLOCK, argv)


if __name__ == "__main__":
    raise SystemExit(main())
