"""One session on a rented GPU, planned to the second (device time is short and a command is cut at
its limit): continue the shipped lineage, train the equal-compute study, sample, benchmark.

    python scripts/gpu_session.py --out $OUT --budget 540

Phases (times from the start; what is finished is packed into --out at once, so a command cut
short still brings its results back):
  0. benchmarks/cuda_check.py: the CUDA path (numerics, bf16, equivariance, host syncs, CUDA graph)
  1. three trainings side by side until --train-until:
       ship  continues the shipped run (--ship-from) with a larger batch (ead train --init-from)
       c0/c9 the equal-compute study: the same preset, seed and batches, window C = 0 (EDM) and C = 9,
             every checkpoint kept so the two can be compared at the same step
  2. sampling (3 workers, benchmarks/sample_grid.py) until --sample-until, in priority order:
     the study's cells (C0/C9 × synchronous/adaptive × 3 seeds × 500), the card's (3 samplers ×
     1000), steps sweep, λ × w sweep, warm-up sweep
  3. `ead bench --device cuda` in what is left
Outputs (at most 8 files): log.txt, ship.tar.partNN (the continued run: last checkpoint, model, log),
study.tar (both models at the common step, logs), samples.tar (the cells), misc.tar (checks, bench,
training output). Evaluate the cells here afterwards: benchmarks/sample_grid.py evaluate.

Measured on an H200 (15 minutes of device time, about 30 s to start a machine): three small-preset
trainings side by side run at 0.037 s/step each (0.029 alone), so 5 minutes give each about 8,000
steps at batch 256; the shipped run alone takes 0.031-0.040 s/step at batch 256 (host-bound:
docs/speed.md), 11,000-14,500 steps in a ~510-s call. Sampling is the slow part: with three workers
sharing the GPU a 1000-step cell of 1,000 molecules took about 55 s (CUDA graphs on), so order the
cells by value. Training only: `--runs ship --no-check --no-bench --sample-until 0`. A second call
on the still-warm machine continues with --continue-here (it resumes the run the first call left in
--work, and exits 3 within seconds on a fresh machine: then bring the first call's run home and
send it again with --ship-from that run). The device has no `pip install -e`: export
PYTHONPATH=$PWD/src first.
Before the call run `bash scripts/device_prune.sh` (if the working tree is over the upload limit:
it deletes what this script does not read, from the working tree only) and afterwards
`bash scripts/device_prune.sh --restore`; then `python scripts/gpu_bring_back.py FILES_AT`
puts the last call's ship.tar(.partNN) in training/qm9-small-c9-gpuN and points
training/current_run at it.
Carry the QM9 cache in an ignored folder, packed by scripts/qm9_pack.py (24.7 MB: the working
tree and the carried paths travel within 64 MiB together), and unpack it into $EAD_CACHE first; the
device has torch and lightning but not RDKit, so nothing here may import it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"   # sample_grid.py, sampler_sweep.py, cuda_check.py
sys.path.insert(0, str(BENCH))
PY = sys.executable
PART = 15 * 2**20


class Session:
    def __init__(self, a):
        self.a = a
        self.t0 = time.time()
        self.out = Path(a.out)
        self.work = Path(a.work)
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "misc").mkdir(parents=True)
        self.logf = open(self.out / "log.txt", "a")

    def now(self) -> float:
        return time.time() - self.t0

    def log(self, msg: str) -> None:
        line = f"[{self.now():6.1f}s] {msg}"
        print(line, flush=True)
        self.logf.write(line + "\n")
        self.logf.flush()

    def run(self, name: str, cmd: list[str], timeout: float) -> int:
        self.log(f"{name}: {' '.join(cmd)} (≤ {timeout:.0f} s)")
        with open(self.work / "misc" / f"{name}.out", "w") as f:
            try:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=max(1, timeout),
                                    cwd=ROOT).returncode
            except subprocess.TimeoutExpired:
                rc = -9
        self.log(f"{name}: exit {rc}")
        return rc

    def wait_all(self, procs: dict, soft: float, hard: float) -> None:
        """Wait for the processes; SIGTERM at `soft` (they checkpoint), SIGKILL at `hard`."""
        termed = False
        while any(p.poll() is None for p in procs.values()):
            if not termed and self.now() > soft:
                self.log("sending SIGTERM to " + ", ".join(k for k, p in procs.items() if p.poll() is None))
                for p in procs.values():
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                termed = True
            if self.now() > hard:
                for p in procs.values():
                    if p.poll() is None:
                        p.kill()
                break
            time.sleep(1)
        for k, p in procs.items():
            self.log(f"{k}: exit {p.wait()}")

    def pack(self, name: str, root: Path, members: list[str]) -> None:
        """tar members (relative to root) into out/name, split into ≤ 15 MiB parts if needed."""
        tmp = self.work / f"{name}.tmp"
        with tarfile.open(tmp, "w") as tar:
            for m in members:
                if (root / m).exists():
                    tar.add(root / m, arcname=m)
        for old in self.out.glob(name + "*"):
            old.unlink()
        size = tmp.stat().st_size
        if size <= PART:
            os.replace(tmp, self.out / name)
        else:
            with open(tmp, "rb") as f:
                k = 0
                while chunk := f.read(PART):
                    (self.out / f"{name}.part{k:02d}").write_bytes(chunk)
                    k += 1
            tmp.unlink()
        self.log(f"packed {name}: {size / 2**20:.1f} MiB")

    def pack_misc(self) -> None:
        self.pack("misc.tar", self.work, ["misc"])


def train_cmd(a, run: str, window: int, extra: list[str], hours: float) -> list[str]:
    return [PY, "-m", "ead", "train", "--data", "qm9", "--preset", a.preset, "--window", str(window),
            "--lr", str(a.lr), "--warmup-steps", str(a.warmup_steps), "--batch-size", str(a.batch_size),
            "--max-steps", "100000000",
            "--max-hours", f"{hours:.5f}", "--log-every", "100", "--val-every", str(a.val_every),
            "--accelerator", a.accelerator, "--threads", "2", "--quiet", "--run-dir", run, *extra]


def resumed_hours(run: Path) -> float:
    """Training time already in the run's latest checkpoint (0 for a new run)."""
    last = latest_step_dir(run)
    if last is None or not (last / "state.json").exists():
        return 0.0
    return json.loads((last / "state.json").read_text()).get("elapsed_s", 0.0) / 3600


