"""The default thread rule on a busy machine (docs/speed.md, "Threads on a busy machine").

Times `ead sample -n 20` (the shipped model, its defaults, seed 0) in fresh processes: with the
default thread count (ead.device.set_threads: usable CPUs less the busy ones) and with fixed
--threads 1 .. cores, and reports the CPUs other processes kept busy around each run (/proc/stat).

    python benchmarks/threads.py                    # 20 molecules, each setting once
    python benchmarks/threads.py --repeats 2 --json benchmarks/results/threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ead.device import busy_cpus, default_threads, usable_cpus


def run(molecules: int, threads: int | None, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}   # the rule decides
    cmd = [sys.executable, "-m", "ead", "sample", "-n", str(molecules), "--seed", "0", "-o", str(out),
           "--quiet"] + ([] if threads is None else ["--threads", str(threads)])
    busy_before = busy_cpus(usable_cpus(), 1.0)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    return {"threads": "default" if threads is None else threads, "seconds": round(seconds, 2),
            "busy_cpus_before": round(busy_before, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--molecules", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    cpus = usable_cpus()
    busy = busy_cpus(cpus, 1.0)
    print(f"{len(cpus)} usable CPUs, {os.cpu_count()} cores; {busy:.2f} CPUs busy now; "
          f"the rule picks {default_threads(len(cpus), busy)} thread(s); load {open('/proc/loadavg').read().split()[:3]}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            for threads in [None, *range(1, len(cpus) + 1)]:
                row = run(a.molecules, threads, Path(tmp) / "s.sdf")
                rows.append(row)
                print(f"  threads {row['threads']!s:>7}: {row['seconds']:7.2f} s "
                      f"(other processes kept {row['busy_cpus_before']:.2f} CPUs busy just before)", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"molecules": a.molecules, "cpus": len(cpus), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
