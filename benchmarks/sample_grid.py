"""Sample a grid of cells (model × sampler × options × seed) to compact .npz files, and evaluate
them later, elsewhere: the model card, the equal-compute study and the sampler sweep all sample
on whatever machine is fastest (a lent GPU) and are evaluated here, where RDKit lives.

    # cells.json: [{"label": "c9-adaptive", "model": "runs/c9/model", "sampler": "adaptive",
    #               "n": 500, "seeds": [0, 1], "options": {"async_ratio": 0.8}}, ...]
    #   (optional per cell: "precision": "bf16" for the network in bfloat16 autocast)
    python benchmarks/sample_grid.py sample cells.json --out cells/ --device cuda
    python benchmarks/sample_grid.py evaluate cells/ --json metrics.json

Each (cell, seed) becomes LABEL-sSEED.npz: positions (float32, Å), atomic_numbers (uint8), offsets
(int64, molecule m is atoms offsets[m]:offsets[m+1]) and meta (JSON text: the cell, the sampler's
settings, network calls, seconds, device). No pickled objects. Files that exist are skipped, so a
stopped run resumes; several `sample` processes on one machine can share one cell list (a worker
claims a job with LABEL-sSEED.npz.claim, holding its pid), so another can join when a core frees
up; `--worker i --workers k` splits the list up front instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from ead.io import process_alive, write_atomic

# --------------------------------------------------------------------------------- files


def save_cell(path: Path, molecules: list, meta: dict) -> None:
    counts = np.array([len(z) for _, z in molecules], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    arrays = {"positions": np.concatenate([p for p, _ in molecules]).astype(np.float32),
              "atomic_numbers": np.concatenate([z for _, z in molecules]).astype(np.uint8),
              "offsets": offsets, "meta": np.array(json.dumps(meta))}
    write_atomic(path, lambda tmp: savez(tmp, **arrays))


def savez(path: Path, **arrays) -> None:
    """np.savez to exactly `path` (given a path, np.savez would append ".npz" to a temp name)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_cell(path: Path) -> tuple[list, dict]:
    with np.load(path, allow_pickle=False) as f:
        pos, z, off = f["positions"].astype(np.float64), f["atomic_numbers"].astype(np.int64), f["offsets"]
        meta = json.loads(str(f["meta"]))
    return [(pos[a:b], z[a:b]) for a, b in zip(off[:-1], off[1:])], meta


def cell_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("*-s*.npz"))


# --------------------------------------------------------------------------------- sampling


