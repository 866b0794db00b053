"""The adversarial set of docs/reliability.md: altered model folders, predictor folders, training
checkpoints, molecule files and command lines, each run through `ead` in a forked child with a
wall-clock limit and a memory cap, and classified:

    clean      exit status 2 with one `ead: error:` line and no traceback (or exit 0 with the
               warning line the case expects)
    traceback  a Python traceback, or any other exit status
    hang       still running at the time limit
    memory     the child's resident memory passed the cap (an unbounded allocation)
    silent     exit 0 where an error or a warning was due (bad input accepted without a word)

    .venv/bin/python benchmarks/adversarial.py            # counts per class and per case
    .venv/bin/python benchmarks/adversarial.py --json out.json

The children are forked from a process that has imported `ead` once, so a case costs what its
command costs, not an interpreter start. tests/test_fuzz.py runs this set as its slow test.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OUTCOMES = ("clean", "traceback", "hang", "memory", "silent")


@dataclass
class Case:
    group: str         # model | predictor | checkpoint | reader | train-data | cli
    name: str
    argv: list[str]
    expect: str = "error"   # "error": exit 2 + one error line; "warn": exit 0 + a "warning:" line
    warn_word: str = "warning"   # with this word; "ok": exit 0 (the input is fine, e.g. gzip by content)


# ----------------------------------------------------------------------------------------------
# Inputs

def molecules(n: int = 12, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Small plausible molecules (atoms ≥ 1 Å apart) of C, N, O, H."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        size = 3 + k % 6
        pos = np.zeros((size, 3))
        for a in range(1, size):
            pos[a] = pos[a - 1] + rng.normal(size=3) / np.sqrt(3) * 1.3
        out.append((pos - pos.mean(0), rng.choice([1, 6, 7, 8], size=size)))
    return out


def xyz_text(mols) -> str:
    from ead.data.elements import SYMBOLS

    rows = []
    for pos, z in mols:
        rows += [str(len(z)), ""] + [f"{SYMBOLS[a]} {x:.5f} {y:.5f} {w:.5f}" for a, (x, y, w) in zip(z, pos)]
    return "\n".join(rows) + "\n"


def sdf_text(mols) -> str:
    from ead.data.files import write_sdf

    with tempfile.TemporaryDirectory() as d:
        write_sdf(Path(d) / "m.sdf", mols)
        return (Path(d) / "m.sdf").read_text()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def base_model(path: Path) -> Path:
    import torch

    from ead.model.config import ModelConfig
    from ead.pipeline import EAD

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("micro", size_histogram={5: 3, 8: 2}, window=3, timesteps=50)
    return EAD(cfg, device="cpu").save_pretrained(path)


def base_predictor(path: Path) -> Path:
    from ead.model.predictor import Predictor, PredictorConfig

    return Predictor(PredictorConfig(hidden=16, layers=2)).save_pretrained(path)


def _edit_json(path: Path, edit) -> None:
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def _set(section: str, key: str, value):
    def edit(d):
        (d[section] if section else d)[key] = value
    return edit


MODEL_EDITS = {
    "layers-string": _set("model", "layers", "six"),
    "layers-float": _set("model", "layers", 6.5),
    "layers-1e9": _set("model", "layers", 10**9),
    "hidden-1e5": _set("model", "hidden", 10**5),
    "hidden-1e9": _set("model", "hidden", 10**9),
    "hidden-bool": _set("model", "hidden", True),
    "atom-types-string": _set("model", "atom_types", "abc"),
    "atom-types-999": _set("model", "atom_types", [1, 6, 999]),
    "atom-types-empty": _set("model", "atom_types", []),
    "histogram-list": _set("model", "size_histogram", [1, 2, 3]),
    "histogram-negative": _set("model", "size_histogram", {"5": -3}),
    "histogram-zero": _set("model", "size_histogram", {"5": 0}),
    "histogram-100000-atoms": _set("model", "size_histogram", {"100000": 1}),
    "histogram-key-text": _set("model", "size_histogram", {"abc": 1}),
    "timesteps-1e9": _set("model", "timesteps", 10**9),
    "timesteps-string": _set("model", "timesteps", "1000"),
    "window-string": _set("model", "window", "9"),
    "include-charges-yes": _set("model", "include_charges", "yes"),
    "attention-false-string": _set("model", "attention", "false"),
    "coords-range-nan": _set("model", "coords_range", float("nan")),
    "noise-schedule-unknown": _set("model", "noise_schedule", "cosine9"),
    "noise-precision-2": _set("model", "noise_precision", 2.0),
    "dataset-int": _set("model", "dataset", 5),
    "context-quantiles-list": _set("model", "context_quantiles", [1]),
    "max-atoms-string": _set("model", "max_atoms", "x"),
    "sampler-defaults-string": _set("", "sampler_defaults", "fast"),
    "sampler-defaults-steps-string": _set("", "sampler_defaults", {"steps": "many"}),
    "sampler-defaults-steps-negative": _set("", "sampler_defaults", {"steps": -3}),
    "sampler-defaults-eta-string": _set("", "sampler_defaults", {"eta": "1"}),
    "sampler-defaults-ratio-2": _set("", "sampler_defaults", {"async_ratio": 2.0}),
    "card-list": _set("", "card", [1, 2]),
    "model-list": _set("", "model", [1, 2]),
}


def model_cases(root: Path, base: Path) -> list[Case]:
    from safetensors.torch import load_file, save_file

    cases = []
    out = str(root / "out" / "m.sdf")
    sample = ["sample", "-n", "2", "--steps", "2", "--quiet", "--precision", "fp32", "--device", "cpu", "-o", out]
    for name, edit in MODEL_EDITS.items():
        d = root / "models" / name
        shutil.copytree(base, d)
        _edit_json(d / "config.json", edit)
        cases.append(Case("model", name, sample + ["--model", str(d)]))
    d = root / "models" / "nested-1e5"
    shutil.copytree(base, d)
    (d / "config.json").write_text('{"format": "ead-model", "model": {}, "card": ' + nested(10**5) + "}")
    cases.append(Case("model", "nested-1e5", sample + ["--model", str(d)]))
    d = root / "models" / "weights-int64"
    shutil.copytree(base, d)
    state = load_file(str(d / "model.safetensors"))
    save_file({k: (v * 1000).to(__import__("torch").int64) for k, v in state.items()}, str(d / "model.safetensors"))
    cases.append(Case("model", "weights-int64", sample + ["--model", str(d)]))
    d = root / "models" / "weights-truncated"
    shutil.copytree(base, d)
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    cases.append(Case("model", "weights-truncated", sample + ["--model", str(d)]))
    d = root / "models" / "weights-nan"
    shutil.copytree(base, d)
    state = load_file(str(d / "model.safetensors"))
    save_file({k: v.fill_(float("nan")) for k, v in state.items()}, str(d / "model.safetensors"))
    cases.append(Case("model", "weights-nan", sample + ["--model", str(d)]))
    # the command line
    cases.append(Case("cli", "num-atoms-3000", sample + ["--model", str(base), "--num-atoms", "3000"]))
    cases.append(Case("cli", "num-atoms-100000", sample + ["--model", str(base), "--num-atoms", "100000"]))
    cases.append(Case("cli", "batch-edges-1e6-molecules",
                      sample[:2] + ["1000000"] + sample[3:] + ["--model", str(base), "--num-atoms", "400",
                                                               "--batch-size", "100000"]))
    return cases


PREDICTOR_EDITS = {
    "layers-1e9": _set("predictor", "layers", 10**9),
    "hidden-string": _set("predictor", "hidden", "x"),
    "mad-string": _set("predictor", "mad", "x"),
    "atom-types-string": _set("predictor", "atom_types", "abc"),
    "include-charges-yes": _set("predictor", "include_charges", "yes"),
    "unknown-field": _set("predictor", "colour", 1),
    "predictor-list": _set("", "predictor", [1]),
}


def predictor_cases(root: Path, base: Path, data: Path) -> list[Case]:
    cases = []
    for name, edit in PREDICTOR_EDITS.items():
        d = root / "predictors" / name
        shutil.copytree(base, d)
        _edit_json(d / "config.json", edit)
        cases.append(Case("predictor", name, ["evaluate", str(data), "--reference", "none", "--predictor", str(d)]))
    d = root / "predictors" / "nested-1e5"
    shutil.copytree(base, d)
    (d / "config.json").write_text('{"format": "ead-predictor", "predictor": ' + nested(10**5) + "}")
    cases.append(Case("predictor", "nested-1e5", ["evaluate", str(data), "--reference", "none", "--predictor", str(d)]))
    return cases


def train_argv(data: Path, run: Path, *extra) -> list[str]:
    return ["train", "--data", str(data), "--run-dir", str(run), "--preset", "micro", "--timesteps", "50",
            "--window", "3", "--max-steps", "3", "--ckpt-every", "1", "--val-every", "0", "--log-every", "1",
            "--threads", "1", "--quiet", "--batch-size", "4", *extra]


CHECKPOINT_EDITS = {
    "step-string": _set("", "step", "x"),
    "step-negative": _set("", "step", -5),
    "elapsed-string": _set("", "elapsed_s", "x"),
    "gradnorms-string": _set("", "gradnorms", "abc"),
    "gradnorms-huge": _set("", "gradnorms", [1.0] * 10 + ["x"]),
    "model-config-missing": lambda d: d.pop("model_config"),
    "model-config-layers-string": lambda d: d["model_config"].__setitem__("layers", "six"),
    "lineage-string": _set("", "lineage", "abc"),
    "train-config-list": _set("", "train_config", [1]),
}


def checkpoint_cases(root: Path, base_run: Path, data: Path) -> list[Case]:
    cases = []
    for name, edit in CHECKPOINT_EDITS.items():
        run = root / "runs" / name
        shutil.copytree(base_run, run)
        latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
        _edit_json(latest / "state.json", edit)
        cases.append(Case("checkpoint", name, train_argv(data, run)))
    run = root / "runs" / "nested-1e5"
    shutil.copytree(base_run, run)
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    (latest / "state.json").write_text('{"format": "ead-train-state", "step": ' + nested(10**5) + "}")
    cases.append(Case("checkpoint", "nested-1e5", train_argv(data, run)))
    return cases


def reader_files(root: Path) -> dict[str, Path]:
    """name -> a bad molecule file (read by `ead evaluate`)."""
    d = root / "files"
    d.mkdir(parents=True, exist_ok=True)
    mols = molecules(4)
    good_sdf, good_xyz = sdf_text(mols), xyz_text(mols)
    files = {}

    def put(name, data, fname=None):
        p = d / (fname or name)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        files[name] = p

    put("gzip-named-sdf", gzip.compress(good_sdf.encode()), "gz.sdf")
    put("gzip-named-xyz", gzip.compress(good_xyz.encode()), "gz.xyz")
    put("xyz-count-1e12", "1000000000000\n\nC 0 0 0\n", "count.xyz")
    put("xyz-count-1e8-short", "100000000\n\nC 0 0 0\nC 1 0 0\n", "count8.xyz")
    put("xyz-coords-1e300", "2\n\nC 1e300 0 0\nC 0 0 0\n", "huge.xyz")
    put("xyz-coords-1e20", "2\n\nC 1e20 0 0\nC 0 0 0\n", "big.xyz")
    lines = good_sdf.splitlines()
    lines[4] = f"{'1e50':>10}" + lines[4][10:]   # the first atom's x
    put("sdf-coords-1e50", "\n".join(lines) + "\n", "huge.sdf")
    put("binary-garbage-sdf", os.urandom(4096), "garbage.sdf")
    put("nul-bytes-xyz", b"3\n\x00\x00\nC 0 0 0\n", "nul.xyz")
    put("empty-sdf", b"", "empty.sdf")
    put("v3000-count-1e9", "x\n  RDKit          3D\n\n  0  0  0  0  0  0  0  0  0  0999 V3000\n"
        "M  V30 BEGIN CTAB\nM  V30 COUNTS 1000000000 0 0 0 0\nM  V30 BEGIN ATOM\nM  V30 END ATOM\n"
        "M  V30 END CTAB\nM  END\n$$$$\n", "v3000.sdf")
    fifo = d / "fifo.sdf"
    os.mkfifo(fifo)
    files["fifo-named-sdf"] = fifo
    dev = d / "zero.sdf"
    dev.symlink_to("/dev/zero")
    files["dev-zero-named-sdf"] = dev
    folder = d / "folder-with-fifo"
    folder.mkdir()
    (folder / "ok.xyz").write_text(good_xyz)
    os.mkfifo(folder / "f.xyz")
    files["folder-with-fifo"] = folder
    put("truncated-gzip", gzip.compress(good_sdf.encode())[:40], "trunc.sdf.gz")
    return files


def train_data_files(root: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (training file, expected outcome, warning word)."""
    d = root / "train-data"
    d.mkdir(parents=True, exist_ok=True)
    mols = molecules(12)
    out = {}
    big = [(np.random.default_rng(1).normal(size=(10_000, 3)) * 20, np.full(10_000, 6))]
    (d / "big.xyz").write_text(xyz_text(mols + big))
    out["molecule-10000-atoms"] = (d / "big.xyz", "warn", "skipped")
    far = list(mols)
    far[3] = (far[3][0].copy(), far[3][1])
    far[3][0][0, 0] = 1e20
    (d / "far.xyz").write_text(xyz_text(mols[:3]) + "3\n\nC 1e20 0 0\nC 0 0 0\nO 1 0 0\n" + xyz_text(mols[3:]))
    out["coordinate-1e20"] = (d / "far.xyz", "error", "")
    sdf = sdf_text(mols)
    charged = sdf.replace("M  END", "M  CHG  1   1   1\nM  END", 2)
    (d / "charged.sdf").write_text(charged)
    out["formal-charges"] = (d / "charged.sdf", "warn", "charge")
    one = list(mols)
    one[2] = (np.zeros_like(one[2][0]), one[2][1])
    (d / "coincident.xyz").write_text(xyz_text(one))
    out["coincident-atoms"] = (d / "coincident.xyz", "warn", "coincident")
    return out