def latest_step_dir(run: Path) -> Path | None:
    ptr = run / "checkpoints" / "latest"
    return run / "checkpoints" / ptr.read_text().strip() if ptr.exists() else None


def cells(a, ship_model: Path | None, study: dict[str, Path]) -> list[dict]:
    """All cells, one seed each, in priority order."""
    steps = {"steps": a.steps} if a.steps else {}
    adaptive = {"async_ratio": 0.8, "history": 2}
    out = []
    for seed in range(3):
        for sampler in ("synchronous", "adaptive"):
            for c, model in study.items():
                out.append({"label": f"study-{c}-{sampler}", "model": str(model), "sampler": sampler,
                            "n": a.n_study, "seeds": [seed],
                            "options": {**steps, **(adaptive if sampler == "adaptive" else {})}})
        if seed == 0 and ship_model is not None:
            for sampler in ("synchronous", "manual", "adaptive"):
                out.append({"label": f"card-{sampler}", "model": str(ship_model), "sampler": sampler,
                            "n": a.n_card, "seeds": [0],
                            "options": {**steps, **(adaptive if sampler == "adaptive" else {})}})
    if ship_model is None:
        return out
    for k in a.step_grid:
        for sampler in ("synchronous", "adaptive"):
            out.append({"label": f"steps-{sampler}-{k}", "model": str(ship_model), "sampler": sampler,
                        "n": a.n_sweep, "seeds": [0],
                        "options": {"steps": k, **(adaptive if sampler == "adaptive" else {})}})
    from sampler_sweep import sweep_cells

    out += sweep_cells(str(ship_model), a.n_sweep, a.steps)
    return out