def sample_cells(cells: list[dict], out: Path, device: str = "auto", batch_size: int = 1000,
                 deadline: float | None = None, worker: int = 0, workers: int = 1, log=print,
                 cuda_graph: bool = False) -> int:
    """Sample the cells (in order; this worker takes every `workers`-th (cell, seed) job) until
    the deadline (unix time; a job is not started after it). Returns the number of files written."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(c, s) for c in cells for s in c.get("seeds", [0])][worker::workers]
    models: dict = {}   # model path -> loaded EAD pipeline
    done = 0
    for cell, seed in jobs:
        target = out / f"{cell['label']}-s{seed}.npz"
        if target.exists():
            continue
        if deadline is not None and time.time() > deadline:
            log(f"deadline: skipped {target.name}")
            continue
        claim = claim_job(target)
        if claim is None:
            log(f"{target.name}: being sampled by another worker")
            continue
        try:
            if not target.exists():   # another worker may have finished it since the check above
                done += _sample_job(cell, seed, target, models, device, batch_size, cuda_graph, log)
        finally:
            claim.unlink(missing_ok=True)
    return done


def claim_job(target: Path) -> Path | None:
    """Claim a job for this process: `target`.claim holds its pid, created exclusively, so workers
    started independently on one machine (e.g. one more when a core frees up) share a cell list
    without sampling a cell twice. A claim whose process is gone is taken over. None = taken."""
    claim = target.with_name(target.name + ".claim")
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(claim.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and process_alive(pid):
                return None
            claim.unlink(missing_ok=True)   # stale: its worker was killed
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return claim
    return None




def _sample_job(cell, seed, target, models, device, batch_size, cuda_graph, log) -> int:
    import torch

    from ead.pipeline import EAD

    if cell["model"] not in models:
        models[cell["model"]] = EAD.from_pretrained(cell["model"], device=device)
        models[cell["model"]].cuda_graph = cuda_graph   # the pipeline's own switch (GPU only)
    model = models[cell["model"]]
    model.autocast = "bf16" if cell.get("precision") == "bf16" else None
    opts = dict(cell.get("options", {}))
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    mols, settings = model.sample_arrays(cell["n"], sampler=cell["sampler"], seed=seed,
                                         batch_size=batch_size, **opts)
    seconds = time.time() - t0
    meta = {"cell": cell, "seed": seed, "settings": settings, "seconds": seconds, "cuda_graph": cuda_graph,
            "device": torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu",
            "batch_size": batch_size, "model_card": model.card}
    save_cell(target, mols, meta)
    log(f"{target.name}: {cell['n']} molecules, {settings['network_calls']} calls, {seconds:.1f} s")
    return 1


# --------------------------------------------------------------------------------- evaluation

METRICS = ("atom_stability", "molecule_stability", "validity", "valid_and_unique", "novelty", "connectivity")


def evaluate_cells(folder: Path, posebusters: int = 0, reference: str | None = "qm9", log=print) -> dict:
    """{label: {"runs": [per-seed metrics + meta], "mean": {...}, "sd": {...}}}."""
    from ead.metrics.evaluate import evaluate_molecules

    by_label: dict[str, dict] = {}
    for path in cell_files(folder):
        mols, meta = load_cell(path)
        r = evaluate_molecules(mols, reference=reference)
        row = {k: r.get(k) for k in METRICS}
        if posebusters:
            pb = evaluate_molecules(mols[:posebusters], reference=None, checks=("protocol", "posebusters"))
            row["posebusters"] = (pb.get("posebusters") or {}).get("overall")
        row.update({"seed": meta["seed"], "n": len(mols), "network_calls": meta["settings"]["network_calls"],
                    "seconds": meta["seconds"], "device": meta["device"], "settings": meta["settings"]})
        entry = by_label.setdefault(meta["cell"]["label"], {"cell": meta["cell"], "runs": [],
                                                            "model_card": meta.get("model_card", {})})
        entry["runs"].append(row)
        log(f"{path.name}: " + ", ".join(f"{k} {row[k]:.3f}" for k in METRICS if row.get(k) is not None))
    for entry in by_label.values():
        keys = [k for k in (*METRICS, "posebusters", "network_calls", "seconds")
                if all(r.get(k) is not None for r in entry["runs"])]
        vals = {k: np.array([r[k] for r in entry["runs"]], dtype=float) for k in keys}
        entry["mean"] = {k: float(v.mean()) for k, v in vals.items()}
        entry["sd"] = {k: float(v.std(ddof=1)) if len(v) > 1 else None for k, v in vals.items()}
        entry["molecules"] = int(sum(r["n"] for r in entry["runs"]))
    return by_label


def compare_cells(a: Path, b: Path) -> dict:
    """How far two cells drawn with the same seed (same sizes, same initial noise) ended apart, e.g.
    bf16 against float32: the share of molecules with the same elements, and the median RMSD of
    the coordinates (Å, no alignment: same frame by construction)."""
    ma, _ = load_cell(a)
    mb, _ = load_cell(b)
    if [len(z) for _, z in ma] != [len(z) for _, z in mb]:
        raise SystemExit(f"{a} and {b} do not hold the same molecule sizes: not the same seed and model")
    same = [bool(np.array_equal(za, zb)) for (_, za), (_, zb) in zip(ma, mb)]
    rmsd = [float(np.sqrt(((pa - pb) ** 2).sum(1).mean())) for (pa, _), (pb, _) in zip(ma, mb)]
    return {"molecules": len(ma), "same_elements": float(np.mean(same)), "median_rmsd": float(np.median(rmsd))}


def replace_between(doc: str | Path, begin: str, end: str, text: str) -> None:
    """Rewrite the part of a Markdown file between two marker comments (the rest stays as written)."""
    doc = Path(doc)
    body = doc.read_text()
    if begin not in body or end not in body:
        raise SystemExit(f"{doc} has no {begin} … {end} markers")
    head, rest = body.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_atomic(doc, lambda p: p.write_text(head + begin + "\n" + text + "\n" + end + tail))   # never half-written


def markers(block: str) -> tuple[str, str]:
    """The comment pair that delimits a generated block of a Markdown doc."""
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"


def add_report_options(p: argparse.ArgumentParser, block: str) -> None:
    """The options of every script that renders evaluated cells into a doc (evaluated_report)."""
    p.add_argument("--json", default=None, help="keep the raw numbers in this file")
    p.add_argument("--update-doc", default=None, metavar="MD", help="replace the block between the markers in this file")
    p.add_argument("--block", default=block, help="the doc block to replace: <!-- BLOCK:begin --> … <!-- BLOCK:end -->")
    p.add_argument("--known", action="append", default=[], metavar="JSON",
                   help="cells evaluated before (a --json file of an earlier report) for labels whose files "
                        "are not in the folder: their committed numbers, not sampled again")


def evaluated_report(folder, prefixes: tuple, render, json_path=None, doc=None, block="", known=()) -> int:
    """Evaluate the cells whose labels start with `prefixes`, print render(results), and keep
    them: the raw numbers in json_path, the table in doc inside `block`'s markers. Labels with no
    file in the folder are taken from the `known` reports' JSON files. Exit status."""
    res = evaluate_cells(Path(folder), log=lambda m: print(m, file=sys.stderr))
    for path in known:
        earlier = json.loads(Path(path).read_text())
        res = {**{k: v for k, v in earlier.items() if k not in res}, **res}
    res = {k: v for k, v in res.items() if k.startswith(prefixes)}
    if not res:
        print(f"no {'/'.join(p + '*' for p in prefixes)} cells in {folder}", file=sys.stderr)
        return 2
    text = render(res)
    print(text)
    if json_path:
        Path(json_path).write_text(json.dumps(res, indent=1, default=str))
    if doc:
        replace_between(doc, *markers(block), text)
    return 0