def build_cases(root: Path) -> list[Case]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "out").mkdir(exist_ok=True)
    base = base_model(root / "base-model")
    pred = base_predictor(root / "base-predictor")
    data = root / "good.sdf"
    mols = molecules(12)
    from ead.data.files import write_sdf

    write_sdf(data, mols, properties=[{"alpha": 70.0} for _ in mols])
    cases = model_cases(root, base) + predictor_cases(root, pred, data)
    base_run = root / "base-run"
    rc = run_case(Case("setup", "base-run", train_argv(data, base_run)), timeout=300, mem_mb=6000)
    if rc["rc"] != 0:
        raise RuntimeError(f"could not train the base run: {rc}")
    cases += checkpoint_cases(root, base_run, data)
    for name, path in reader_files(root).items():
        expect = "ok" if name.startswith("gzip-named") or name == "folder-with-fifo" else "error"
        if name == "sdf-coords-1e50":   # one bad record among good ones: listed, the rest evaluated
            expect = "ok"
        cases.append(Case("reader", name, ["evaluate", str(path), "--reference", "none"], expect=expect))
    for name, (path, expect, word) in train_data_files(root).items():
        cases.append(Case("train-data", name, train_argv(path, root / "runs" / f"data-{name}"),
                          expect=expect, warn_word=word))
    return cases


