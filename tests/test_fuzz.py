"""Seeded fuzzing of everything ead reads (docs/reliability.md): mutated SDF / XYZ files and model
configs either load or raise one EADError, within a time limit per case; never another exception.
The full adversarial set (benchmarks/adversarial.py: model folders, predictors, checkpoints,
files and command lines, each in a forked `ead` under a time and memory cap) is the slow test."""

import json
import random
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from ead.errors import EADError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import adversarial  # noqa: E402

JUNK = ["", "x", "-1", "0", "1e20", "1e300", "nan", "inf", "99999999999999", "-0", "3.5", "\x00", "é", "$$$$",
        "M  END", "M  CHG  1   1   9", "1000000000000"]
VALUES = [None, True, "false", "six", -1, 0, 6.5, 10**9, 10**12, 1e300, [], [1, "a"], {}, {"5": -1},
          {"100000": 1}, "x" * 50, [[[[[]]]]]]


@contextmanager
def time_limit(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"over {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def mutate_text(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        k = rng.randrange(len(lines))
        op = rng.randrange(5)
        if op == 0:
            del lines[k]
        elif op == 1:
            lines.insert(k, rng.choice(JUNK))
        elif op == 2 and lines[k].split():
            toks = lines[k].split()
            toks[rng.randrange(len(toks))] = rng.choice(JUNK)
            lines[k] = " ".join(toks)
        elif op == 3:
            lines[k] = lines[k][: rng.randrange(len(lines[k]) + 1)]
        else:
            lines.insert(k, lines[rng.randrange(len(lines))])
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


def test_mutated_molecule_files_load_or_fail_cleanly(tmp_path):
    from ead.data.files import read_molecules

    rng = random.Random(0)
    mols = adversarial.molecules(4)
    sources = {"sdf": adversarial.sdf_text(mols), "xyz": adversarial.xyz_text(mols)}
    outcomes = {"read": 0, "error": 0}
    for i in range(300):
        ext = "sdf" if i % 2 else "xyz"
        path = tmp_path / f"m{i}.{ext}"
        path.write_text(mutate_text(sources[ext], rng), encoding="utf-8", errors="surrogatepass")
        with time_limit(10):
            try:
                res = read_molecules(path, strict=i % 3 == 0)
                outcomes["read"] += 1
                for pos, z in res.molecules:
                    assert abs(pos).max(initial=0) <= 1e4 and len(z) == len(pos)
            except EADError as e:
                assert "\n" not in str(e).strip()
                outcomes["error"] += 1
    assert outcomes["read"] > 30 and outcomes["error"] > 30   # the mutations reach both sides


def test_mutated_model_configs_load_or_fail_cleanly():
    from ead.diffusion.schedules import SamplerConfig
    from ead.model.config import ModelConfig

    rng = random.Random(1)
    base = ModelConfig.from_preset("micro", size_histogram={5: 3, 8: 2}).to_dict()
    fields = list(base)
    outcomes = {"ok": 0, "error": 0}
    for i in range(300):
        d = json.loads(json.dumps(base))
        for _ in range(rng.randint(1, 3)):
            d[rng.choice(fields)] = rng.choice(VALUES)
        sampler = {rng.choice(SamplerConfig.names()): rng.choice(VALUES)}
        with time_limit(5):
            for build in (lambda: ModelConfig.from_dict(d), lambda: SamplerConfig.from_dict(sampler)):
                try:
                    build()
                    outcomes["ok"] += 1
                except EADError:
                    outcomes["error"] += 1
    assert outcomes["error"] > 300 and outcomes["ok"] > 10


@pytest.mark.slow
def test_the_adversarial_set_ends_in_clean_errors_only(tmp_path):
    cases = adversarial.build_cases(tmp_path)
    results = adversarial.run_all(cases, timeout=60, mem_mb=4000, log=lambda m: None)
    bad = [r for r in results if r["outcome"] != "clean"]
    assert not bad, bad
