"""Growing molecules from fragments cut from QM9 test molecules (docs/fragments.md).

Cuts fragments from QM9 *test* molecules (a ring, or a connected chain of heavy atoms; 3-12 heavy
atoms with the hydrogens they carry in the data), completes each to its molecule's original size
with a model's default sampler, holding the fragment at t = 0, and measures: how far the fragment
moved, validity, molecule stability, uniqueness, novelty, the share of completions that contain
the fragment as a substructure (RDKit, heavy atoms and their bonds), and how often the original
molecule comes back. Then a linker task: two pieces of one molecule, at their distance in it, held
at t = 0, and the atoms between them generated.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fragments.py                    # the real run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fragments.py --fragments 8 --linkers 4 \\
        --out /tmp/frag.json                                                     # a smoke test
    .venv/bin/python benchmarks/fragments.py --table A.json B.json [--update-doc docs/fragments.md]
                                                 # results side by side, as a Markdown table

One batch holds every fragment (each molecule its own held atoms), so the run costs about as much
as sampling the same number of free molecules.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, rdBase

from ead.cli.common import KINDS
from ead.data.batch import molecule_index
from ead.data.fragment import Fragment
from ead.data.molecule import protocol_mol
from ead.data.qm9 import qm9_split
from ead.diffusion.sampler import FixedAtoms, run_sampler
from ead.diffusion.schedules import SamplerConfig
from ead.errors import EADError
from ead.io import write_atomic
from ead.metrics.chem import smiles_of
from ead.metrics.evaluate import evaluate_molecules
from ead.pipeline import EAD

OUT = Path(__file__).resolve().parent / "results" / "fragments" / "replacement.json"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qm9")
    ap.add_argument("--fragments", type=int, default=250, help="fragments cut (default 250)")
    ap.add_argument("--linkers", type=int, default=50, help="linker tasks (default 50)")
    ap.add_argument("--per-fragment", type=int, default=2, help="completions per fragment (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--sampler-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a sampler setting over the model's defaults (e.g. steps=100, update=sde-dpm2m, "
                         "corrector_steps=0); repeatable")
    ap.add_argument("--table", type=Path, nargs="+", metavar="JSON",
                    help="print the results of earlier runs side by side instead of sampling")
    ap.add_argument("--update-doc", type=Path, metavar="MD",
                    help="with --table: replace the fragments-table block of this Markdown file")
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------------- cutting
def sanitised(pos, z):
    mol = protocol_mol(pos, z)
    return mol if smiles_of(mol) is not None else None   # smiles_of sanitises in place


def heavy_graph(mol):
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    nbrs = {i: [n.GetIdx() for n in mol.GetAtomWithIdx(i).GetNeighbors() if n.GetAtomicNum() > 1]
            for i in heavy}
    return heavy, nbrs


def with_hydrogens(mol, heavy_atoms):
    """The heavy atoms and the hydrogens bonded to them, in the molecule's atom order."""
    keep = set(heavy_atoms)
    for i in heavy_atoms:
        keep |= {n.GetIdx() for n in mol.GetAtomWithIdx(i).GetNeighbors() if n.GetAtomicNum() == 1}
    return sorted(keep)


def cut_fragment(mol, rng, kind):
    """Heavy-atom indices of a ring or of a random connected chain (3-12 heavy atoms, leaving at
    least one heavy atom to generate), or None."""
    heavy, nbrs = heavy_graph(mol)
    if len(heavy) < 4:
        return None
    if kind == "ring":
        rings = [r for r in mol.GetRingInfo().AtomRings() if 3 <= len(r) < len(heavy)]
        return sorted(rings[rng.integers(len(rings))]) if rings else None
    size = int(rng.integers(3, min(12, len(heavy) - 1) + 1))
    chosen = [int(rng.choice(heavy))]
    while len(chosen) < size:   # grow along bonds: a random connected piece
        frontier = sorted({n for i in chosen for n in nbrs[i]} - set(chosen))
        if not frontier:
            return None
        chosen.append(int(rng.choice(frontier)))
    return sorted(chosen)


def cut_linker(mol, rng):
    """(piece A, piece B, linker) heavy-atom index lists: the inner atoms of a shortest path of
    length 3-4 between two heavy atoms are the linker; A and B are what stays bonded to either
    end once the linker is taken out (each ≥ 2 heavy atoms), or None."""
    heavy, nbrs = heavy_graph(mol)
    dist = Chem.GetDistanceMatrix(mol)
    pairs = [(a, b) for a in heavy for b in heavy if a < b and dist[a, b] in (3, 4)]
    rng.shuffle(pairs)
    for a, b in pairs:
        path = list(Chem.GetShortestPath(mol, a, b))
        linker = set(path[1:-1])

        def component(start):
            seen, todo = {start}, [start]
            while todo:
                for n in nbrs[todo.pop()]:
                    if n not in seen and n not in linker:
                        seen.add(n)
                        todo.append(n)
            return seen

        A, B = component(a), component(b)
        if len(A) >= 2 and len(B) >= 2 and not A & B:
            return sorted(A), sorted(B), sorted(linker)
    return None