# ----------------------------------------------------------------------------------------------
# Running


def _child(argv: list[str], out_path: str) -> None:
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
    sys.stderr = sys.stdout
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        from ead.cli import main

        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    os._exit(rc if isinstance(rc, int) else 0)


def _rss_mb(pid: int) -> float:
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total = int(line.split()[1]) / 1024
    except OSError:
        pass
    return total


def run_case(case: Case, timeout: float = 30.0, mem_mb: float = 3000.0) -> dict:
    """Fork, run `ead ARGV` in the child, watch its time and memory; the outcome and output."""
    fd, out_path = tempfile.mkstemp(prefix="adv-", suffix=".txt")
    os.close(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(case.argv, out_path)
    t0, peak, outcome, status = time.time(), 0.0, None, None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        peak = max(peak, _rss_mb(pid))
        if peak > mem_mb:
            outcome = "memory"
        elif time.time() - t0 > timeout:
            outcome = "hang"
        if outcome:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    text = Path(out_path).read_text(errors="replace")
    os.unlink(out_path)
    rc = os.waitstatus_to_exitcode(status) if status is not None else None
    if outcome is None:
        outcome = classify(case, rc, text)
    return {"group": case.group, "name": case.name, "outcome": outcome, "rc": rc,
            "seconds": round(time.time() - t0, 2), "peak_mb": round(peak), "tail": text.strip()[-300:]}


def classify(case: Case, rc: int | None, text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ead: error:")]
    if "Traceback (most recent call last)" in text or rc not in (0, 2):
        return "traceback"
    if rc == 2:
        return "clean" if len(errors) == 1 else "traceback"
    warnings = [ln.lower() for ln in lines if ln.startswith(("warning:", "ead: warning:"))]
    if case.expect == "warn" and any(case.warn_word.lower() in ln for ln in warnings):
        return "clean"
    if case.expect == "ok":
        return "clean"
    return "silent"


def run_all(cases: list[Case], timeout: float, mem_mb: float, log=print) -> list[dict]:
    results = []
    for case in cases:
        r = run_case(case, timeout, mem_mb)
        results.append(r)
        log(f"{r['outcome']:<10} {case.group:<11} {case.name:<34} {r['seconds']:6.1f} s {r['peak_mb']:6d} MB  "
            f"{r['tail'].splitlines()[-1][:110] if r['tail'] else ''}")
    return results


def counts(results: list[dict]) -> dict[str, int]:
    return {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per case")
    p.add_argument("--mem-mb", type=float, default=3000.0, help="resident memory cap per case")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--only", help="run only the cases whose group or name contains this")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ead-adversarial-") as tmp:
        cases = build_cases(Path(tmp))
        if args.only:
            cases = [c for c in cases if args.only in c.group or args.only in c.name]
        results = run_all(cases, args.timeout, args.mem_mb)
    print(json.dumps(counts(results)))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts(results), "cases": results}, indent=1))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
