"""Plot the training of a run and of the runs it continues (its lineage, from --init-from) to a PNG:
loss and validation loss, and molecule stability, against molecules seen (runs with different
batch sizes share one axis).

    .venv/bin/python benchmarks/plot_training.py qm9-small-c9-gpu5 docs/figures/training_qm9.png \
        --points docs/figures/model_card_history.json

RUN is a run folder (its exported model/config.json names the lineage) or the name of a run in
training/runs.json (finished runs: their logs are training/logs/NAME.csv).
--points: a JSON list of measured samples, {"molecules_seen", "sampler", "n", "molecule_stability",
"atom_stability", "validity"} and optionally "steps" (default 1000), e.g. each model-card measurement; stability logged during training
(ead train --sample-every) is plotted too.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "training" / "runs.json"


def log_of(run: str | Path) -> Path:
    """The log of a run: its folder's log.csv while it exists (a run in progress), else the
    finished run's training/logs/NAME.csv."""
    run = Path(run)
    if (run / "log.csv").exists():
        return run / "log.csv"
    return ROOT / "training" / "logs" / f"{run.name}.csv"


def _table() -> dict[str, dict]:
    return {e["run"]: e for e in json.loads(RUNS.read_text())} if RUNS.exists() else {}


def segments(run: Path) -> list[tuple[Path, int, int, int | None]]:
    """[(log.csv, batch size, molecules seen before it, its last step or None)] for the lineage
    of run, oldest first: from the run's exported model card, else from training/runs.json."""
    config = Path(run) / "model" / "config.json"
    if config.exists():
        card = json.loads(config.read_text()).get("card", {})
        chain = [(s["run"], s["batch_size"], s["steps"]) for s in card.get("continues", [])]
        chain.append((run, card.get("batch_size", 64), None))
    else:
        table = _table()
        name = Path(run).name
        if name not in table:
            raise SystemExit(f"{run}: no model/config.json and no entry in {RUNS}")
        chain, last = [], None
        while name is not None:
            e = table[name]
            chain.insert(0, (ROOT / e["log"], e["batch_size"], last))
            init = e.get("init_from")
            name, last = (init["run"], init["step"]) if init else (None, None)
    out, seen = [], 0
    for where, batch, last in chain:
        out.append((where if str(where).endswith(".csv") else log_of(where), batch, seen, last))
        if last is not None:
            seen += last * batch
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("out")
    p.add_argument("--points", default=None)
    a = p.parse_args(argv)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    stab = []
    colours: dict[int, int] = {}
    labelled: set[str] = set()
    segs = segments(Path(a.run))
    for k, (log, batch, offset, last) in enumerate(segs):
        rows = [r for r in csv.DictReader(open(log)) if last is None or int(r["step"]) <= last]
        x = lambda r: (offset + int(r["step"]) * batch) / 1e6  # noqa: E731
        loss = [(x(r), float(r["loss"])) for r in rows if r.get("loss")]
        val = [(x(r), float(r["val_loss"])) for r in rows if r.get("val_loss")]
        # one colour and one legend entry per batch size (a lineage alternates CPU stretches at one
        # batch and GPU stretches at another); the dotted lines mark where each stretch starts
        colour = colours.setdefault(batch, 2 * len(colours))
        curves = ((loss, "training loss", {"lw": 1}), (val, "validation loss (EMA)", {"marker": "o", "ms": 4}))
        for j, (pts, kind, style) in enumerate(curves):
            if pts:
                label = f"{kind}, batch {batch}"
                ax[0].plot(*zip(*pts), color=f"C{colour + j}", label=None if label in labelled else label, **style)
                labelled.add(label)
        stab += [(x(r), float(r["molecule_stability"]), "logged during training (100 mol., 100 steps)")
                 for r in rows if r.get("molecule_stability")]
        if k:
            ax[0].axvline(offset / 1e6, color="grey", ls=":", lw=1)
    ax[0].set_xlabel("molecules seen (millions)")
    ax[0].set_ylabel("ε-prediction MSE")
    ax[0].set_yscale("log")
    ax[0].legend(fontsize=7, title=f"{len(segs)} stretches (dotted: where each starts)", title_fontsize=7)
    if a.points:
        for pt in json.loads(Path(a.points).read_text()):
            # one line per sampler; each point says its sample count and, where not 1000, its steps
            stab.append((pt["molecules_seen"] / 1e6, pt["molecule_stability"], f"{pt['sampler']} (card)"))
            steps = pt.get("steps", 1000)
            note = f"n={pt['n']}" + ("" if steps == 1000 else f", {steps} steps")
            ax[1].annotate(note, (pt["molecules_seen"] / 1e6, 100 * pt["molecule_stability"]),
                           fontsize=6, xytext=(4, -8), textcoords="offset points")
    for label in sorted({s[2] for s in stab}):
        pts = sorted((x, y) for x, y, lab in stab if lab == label)
        ax[1].plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=label)
    if stab:
        ax[1].legend(fontsize=7)
    ax[1].set_xlabel("molecules seen (millions)")
    ax[1].set_ylabel("molecule stability (%)")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)


if __name__ == "__main__":
    main()
