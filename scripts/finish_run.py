"""Record a training run in training/runs.json and, once it is finished, take it out of the tree.

    python scripts/finish_run.py training/RUN --role "shipped lineage"            # finished: log kept, folder removed
    python scripts/finish_run.py training/RUN --role "shipped lineage" --head     # the run the lineage continues from

A finished run leaves the repository (the layout rule: finished runs keep only small logs): its
log.csv becomes training/logs/RUN.csv, its row in training/runs.json (one per run: steps, batch, lr,
hours, device, precision, epochs, last validation loss, the run it continued, its full ead train
configuration) is written or replaced, and the folder with its checkpoints is deleted — they stay
in the git history when they were committed. With --head the run keeps its folder and its one
resumable checkpoint (the lineage continues from it) and its row says so. The script prints the git
commands that record the change; it runs none itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def last_state(run: Path) -> dict:
    """state.json of the run's latest checkpoint."""
    from ead.errors import EADError
    from ead.train.checkpoint import checkpoint_path
    try:
        return json.loads((checkpoint_path(str(run)) / "state.json").read_text())
    except EADError as e:
        raise SystemExit(f"{run}: {e}") from None


def last_validation(log: Path) -> tuple[float | None, int | None]:
    loss, step = None, None
    with log.open() as f:
        for row in csv.DictReader(f):
            if row.get("val_loss"):
                loss, step = float(row["val_loss"]), int(row["step"])
    return loss, step


def row_for(run: Path, role: str, head: bool, root: Path = ROOT) -> dict:
    """The runs.json row of a run folder, from its train_config.json, last checkpoint and log."""
    config = json.loads((run / "train_config.json").read_text())
    state = last_state(run)
    steps, batch = int(state["step"]), int(config["batch_size"])
    device = str(state.get("device", "cpu"))
    init = None
    if config.get("init_from"):
        parent = Path(config["init_from"]).name
        lineage = [s for s in state.get("lineage", []) if Path(s["run"]).name == parent]
        init = {"run": parent, "step": lineage[-1]["steps"] if lineage else None}
    val_loss, val_step = last_validation(run / "log.csv")
    try:
        name = str(run.resolve().relative_to(root.resolve()))
    except ValueError:
        name = str(run)
    return {"run": run.name, "role": role, "steps": steps, "batch_size": batch, "lr": config["lr"],
            "hours": round(float(state["elapsed_s"]) / 3600, 3),
            "device": "cpu" if device.startswith("cpu") else device, "precision": config.get("precision"),
            "epochs": round(steps * batch / 100_000, 2), "final_val_loss": val_loss, "final_val_step": val_step,
            "init_from": init,
            "status": (f"lineage head: resumable checkpoint in {name}/checkpoints/" if head else "finished"),
            "log": f"{name}/log.csv" if head else f"training/logs/{run.name}.csv", "config": config}


def record(run: Path, role: str, head: bool, root: Path = ROOT) -> list[str]:
    """Write the row (and, for a finished run, move its log and delete the folder). Returns the paths
    git should record."""
    run = Path(run)
    if not (run / "train_config.json").is_file() or not (run / "log.csv").is_file():
        raise SystemExit(f"{run}: not a training run folder (no train_config.json and log.csv)")
    row = row_for(run, role, head, root)
    table_path = root / "training" / "runs.json"
    old = json.loads(table_path.read_text()) if table_path.exists() else []
    at = next((i for i, e in enumerate(old) if e["run"] == row["run"]), len(old))   # a run keeps its place
    table = [e for e in old if e["run"] != row["run"]]
    table.insert(at, row)
    tmp = table_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    tmp.replace(table_path)   # never half-written
    changed = [str(table_path)]
    if not head:
        logs = root / "training" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "log.csv", logs / f"{run.name}.csv")
        shutil.rmtree(run)
        changed += [str(logs / f"{run.name}.csv"), str(run)]
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the run folder, e.g. training/qm9-small-c9-cpu11")
    p.add_argument("--role", required=True, help="what the run is for, as the table says it")
    p.add_argument("--head", action="store_true",
                   help="the run the lineage continues from: keep its folder and its one resumable checkpoint")
    a = p.parse_args(argv)
    changed = record(Path(a.run), a.role, a.head)
    here = Path.cwd().resolve()
    shown = [str(Path(c).resolve().relative_to(here)) if Path(c).resolve().is_relative_to(here) else c
             for c in changed]
    print("recorded; to commit:  git add -A " + " ".join(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
