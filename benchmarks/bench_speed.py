"""Speed benchmark of issue 4 — the same as `ead bench` (see src/ead/bench.py and docs/speed.md).

    .venv/bin/python benchmarks/bench_speed.py                    # paper + small, ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_speed.py --quick            # seconds: checks that it runs
    .venv/bin/python benchmarks/bench_speed.py --tricks --compile --presets paper
"""

import sys

from ead.bench import main

if __name__ == "__main__":
    sys.exit(main())
