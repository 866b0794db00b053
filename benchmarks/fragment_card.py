"""The fragment-trained model without a fragment: does its unconditional card stay with the shipped model's?

`ead train --fragment-share P` fine-tunes the shipped lineage with a share P of the molecules
carrying a held fragment (docs/fragments.md). Before it ships, its free molecules must stay within
noise of the model it started from. Two fine-tunes are compared: P = 0.5 (its cells were sampled
from the run's exported model, now in the git history) and P = 0.25 (shipped as `qm9-fragment`).
Both are sampled with the earlier default sampler (adaptive, 32 ancestral moves, two corrector steps each
at r = 0.5; 98 calls), 1,000 molecules per seed:

- seeds 1 and 2, chosen before sampling; the shipped model's cells are cooldown.py's (the same
  sampler, seeds and weights), so both sets of cells live in one folder;
- all five seeds the shipped model's default sampler has been drawn on (0-4: its seeds 0, 3, 4 are
  the sampler screen's `card-adaptive` cells, pooled by default_pool.py from the committed results),
  for the candidate, so that one favourable seed pair of either model does not decide.

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
import default_pool  # noqa: E402
from sample_grid import cells_report_main  # noqa: E402

BLOCK = "fragment-card-table"
MODEL = "src/ead/pretrained/qm9-fragment"   # the candidate (run qm9-small-c9-fragment25's EMA weights)
LABEL = "fragment-share-0.25"
EARLIER = "fragment-trained"   # the P = 0.5 fine-tune's cells (training/qm9-small-c9-fragment, in the history)
ROWS = ((cooldown.LABEL, "shipped (run 14, cpu12 EMA)"), (EARLIER, "fragment share 0.5 (from run 14)"),
        (LABEL, "fragment share 0.25 (from run 14)"))
FIVE = [0, 1, 2, 3, 4]


def cells() -> list[dict]:
    return [dict(cooldown.cell(LABEL, MODEL), seeds=FIVE)]


def render(res: dict) -> str:
    pair = cooldown.weights_table(res, ROWS, cooldown.SEEDS)
    five = cooldown.weights_table({"shipped-five": {"runs": default_pool.shipped_runs()}, **res}, (("shipped-five", ROWS[0][1]), ROWS[2]), FIVE)
    return pair + "\n\nOver seeds 0-4:\n\n" + five


def main(argv=None) -> int:
    return cells_report_main(__doc__, cells, tuple(label for label, _ in ROWS), render, BLOCK, argv)


if __name__ == "__main__":
    raise SystemExit(main())
