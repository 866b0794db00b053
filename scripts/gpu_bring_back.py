"""Bring the shipped run's GPU stretch home from a scripts/gpu_session.py call's output.

    .venv/bin/python scripts/gpu_bring_back.py FILES_AT [--run training/qm9-small-c9-gpuN]

FILES_AT is the folder the device tool put the call's files in (ship.tar, or ship.tar.part00,
part01, … when it was split). The run (checkpoint, exported model, log, train_config.json) lands
in --run (default: the next training/qm9-small-c9-gpuN), its train_config.json's run_dir names it
there instead of the device's /tmp folder, and training/current_run points at it, so
scripts/train_shipped.sh opens the next CPU stretch from it and scripts/ship_model.sh
exports it. Nothing is moved into place unless the archive holds a complete checkpoint.
Run `bash scripts/device_prune.sh --restore` first if the tree was pruned for the call.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def next_gpu_run(training: Path) -> Path:
    """The next free qm9-small-c9-gpuN: above every run folder and every finished run's log."""
    names = [p.name for p in training.glob("qm9-small-c9-gpu*")]
    names += [p.stem for p in (training / "logs").glob("qm9-small-c9-gpu*.csv")]
    taken = [int(m.group(1)) for n in names if (m := re.fullmatch(r"qm9-small-c9-gpu(\d*)", n)) and m.group(1)]
    return training / f"qm9-small-c9-gpu{max(taken, default=0) + 1}"


def archive_parts(files_at: Path) -> list[Path]:
    whole = files_at / "ship.tar"
    parts = sorted(files_at.glob("ship.tar.part[0-9][0-9]"))
    if whole.exists() and parts:
        raise SystemExit(f"{files_at} holds both ship.tar and ship.tar.partNN: which call's is it?")
    return [whole] if whole.exists() else parts


def bring_back(files_at: Path, run: Path, root: Path = ROOT) -> dict:
    parts = archive_parts(files_at)
    if not parts:
        raise SystemExit(f"no ship.tar or ship.tar.partNN in {files_at}")
    if run.exists():
        raise SystemExit(f"{run} exists already; name another --run")
    with tempfile.TemporaryDirectory(dir=run.parent) as tmp:
        tmp = Path(tmp)
        joined = tmp / "ship.tar"
        with open(joined, "wb") as out:
            for p in parts:
                out.write(p.read_bytes())
        try:
            with tarfile.open(joined) as tar:
                tar.extractall(tmp / "x", filter="data")
        except (tarfile.TarError, EOFError) as e:
            raise SystemExit(f"{files_at}: the archive is incomplete or corrupt ({e}); fetch every part")
        ship = tmp / "x" / "ship"
        latest = ship / "checkpoints" / "latest"
        step_dir = ship / "checkpoints" / latest.read_text().strip() if latest.exists() else None
        if step_dir is None or not (step_dir / "state.json").exists() or not (step_dir / "state.safetensors").exists():
            raise SystemExit(f"{files_at}: no complete checkpoint in the archive")
        rel = run.resolve().relative_to(root.resolve())
        cfg_path = ship / "train_config.json"
        if cfg_path.exists():
            cfg = json.loads(cfg_path.read_text())
            cfg["run_dir"] = str(rel)
            cfg_path.write_text(json.dumps(cfg, indent=2))
        meta = json.loads((step_dir / "state.json").read_text())
        shutil.move(str(ship), str(run))
    (root / "training" / "current_run").write_text(f"{rel}\n")
    return {"run": str(rel), "step": meta["step"], "batch_size": meta["train_config"]["batch_size"],
            "device": meta.get("device")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files_at", type=Path)
    p.add_argument("--run", type=Path, default=None, help="where the run goes (default: the next gpuN)")
    a = p.parse_args(argv)
    run = a.run or next_gpu_run(ROOT / "training")
    got = bring_back(a.files_at, run)
    print(f"{got['run']}: step {got['step']} × batch {got['batch_size']} on {got['device']}; "
          "training/current_run points at it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
