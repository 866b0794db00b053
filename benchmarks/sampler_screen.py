"""Round three of the sampler screen, on the weights shipped now (run 14, the lineage's cooldown).

Rounds one and two (corrector.py) chose the default sampler on run 12's weights: adaptive, 32
ancestral moves with two Langevin corrector steps each at r = 0.5 (98 network calls). This round
asks again on the shipped weights, at the same ≤ 100 calls: the corrector's step (r 0.4 / 0.6),
three corrector steps per move at 24 moves, SNR-spaced moves, and the manual sampler (which led
the adaptive one by 3.8 points on the card's seed 0), alone and with r 0.6. Settings are compared on seed 0 (the card's
own cells, `card-*`, are the references there); the winner and the default are then sampled on
seeds 3 and 4, chosen before sampling, 1,000 molecules per seed. Sampled in float32 on one thread.

    python benchmarks/sampler_screen.py cells > cells.json
    python benchmarks/sample_grid.py sample cells.json --out screen/ --threads 1
    python benchmarks/sampler_screen.py report screen/ --json benchmarks/results/sampler-screen/metrics.json \\
        --update-doc docs/autoguidance.md

Round four (the `r4-*` cells) moves the corrector's calls to the low-noise end, where bonds form:
`corrector_below` corrects only moves that end at t ≤ that time, and the calls saved at high
noise buy more moves (or more corrector steps per move) at ≤ 98 calls. Its cells were sampled into
a folder of their own; the earlier cells' numbers come from the committed metrics:

    python benchmarks/sampler_screen.py cells | python -c "import json,sys; \\
        json.dump([c for c in json.load(sys.stdin) if c['label'].startswith('r4-')], sys.stdout)" > r4.json
    python benchmarks/sample_grid.py sample r4.json --out screen4/ --threads 1
    python benchmarks/sampler_screen.py report screen4/ --known benchmarks/results/sampler-screen/metrics.json \\
        --json benchmarks/results/sampler-screen/metrics.json --update-doc docs/autoguidance.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_grid import cells_report_main, difference, pct, pooled  # noqa: E402

BLOCK = "sampler-screen-table"
MODEL = "src/ead/pretrained/qm9"      # the card's cells name the package folder; same weights as "qm9"
# the default of rounds three and four's reference cells: a corrector after every one of 32 moves
DEFAULT = {"steps": 32, "update": "ancestral", "corrector_steps": 2, "corrector_snr": 0.5, "corrector_below": 1000}
BASE, SELECT, CONFIRM = "card-adaptive", 0, (3, 4)
# label -> (sampler, options over the default's, seeds)
CELLS = {
    "card-adaptive": ("adaptive", {}, [0, 3, 4]),           # the default sampler
    "card-manual": ("manual", {}, [0, 3, 4]),            # the seed-0 winner, confirmed on seeds 3 and 4
    "r3-adaptive-r0.4": ("adaptive", {"corrector_snr": 0.4}, [0]),
    "r3-adaptive-r0.6": ("adaptive", {"corrector_snr": 0.6}, [0]),
    "r3-adaptive-24x3": ("adaptive", {"steps": 24, "corrector_steps": 3}, [0]),
    "r3-adaptive-snr": ("adaptive", {"spacing": "snr"}, [0]),
    # the two leads of the first cells together: the manual sampler with the larger corrector step
    "r3-manual-r0.6": ("manual", {"corrector_snr": 0.6}, [0]),
    # round four: the corrector only at the low-noise end, its saved calls spent on more moves
    "r4-below500-48x2": ("adaptive", {"steps": 48, "corrector_below": 500}, [0]),
    "r4-below250-64x2": ("adaptive", {"steps": 64, "corrector_below": 250}, [0]),
    "r4-below200-52x4": ("adaptive", {"steps": 52, "corrector_steps": 4, "corrector_below": 200}, [0]),
    # the third's 103 calls are over the 100 allowed: the same at 51 moves, and six steps below 125
    "r4-below200-51x4": ("adaptive", {"steps": 51, "corrector_steps": 4, "corrector_below": 200}, [0, 3, 4, 1, 2]),
    "r4-below125-50x6": ("adaptive", {"steps": 50, "corrector_steps": 6, "corrector_below": 125}, [0]),
}


def cells() -> list[dict]:
    return [{"label": k, "model": MODEL, "sampler": s, "n": 1000, "seeds": seeds, "options": {**DEFAULT, **o}}
            for k, (s, o, seeds) in CELLS.items()]


def render(res: dict) -> str:
    base = res.get(BASE)
    lines = ["| cell | sampler | options over the default | seeds | molecules | calls | atom stab. | mol. stab. | "
             "Δ mol. stab. vs default [95 %] | valid | Δ valid [95 %] | V×U | novelty |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for seeds, what in (((SELECT,), "selection"), (CONFIRM, "confirmation")):
        for label, (sampler, opts, _) in CELLS.items():
            e = res.get(label)
            mean, n, calls = pooled(e, seeds) if e else ({}, 0, 0)
            if not n:
                continue
            other = label != BASE and base is not None
            o = ", ".join(f"{k} {v}" for k, v in opts.items()) or "–"
            lines.append(f"| {label} ({what}) | {sampler} | {o} | {','.join(map(str, seeds))} | {n} | {calls:.0f} | "
                         f"{pct(mean['atom_stability'])} | {pct(mean['molecule_stability'])} | "
                         f"{difference(base, e, seeds=seeds) if other else '–'} | {pct(mean['validity'])} | "
                         f"{difference(base, e, 'validity', seeds=seeds) if other else '–'} | "
                         f"{pct(mean['valid_and_unique'])} | {pct(mean['novelty'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    return cells_report_main(__doc__, cells, tuple(CELLS), render, BLOCK, argv)


if __name__ == "__main__":
    raise SystemExit(main())
