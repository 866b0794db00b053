"""The shipped lineage with its learning rate decayed to zero, against the weights shipped before.

The lineage trained at a constant learning rate; its EMA validation loss had gone flat (0.13033 at
lr 5e-5). A cooldown stretch continues it with `--lr-schedule cosine` from 5e-5 to 0 over
--max-steps, the decay the recipe screen's leading arm ends with (docs/recipe.md). Both models are
sampled with the default sampler (adaptive, 32 ancestral moves, two corrector steps each at
r = 0.5; 98 calls) on seeds 1 and 2, chosen before sampling, 1,000 molecules per seed; the earlier
weights' cells are corrector.py's `pc32-anc-2x-r0.5` (the same sampler and seeds), so both sets of
cells live in one folder:

    ead train --data qm9 --preset small --window 9 --lr 5e-5 --lr-schedule cosine --max-steps 7000 \\
        --batch-size 64 --init-from training/qm9-small-c9-cpu11 --keep-checkpoints 1 --threads 1 \\
        --run-dir training/qm9-small-c9-cpu12
    python benchmarks/cooldown.py cells > cells.json
    python benchmarks/sample_grid.py sample cells.json --out corrector/ --threads 1
    python benchmarks/cooldown.py report corrector/ --json benchmarks/results/cooldown/metrics.json \\
        --update-doc docs/model-card.md

The second cooldown (cpu13) warms the learning rate of the shipped weights back up to 1e-4 and
decays it to 0 over 24,000 steps; it is judged against the shipped weights (cpu12's EMA, `qm9`) the
same way, with the sampler fixed before it was trained (the earlier default, a corrector after each
of 32 moves; the shipped ones are sampled again beside it, so that one folder holds the paired
cells), and with the default sampler of round four of the sampler screen, whose cells on the shipped
weights (`r4-below200-51x4`) come from that screen's committed numbers:

    bash scripts/train_shipped.sh --lr 1e-4 --warmup-steps 250 --lr-schedule cosine \\
        --max-steps 24000 --precision bf16-mixed
    python benchmarks/cooldown.py cells > cells.json
    python benchmarks/sample_grid.py sample cells.json --out cooldown2/ --threads 1
    python benchmarks/cooldown.py report cooldown2/ --known benchmarks/results/sampler-screen/metrics.json \\
        --json benchmarks/results/cooldown/metrics2.json --update-doc docs/model-card.md --block cooldown2-table
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corrector import CELLS as CORRECTOR_CELLS, EVERY_MOVE  # noqa: E402
from sampler_screen import CELLS as SCREEN_CELLS, DEFAULT as SCREEN_DEFAULT  # noqa: E402
from sample_grid import cells_report_main, difference, pct, pooled  # noqa: E402

BLOCK = "cooldown-table"
BASE = "pc32-anc-2x-r0.5"          # corrector.py's cell: the weights shipped before, the default sampler
MODEL = "training/qm9-small-c9-cpu12/model"
SEEDS = [1, 2]
LABEL = "cooldown"
# the second cooldown: (label, weights) of the shipped model it starts from, then its own
SECOND = (("shipped-cpu12", "qm9"), ("cooldown2", "training/qm9-small-c9-cpu13/model"))
# ... and with the default sampler now: the screen's cell on the shipped weights, and its own
NOW = "r4-below200-51x4"
NOW_OPTIONS = {**SCREEN_DEFAULT, **SCREEN_CELLS[NOW][1]}
SECOND_NOW = (NOW, ("cooldown2-now", "training/qm9-small-c9-cpu13/model"))


def cell(label: str, model: str, options: dict | None = None) -> dict:
    """The sampler of `options` (default: the earlier default) on `model`, 1,000 molecules per seed of SEEDS."""
    return {"label": label, "model": model, "sampler": "adaptive", "n": 1000, "seeds": SEEDS,
            "options": options or {**CORRECTOR_CELLS[BASE][0], **EVERY_MOVE}}


def cells() -> list[dict]:
    return [*(cell(label, model) for label, model in ((LABEL, MODEL), *SECOND)),
            cell(*SECOND_NOW[1], NOW_OPTIONS)]


def weights_table(res: dict, rows, seeds, *more) -> str:
    """One row per (cell label, name of its weights) over `seeds`, pooled; the first row is the
    reference the Δ columns of the others are taken against. Each further group of rows in `more`
    continues the same table with its own first row as its reference."""
    lines = ["| weights | seeds | molecules | calls | atom stab. | mol. stab. | Δ mol. stab. [95 %] | valid | "
             "Δ valid [95 %] | V×U | novelty | connected |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for group in (rows, *more):
        base = res.get(group[0][0])
        for label, name in group:
            e = res.get(label)
            if e is None:
                continue
            runs = [r for r in e["runs"] if r["seed"] in seeds]
            mean, n, calls = pooled(e, seeds)
            other = label != group[0][0] and base is not None
            lines.append(f"| {name} | {','.join(str(r['seed']) for r in runs)} | {n} | {calls:.0f} | "
                         f"{pct(mean['atom_stability'])} | {pct(mean['molecule_stability'])} | "
                         f"{difference(base, e, seeds=seeds) if other else '–'} | {pct(mean['validity'])} | "
                         f"{difference(base, e, 'validity', seeds=seeds) if other else '–'} | "
                         f"{pct(mean['valid_and_unique'])} | {pct(mean['novelty'])} | {pct(mean['connectivity'])} |")
    return "\n".join(lines)


def render(res: dict) -> str:
    if SECOND[1][0] in res:   # the second cooldown against the weights it started from
        earlier = ((SECOND[0][0], "shipped (cpu12 EMA), earlier default sampler"),
                   (SECOND[1][0], "second cooldown (cpu13 EMA), earlier default sampler"))
        now = ((NOW, "shipped (cpu12 EMA), default sampler"),
               (SECOND_NOW[1][0], "second cooldown (cpu13 EMA), default sampler"))
        return weights_table(res, earlier, SEEDS, *((now,) if SECOND_NOW[1][0] in res and NOW in res else ()))
    return weights_table(res, ((BASE, "shipped before (gpu5 EMA)"), (LABEL, "after the cooldown (cpu12 EMA)")), SEEDS)


def main(argv=None) -> int:
    return cells_report_main(__doc__, cells, (BASE, LABEL, SECOND[0][0], NOW), render, BLOCK, argv)


if __name__ == "__main__":
    raise SystemExit(main())