def sample_cells(s, a, grid: list[dict], cuda: bool) -> None:
    """Phase 2: a.workers sample_grid.py workers share the cells until --sample-until; pack what they drew."""
    (s.work / "cells.json").write_text(json.dumps(grid, indent=1))
    s.log(f"{len(grid)} sampling jobs")
    samples = s.work / "samples"
    deadline = s.t0 + a.sample_until
    workers = {}
    for k in range(a.workers):
        cmd = [PY, str(BENCH / "sample_grid.py"), "sample", str(s.work / "cells.json"), "--out", str(samples),
               "--device", "cuda" if cuda else "cpu", "--deadline", str(deadline), "--worker", str(k),
               "--workers", str(a.workers), "--threads", "2", *(["--cuda-graph"] if cuda else [])]
        workers[f"sampler{k}"] = subprocess.Popen(cmd, stdout=open(s.work / "misc" / f"sample-{k}.out", "w"),
                                                  stderr=subprocess.STDOUT, cwd=ROOT)
    bench_time = 0 if a.no_bench or not cuda else 60
    s.wait_all(workers, soft=max(a.sample_until, a.budget - bench_time - 20),
               hard=max(a.sample_until, a.budget - bench_time - 12))
    samples.mkdir(exist_ok=True)
    shutil.copy(s.work / "cells.json", samples / "cells.json")
    s.pack("samples.tar", s.work, ["samples"])
    s.pack_misc()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--work", default="/tmp/ead-gpu")
    p.add_argument("--budget", type=float, default=540, help="seconds for the whole session")
    p.add_argument("--train-until", type=float, default=330)
    p.add_argument("--sample-until", type=float, default=450, help="no sampling job starts later")
    p.add_argument("--accelerator", default="cuda")
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="0, as every run this script has trained (they resume with it); ead train's default is 250")
    p.add_argument("--val-every", type=int, default=2000)
    p.add_argument("--study-ckpt-every", type=int, default=500)
    p.add_argument("--ship-from", default=(ROOT / "training" / "current_run").read_text().strip(),
                   help="the shipped run (default: training/current_run): resumed if its batch size is "
                        "--batch-size, else continued")
    p.add_argument("--continue-here", action="store_true",
                   help="resume the shipped run that an earlier call left in --work on this machine "
                        "(a warm second call: nothing to carry or unpack first); exits 3 at once when "
                        "there is none (the machine was given back: use --ship-from the fetched run)")
    p.add_argument("--n-card", type=int, default=1000)
    p.add_argument("--n-study", type=int, default=500)
    p.add_argument("--n-sweep", type=int, default=500)
    p.add_argument("--steps", type=int, default=None, help="override every cell's steps (quick tests)")
    p.add_argument("--step-grid", default="500,200,100,50,25")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--no-bench", action="store_true")
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--runs", default="ship,c0,c9", help="which trainings to run")
    a = p.parse_args(argv)
    a.step_grid = [int(v) for v in a.step_grid.split(",") if v]
    kept = None
    if a.continue_here:
        here = Path(a.work) / "runs" / "ship"
        if latest_step_dir(here) is None:
            print(f"--continue-here: no shipped run in {here} (a fresh machine?); send the call with "
                  "--ship-from the run the first call brought back", file=sys.stderr)
            return 3
        kept = Path(a.work + ".ship")   # outside --work, which Session clears
        shutil.rmtree(kept, ignore_errors=True)
        os.replace(here, kept)
    s = Session(a)
    if kept is not None:
        (s.work / "runs").mkdir()
        os.replace(kept, s.work / "runs" / "ship")
    cuda = a.accelerator == "cuda"
    s.log(f"start; budget {a.budget:.0f} s; python {sys.version.split()[0]}")
    if kept is not None:
        s.log(f"continuing the run left here at {latest_step_dir(s.work / 'runs' / 'ship').name}")

    # 0 ------------------------------------------------------------------ CUDA checks
    if cuda and not a.no_check:
        s.run("cuda_check", [PY, str(BENCH / "cuda_check.py")], timeout=100)
        s.pack_misc()

    # 1 ------------------------------------------------------------------ training
    runs = s.work / "runs"
    hours = max(30.0, a.train_until - s.now() - 25) / 3600
    procs = {}
    ship_extra = ["--init-from", a.ship_from, "--ckpt-every", "1000"]
    src_cfg = Path(a.ship_from) / "train_config.json"
    if kept is not None:
        ship_extra = ["--ckpt-every", "1000"]
    elif src_cfg.exists() and json.loads(src_cfg.read_text()).get("batch_size") == a.batch_size:
        # same batch size: resume that very run (its step count goes on) instead of starting a
        # new stretch of its lineage
        shutil.copytree(a.ship_from, runs / "ship")
        ship_extra = ["--ckpt-every", "1000"]
    specs = {"ship": (9, ship_extra),
             "c0": (0, ["--ckpt-every", str(a.study_ckpt_every), "--keep-checkpoints", "0"]),
             "c9": (9, ["--ckpt-every", str(a.study_ckpt_every), "--keep-checkpoints", "0"])}
    for name, (window, extra) in specs.items():
        if name not in a.runs.split(","):
            continue
        # --max-hours counts a resumed run's earlier time too: add it, or the run stops early
        # (it did once: 140 s of a session's training lost)
        cmd = train_cmd(a, str(runs / name), window, extra, hours + resumed_hours(runs / name))
        s.log(f"train {name}: {' '.join(cmd)}")
        procs[name] = subprocess.Popen(cmd, stdout=open(s.work / "misc" / f"train-{name}.out", "w"),
                                       stderr=subprocess.STDOUT, cwd=ROOT)
    s.wait_all(procs, soft=a.train_until + 30, hard=a.train_until + 60)
    ship = runs / "ship"
    last = latest_step_dir(ship)
    if last is not None:
        s.pack("ship.tar", runs, [f"ship/checkpoints/{last.name}", "ship/checkpoints/latest", "ship/model",
                                  "ship/log.csv", "ship/train_config.json"])
    s.pack_misc()

    # 2 ------------------------------------------------------------------ sampling
    sys.path.insert(0, str(ROOT / "src"))
    from ead.train import export_checkpoint

    study = {}
    common = None
    dirs = {c: {d.name for d in (runs / c / "checkpoints").glob("step-*")} for c in ("c0", "c9")}
    shared = sorted(dirs["c0"] & dirs["c9"])
    if shared:
        common = shared[-1]
        for c in ("c0", "c9"):
            study[c] = export_checkpoint(runs / c / "checkpoints" / common, s.work / "study" / f"{c}-{common}")
            shutil.copy(runs / c / "log.csv", s.work / "study" / f"{c}-log.csv")
            shutil.copy(runs / c / "train_config.json", s.work / "study" / f"{c}-train_config.json")
        s.log(f"study models at the common checkpoint {common} (c0 has {sorted(dirs['c0'])[-1]}, "
              f"c9 {sorted(dirs['c9'])[-1]})")
        s.pack("study.tar", s.work, ["study"])
    ship_model = ship / "model" if (ship / "model" / "config.json").exists() and last is not None else None
    if s.now() >= a.sample_until - 5:   # no time to sample: starting the workers alone costs ~5-10 s
        s.log("no sampling (past --sample-until)")
    else:
        sample_cells(s, a, cells(a, ship_model, study), cuda)

    # 3 ------------------------------------------------------------------ bench
    left = a.budget - s.now() - 10
    if cuda and not a.no_bench and left > 30:
        s.run("bench", [PY, "-m", "ead", "bench", "--device", "cuda", "--no-isolate", "--tricks",
                        "--json", str(s.work / "misc" / "bench.json")], timeout=left)
        s.pack_misc()
    s.log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