def query_of(mol, heavy_atoms):
    return Chem.MolFromSmarts(Chem.MolFragmentToSmarts(mol, atomsToUse=[int(i) for i in heavy_atoms]))


# ----------------------------------------------------------------------------------- sampling
def sampler_options(pairs: list[str]) -> dict:
    """KEY=VALUE strings as sampler settings, each parsed as `ead sample` parses its flag (the kind
    of SamplerConfig's field: cli.common.KINDS)."""
    kinds = {f.name: f.metadata.get("kind") for f in dataclasses.fields(SamplerConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in kinds:
            raise SystemExit(f"--sampler-option wants KEY=VALUE with KEY one of {', '.join(kinds)}, got {pair!r}")
        try:
            out[key] = value if kinds[key] == "choice" else KINDS[kinds[key]](value)
        except argparse.ArgumentTypeError as e:
            raise SystemExit(f"bad --sampler-option {key}: {e}") from None
    return out


def grow(model, tasks, per, seed, options):
    """Complete every task `per` times in one batch: tasks are (positions, atomic numbers, atom
    indices of the fragment) of whole molecules; the fragment's atoms go first."""
    frags, sizes = [], []
    for pos, z, atoms in tasks:
        frags += [Fragment(pos[atoms], z[atoms])] * per
        sizes += [len(z)] * per
    sizes = torch.tensor(sizes)
    parts = [f.held_atoms(torch.tensor([n]), model.encoder.encode) for f, n in zip(frags, sizes.tolist())]
    held = FixedAtoms(*(torch.cat(p) for p in zip(*parts)))
    schedule = model.make_schedule(**options)
    t0 = time.process_time()
    res = run_sampler(model._network(), model.noise, schedule, sizes, model.config.num_features,
                      len(model.config.feature_types), torch.Generator().manual_seed(seed), fixed=held)
    cpu = time.process_time() - t0
    types = np.asarray(model.config.feature_types)
    pos, z = res.positions.double().numpy(), types[res.atom_index.numpy()]
    mol = molecule_index(sizes).numpy()
    out = [(pos[mol == m], z[mol == m]) for m in range(len(sizes))]
    return out, frags, schedule.settings(), res.network_calls, cpu


def measure(model, tasks, queries, originals, per, seed, options):
    mols, frags, settings, calls, cpu = grow(model, tasks, per, seed, options)
    # a trajectory can diverge (coordinates overflow) when the held atoms are far outside what the
    # model saw in training: such a completion counts as invalid, unstable and not containing
    finite = [bool(np.isfinite(p).all()) for p, _ in mols]
    dev = max(float(np.abs(p[: len(f)] - f.positions).max()) for (p, _), f, ok in zip(mols, frags, finite) if ok)
    same_z = all(np.array_equal(z[: len(f)], f.atomic_numbers) for (_, z), f in zip(mols, frags))
    scores = evaluate_molecules([m for m, ok in zip(mols, finite) if ok], reference="qm9")
    share = sum(finite) / len(mols)   # rates over the finite completions -> over all of them
    contained, recovered, valid = [], [], []
    with rdBase.BlockLogs():
        for k, (p, z) in enumerate(mols):
            if not finite[k]:
                contained.append(False), recovered.append(False), valid.append(False)
                continue
            m = protocol_mol(p, z)
            smi = smiles_of(m)
            valid.append(smi is not None)
            q = queries[k // per]
            contained.append(smi is not None and all(m.HasSubstructMatch(qq) for qq in q))
            recovered.append(smi is not None and smi == originals[k // per])
    n = len(mols)
    return {
        "tasks": len(tasks), "completions": n, "sampler": settings, "network_calls": calls,
        "cpu_s": round(cpu, 1),
        "fragment_max_deviation_angstrom": dev, "fragment_elements_kept": same_z,
        "diverged": 1 - share,
        "validity": scores["validity"] * share, "molecule_stability": scores["molecule_stability"] * share,
        "atom_stability_of_finite": scores["atom_stability"], "uniqueness": scores["uniqueness"],
        "novelty": scores["novelty"], "connectivity": scores["connectivity"] * share,
        "contains_fragment": sum(contained) / n,
        "contains_fragment_of_valid": sum(contained) / max(1, sum(valid)),
        "original_recovered": sum(recovered) / n,
    }


# ----------------------------------------------------------------------------------- the table
BLOCK = "fragments-table"
ROWS = (   # (label, how a task's result reads as a cell)
    ("network calls per completion", lambda r: f"{r['network_calls']}"),
    ("fragment kept: max deviation", lambda r: f"{r['fragment_max_deviation_angstrom']:.1e} Å"
                                               + ("" if r["fragment_elements_kept"] else ", elements changed")),
    ("trajectories diverged", lambda r: pc(r["diverged"])),
    ("validity", lambda r: pc(r["validity"])),
    ("molecule stability", lambda r: pc(r["molecule_stability"])),
    ("atom stability (finite completions)", lambda r: pc(r["atom_stability_of_finite"])),
    ("connected (one piece)", lambda r: pc(r["connectivity"])),
    ("uniqueness (of valid)", lambda r: pc(r["uniqueness"])),
    ("novelty (of unique, vs QM9 train)", lambda r: pc(r["novelty"])),
    ("contains the fragment (RDKit substructure, heavy atoms; linkers: both pieces)",
     lambda r: f"{pc(r['contains_fragment'])} ({pc(r['contains_fragment_of_valid'])} of valid)"),
    ("original molecule recovered", lambda r: pc(r["original_recovered"])),
)


def pc(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def table(paths: list[Path]) -> str:
    """The fragments and linkers of each result file side by side: one column per (task, file),
    each named by its file's stem and the model it sampled."""
    res = [dict(json.loads(p.read_text()), name=p.stem) for p in paths]
    cols = [(task, r) for task in ("fragments", "linkers") for r in res]
    head = "| | " + " | ".join(f"{task} ({r[task]['tasks']} × {r['per_fragment']}): {r['name']} (`{r['model']}`)"
                                 for task, r in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(r[task]) for task, r in cols) + " |" for label, cell in ROWS]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table:
        missing = [str(p) for p in args.table if not p.is_file()]
        if missing:
            print(f"no such result file: {', '.join(missing)}", file=sys.stderr)
            return 2
        text = table(args.table)
        print(text)
        if args.update_doc:
            from sample_grid import markers, replace_between
            replace_between(args.update_doc, *markers(BLOCK), text)
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rng = np.random.default_rng(args.seed)
    test = qm9_split("test")
    model = EAD.from_pretrained(args.model, device="cpu")
    options = sampler_options(args.sampler_option)
    try:
        model.make_schedule(**options)   # a bad setting fails here, before the fragments are cut
    except (EADError, TypeError, ValueError) as e:
        raise SystemExit(f"bad --sampler-option: {e}") from None
    model.autocast = None   # float32 everywhere: the same numbers on any CPU

    frag_tasks, frag_queries, frag_orig, kinds = [], [], [], []
    link_tasks, link_queries, link_orig, distances = [], [], [], []
    with rdBase.BlockLogs():
        for i in rng.permutation(len(test)):
            if len(frag_tasks) >= args.fragments and len(link_tasks) >= args.linkers:
                break
            pos, z = (np.asarray(a) for a in test.molecule(int(i)))
            pos = pos.astype(np.float64)
            mol = sanitised(pos, z)
            if mol is None:
                continue
            smi = Chem.MolToSmiles(mol)
            if len(frag_tasks) < args.fragments:
                kind = "ring" if len(frag_tasks) % 2 == 0 else "chain"
                heavy = cut_fragment(mol, rng, kind) or (cut_fragment(mol, rng, "chain") if kind == "ring" else None)
                if heavy is not None and len(with_hydrogens(mol, heavy)) < len(z):
                    frag_tasks.append((pos, z, with_hydrogens(mol, heavy)))
                    frag_queries.append([query_of(mol, heavy)])
                    frag_orig.append(smi)
                    kinds.append(len(heavy))
                    continue
            if len(link_tasks) < args.linkers:
                cut = cut_linker(mol, rng)
                if cut is not None:
                    A, B, _ = cut
                    link_tasks.append((pos, z, with_hydrogens(mol, A + B)))
                    link_queries.append([query_of(mol, A), query_of(mol, B)])
                    link_orig.append(smi)
                    distances.append(float(np.linalg.norm(pos[A].mean(0) - pos[B].mean(0))))

    result = {"model": args.model, "seed": args.seed, "per_fragment": args.per_fragment,
              "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fragments.py "
                         + shlex.join(argv if argv is not None else sys.argv[1:]),
              "fragments": measure(model, frag_tasks, frag_queries, frag_orig, args.per_fragment, args.seed, options),
              "linkers": measure(model, link_tasks, link_queries, link_orig, args.per_fragment, args.seed + 1,
                                 options)}
    result["fragments"]["heavy_atoms"] = {"min": min(kinds), "median": float(np.median(kinds)), "max": max(kinds)}
    result["linkers"]["piece_centroid_distance_angstrom"] = {
        "min": round(min(distances), 2), "median": round(float(np.median(distances)), 2),
        "max": round(max(distances), 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