def cells_report_main(doc: str, cells, prefixes: tuple, render, block: str, argv=None) -> int:
    """The command line of a study script: `cells` prints its cell list for `sample`, `report FOLDER`
    evaluates the sampled cells and prints (and keeps) render's table."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("cells", help="print the cell list for sample_grid.py")
    r = sub.add_parser("report", help="evaluate the sampled cells and print the table")
    r.add_argument("folder")
    add_report_options(r, block)
    a = p.parse_args(argv)
    if a.cmd == "cells":
        print(json.dumps(cells(), indent=1))
        return 0
    return evaluated_report(a.folder, prefixes, render, a.json, a.update_doc, a.block, a.known)


def difference(a: dict, b: dict, key: str = "molecule_stability", seeds=None) -> str:
    """Pooled b − a of a per-molecule share between two evaluated cells, with its 95 % interval
    (two proportions, normal approximation), in points; over `seeds` only when given."""
    def pooled(e):
        runs = [r for r in e["runs"] if seeds is None or r["seed"] in seeds]
        n = sum(r["n"] for r in runs)
        return sum(r[key] * r["n"] for r in runs) / n, n
    (p, n), (q, m) = pooled(a), pooled(b)
    se = math.sqrt(p * (1 - p) / n + q * (1 - q) / m)
    d = q - p
    return f"{100 * d:+.1f} [{100 * (d - 1.96 * se):+.1f}, {100 * (d + 1.96 * se):+.1f}]"


def pooled(e: dict, seeds) -> tuple[dict, int, float]:
    """A cell's per-molecule shares pooled over the runs of `seeds` (weighted by molecules), their
    number of molecules and the mean network calls; ({}, 0, 0) when none of the seeds ran."""
    runs = [r for r in e["runs"] if r["seed"] in seeds]
    n = sum(r["n"] for r in runs)
    if not n:
        return {}, 0, 0
    mean = {k: sum(r[k] * r["n"] for r in runs) / n for k in METRICS if all(r.get(k) is not None for r in runs)}
    return mean, n, sum(r["network_calls"] for r in runs) / len(runs)


def pct(mean: float | None, sd: float | None = None) -> str:
    if mean is None:
        return "–"
    return f"{100 * mean:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="sample the cells of a JSON file")
    s.add_argument("cells")
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-size", type=int, default=1000)
    s.add_argument("--deadline", type=float, default=None, help="unix time after which no job starts")
    s.add_argument("--worker", type=int, default=0)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--cuda-graph", action="store_true", help="replay the denoiser as a CUDA graph")
    e = sub.add_parser("evaluate", help="evaluate sampled cells")
    e.add_argument("folder")
    e.add_argument("--json", default=None)
    e.add_argument("--posebusters", type=int, default=0, help="PoseBusters on the first K of each file")
    c = sub.add_parser("compare", help="two cells drawn with the same seed: same elements, RMSD")
    c.add_argument("a")
    c.add_argument("b")
    a = p.parse_args(argv)
    if a.cmd == "compare":
        r = compare_cells(Path(a.a), Path(a.b))
        print(f"{r['molecules']} molecules: same elements in {100 * r['same_elements']:.1f} %, "
              f"median RMSD {r['median_rmsd']:.4f} Å")
        return 0
    if a.cmd == "sample":
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        cells = json.loads(Path(a.cells).read_text())
        n = sample_cells(cells, Path(a.out), a.device, a.batch_size, a.deadline, a.worker, a.workers,
                         log=lambda m: print(m, file=sys.stderr, flush=True), cuda_graph=a.cuda_graph)
        print(f"worker {a.worker}: wrote {n} files")
        return 0
    res = evaluate_cells(Path(a.folder), a.posebusters)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    for label, entry in res.items():
        m, sd = entry["mean"], entry["sd"]
        print(f"{label}: n={entry['molecules']} " + " ".join(
            f"{k}={pct(m.get(k), sd.get(k))}" for k in METRICS if k in m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
