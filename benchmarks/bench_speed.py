"""Speed benchmark — the same as `ead bench` (src/ead/speed.py, docs/speed.md), with the dense
EDM-layout baseline of edm_baseline.py beside this script.

    .venv/bin/python benchmarks/bench_speed.py                    # paper + small, ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_speed.py --quick            # seconds: checks that it runs
    .venv/bin/python benchmarks/bench_speed.py --tricks --compile --presets paper
"""

import sys

from ead.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
