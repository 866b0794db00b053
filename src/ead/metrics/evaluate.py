"""One entry point for all metrics, from Python (`evaluate_molecules`) and the CLI (`ead evaluate`).

The protocol metrics (evaluation.md §2–4, plus connectivity) always run and are cheap: the distance
work is one flat array computation for all molecules, then one RDKit pass per molecule. The modern
checks (PoseBusters, distribution distances, xTB energy) are opt-in and import their packages only
when asked for.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .. import EADError
from .chem import chem_metrics, protocol_smiles, reference_smiles
from .stability import as_molecule_set, infer_bonds, stability

CHECKS = ("protocol", "posebusters", "distribution", "energy")
DEFAULT_ENERGY_SAMPLES = 100


def _reference_name(reference) -> str | None:
    from .reference import resolve_reference

    return resolve_reference(reference)


def evaluate_molecules(molecules, reference: str | None = "qm9", checks=("protocol",),
                       energy_samples: int = DEFAULT_ENERGY_SAMPLES, seed: int = 0,
                       posebusters_workers: int = 0, verbose: bool = False) -> dict:
    """Metrics of generated molecules: a MoleculeSet or a list of (positions [n,3] Å, atomic
    numbers [n]).

    reference: "qm9" (novelty against the QM9 training split, and the reference of the
    distribution distances), the path of your training molecules (SDF/XYZ file or folder, or EDM's
    GEOM .npy), or None / "none" (novelty is None). checks: any of CHECKS; the
    protocol metrics are always included. Rates are fractions in [0, 1]; novelty and uniqueness
    are None / 0 when no molecule is valid. The novelty reference is computed once (about ten
    seconds) and then read from the data cache.
    """
    ref = _reference_name(reference)
    checks = (checks,) if isinstance(checks, str) else tuple(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise EADError(f"unknown check {unknown[0]!r}; choose from {list(CHECKS)}")
    if "distribution" in checks and ref is None:
        raise EADError("distribution distances need a reference (reference='qm9' or a path)")
    mols = as_molecule_set(molecules)
    graph = infer_bonds(mols)
    stab = stability(mols, graph)
    smiles, fragments = protocol_smiles(mols, graph)
    result = {
        "num_molecules": len(mols),
        "num_atoms": int(len(mols.atomic_numbers)),
        "reference": ref or "none",
        "atom_stability": stab.atom_stability,
        "molecule_stability": stab.mol_stability,
    }
    result.update(chem_metrics(smiles, fragments,
                               reference_smiles(ref, verbose) if ref is not None else None))
    if "posebusters" in checks:
        from .posebusters_check import posebusters_metrics

        result["posebusters"] = posebusters_metrics(mols, graph, workers=posebusters_workers)
    if "distribution" in checks:
        from .distribution import distribution_metrics, reference_geometry

        reference_geometry(ref, verbose)  # builds the cache once, with a note when verbose
        result["distribution"] = distribution_metrics(mols, graph, ref)
    if "energy" in checks and energy_samples > 0:
        from .energy import energy_metrics

        # xTB on molecules that do not even sanitise says little; draw from the valid ones
        valid = np.flatnonzero([s is not None for s in smiles])
        result["energy"] = energy_metrics(mols, energy_samples, seed=seed, candidates=valid)
    return result


# ------------------------------------------------------------------------------------ CLI
def _count(text: str) -> int:
    from ..cli import _positive_int  # one definition of the CLI's integer check

    return _positive_int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="SDF/MOL/XYZ files (optionally .gz) or folders of them; bonds in "
                        "SDF files are ignored, the protocol infers them from distances")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--reference", default="qm9", metavar="qm9|none|PATH",
                        help="training set for novelty and distribution distances: qm9 (default, "
                        "EDM's training split), none, or your training molecules (SDF/XYZ file or "
                        "folder, or EDM's GEOM .npy: its training split); computed once, then cached")
    parser.add_argument("--limit", type=_count, metavar="N",
                        help="evaluate only the first N molecules read")
    parser.add_argument("--posebusters", action="store_true",
                        help="PoseBusters 'mol' checks (needs posebusters; ~1 s per molecule)")
    parser.add_argument("--distribution", action="store_true",
                        help="atom-type TV, bond-length and bond-angle W1 to the training set")
    parser.add_argument("--energy", type=_count, metavar="N",
                        help="GFN2-xTB energy drop and RMSD on N valid molecules (needs tblite, "
                        "scipy; several seconds per molecule)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --energy subsample")
    parser.add_argument("--predictor", metavar="DIR",
                        help="conditional generation: a property predictor (`ead predictor`); each "
                        "record's target is its SD field / XYZ key named after the property (as "
                        "`ead sample --condition` writes it); reports the MAE, EDM's score")


def _read(paths: list[str]) -> tuple[list, list[dict], list[dict]]:
    from ..data.files import read_molecules

    molecules, bad, props = [], [], []
    for path in paths:
        res = read_molecules(path, strict=False)
        molecules.extend(res.molecules)
        props.extend(res.properties)
        bad.extend({"file": str(path), "record": int(i), "error": msg} for i, msg in res.errors)
    return molecules, bad, props


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:8.3f} %"


def _table(r: dict, sources: str) -> str:
    from .reference import describe

    ref = describe(None if r["reference"] == "none" else r["reference"])
    lines = [
        f"{r['num_molecules']} molecules ({r['num_atoms']} atoms) from {sources}",
        "",
        f"{'metric':<28}{'value':>10}",
        f"{'atom stability':<28}{_pct(r['atom_stability'])}",
        f"{'molecule stability':<28}{_pct(r['molecule_stability'])}",
        f"{'validity':<28}{_pct(r['validity'])}   {r['num_valid']} valid",
        f"{'uniqueness':<28}{_pct(r['uniqueness'])}   {r['num_unique']} unique",
        f"{'valid and unique (V×U)':<28}{_pct(r['valid_and_unique'])}",
        f"{'novelty':<28}{_pct(r['novelty'])}   vs {ref}",
        f"{'connectivity':<28}{_pct(r['connectivity'])}   one fragment",
        f"{'valid and connected':<28}{_pct(r['valid_and_connected'])}",
    ]
    if "distribution" in r:
        d = r["distribution"]
        lines += ["", "distribution distances to the QM9 train split",
                  f"{'atom-type TV':<28}{d['atom_type_tv']:10.4f}",
                  f"{'bond-length W1 (Å)':<28}{_num(d['bond_length_w1'])}",
                  f"{'bond-angle W1 (°)':<28}{_num(d['bond_angle_w1'])}"]
        lines += [f"  {'length W1 ' + k:<26}{v:10.4f}" for k, v in d["bond_length_w1_per_type"].items()]
        lines += [f"  {'angle W1 at ' + k:<26}{v:10.4f}" for k, v in d["bond_angle_w1_per_centre"].items()]
    if "posebusters" in r:
        p = r["posebusters"]
        lines += ["", f"PoseBusters 'mol' ({p['num_molecules']} molecules)",
                  f"{'all checks':<34}{_pct(p['overall'])}"]
        lines += [f"  {k:<32}{_pct(v)}" for k, v in p["checks"].items()]
    if "property" in r:
        p = r["property"]
        lower = p["predictor_test_mae"]
        lines += ["", f"conditional generation: {p['property']} ({p['num_molecules']} molecules)",
                  f"{'MAE target vs predicted':<28}{_num(p['mae'])} {p['unit']}",
                  f"{'  mean target / predicted':<28}{_num(p['target_mean'])} / {p['predicted_mean']:.4f}",
                  f"{'  targets shuffled':<28}{_num(p['shuffled_mae'])}   (the condition ignored)",
                  f"{'  atom count only':<28}{_num(p['size_only_mae'])}   (QM9 mean for the size)"]
        if lower is not None:
            lines.append(f"{'  predictor on QM9 test':<28}{_num(lower)}   (the lower bound)")
    if "energy" in r:
        e = r["energy"]
        lines += ["", f"GFN2-xTB relaxation ({e['num_relaxed']} of {e['num_molecules']} molecules "
                  f"relaxed)",
                  f"{'energy drop (kcal/mol)':<28}median {_num(e['energy_drop_kcal_mol']['median'])}"
                  f"  mean {_num(e['energy_drop_kcal_mol']['mean'])}",
                  f"{'RMSD (Å)':<28}median {_num(e['rmsd_angstrom']['median'])}"
                  f"  mean {_num(e['rmsd_angstrom']['mean'])}"]
        lines += [f"  molecule {f['molecule']}: {f['error']}" for f in e["failures"]]
    return "\n".join(lines)


def _num(x) -> str:
    return f"{'–':>10}" if x is None else f"{x:10.4f}"


MAX_LISTED_BAD = 10


def run(args) -> int:
    molecules, bad, props = _read(args.files)
    if args.limit is not None:
        molecules, props = molecules[: args.limit], props[: args.limit]
    predictor = None
    if args.predictor:   # load and check before the slow metrics
        from ..predictor import Predictor

        predictor = Predictor.from_pretrained(args.predictor)
        from ..data.properties import record_values

        name = predictor.config.property
        targets = record_values(props, (name,), "target",
                                f" (sample with a model conditioned on {name}, or add the field)")[:, 0]
    checks = ["protocol"]
    checks += [c for c, on in (("posebusters", args.posebusters),
                               ("distribution", args.distribution),
                               ("energy", args.energy)) if on]
    result = evaluate_molecules(molecules, reference=args.reference, checks=checks,
                                energy_samples=args.energy or 0, seed=args.seed,
                                verbose=True)
    result["bad_records"] = bad
    if predictor is not None:
        from ..predictor import property_mae

        result["property"] = property_mae(predictor, molecules, targets)
    if args.json:
        print(json.dumps(result, indent=2, default=_json_default))
        return 0
    sources = args.files[0] if len(args.files) == 1 else f"{len(args.files)} inputs"
    print(_table(result, sources))
    if bad:
        print(f"\n{len(bad)} bad record{'s' if len(bad) != 1 else ''} skipped (not evaluated):")
        for b in bad[:MAX_LISTED_BAD]:
            print(f"  {b['error']}")
        if len(bad) > MAX_LISTED_BAD:
            print(f"  … and {len(bad) - MAX_LISTED_BAD} more (all are listed with --json)")
    sys.stdout.flush()
    return 0


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
