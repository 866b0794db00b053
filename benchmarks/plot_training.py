"""Plot a run's log.csv (loss, validation loss, and stability where logged) to a PNG.

    .venv/bin/python benchmarks/plot_training.py training/qm9-small-c9/log.csv docs/figures/training_qm9.png
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(log_path: str, out: str) -> None:
    rows = list(csv.DictReader(open(log_path)))
    col = lambda k: [(int(r["step"]), float(r[k])) for r in rows if r.get(k)]  # noqa: E731
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("loss", "training loss (running mean)"), ("val_loss", "validation loss (EMA)")):
        pts = col(key)
        if pts:
            ax[0].plot(*zip(*pts), label=label, marker="o" if key == "val_loss" else None)
    ax[0].set_xlabel("step (batch 64)")
    ax[0].set_ylabel("ε-prediction MSE")
    ax[0].set_yscale("log")
    ax[0].legend()
    stab = col("molecule_stability")
    if stab:
        ax[1].plot(*zip(*stab), marker="o")
        ax[1].set_ylabel("molecule stability")
    else:
        ax[1].text(0.5, 0.5, "no stability logged in this run\n(ead train --sample-every N)",
                   ha="center", va="center", transform=ax[1].transAxes)
    ax[1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
