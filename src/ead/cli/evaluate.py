"""`ead evaluate`: score molecules from any generator (metrics/evaluate.py) and print a table or JSON."""

from __future__ import annotations

import json
import sys

from .common import add_relax_flags, add_threads_flag, positive_int

HELP = "score molecules (SDF/XYZ from any generator) by the EDM protocol"


def add(sub):
    parser = sub.add_parser("evaluate", help=HELP,
                            description="Atom/molecule stability, validity, uniqueness, novelty and "
                            "connectivity with bonds inferred from distances, plus optional checks.")
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="SDF/MOL/XYZ files (optionally .gz) or folders of them; bonds in "
                        "SDF files are ignored, the protocol infers them from distances")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--reference", default="qm9", metavar="qm9|none|PATH",
                        help="training set for novelty and distribution distances: qm9 (default, "
                        "EDM's training split), none, or your training molecules (SDF/XYZ file or "
                        "folder, or EDM's GEOM .npy: its training split); computed once, then cached")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="evaluate only the first N molecules read")
    parser.add_argument("--posebusters", action="store_true",
                        help="PoseBusters 'mol' checks (needs posebusters; ~1 s per molecule)")
    parser.add_argument("--distribution", action="store_true",
                        help="atom-type TV, bond-length and bond-angle W1 to the training set")
    parser.add_argument("--energy", type=positive_int, metavar="N",
                        help="GFN2-xTB energy drop and RMSD on N valid molecules (needs tblite, "
                        "scipy; several seconds per molecule)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --energy subsample")
    add_relax_flags(parser, "also relax every molecule (MMFF94 via RDKit, valid molecules only, or "
                    "GFN2-xTB via tblite) and report the protocol metrics of the raw and the relaxed "
                    "geometries side by side, over the molecules that relaxed; failures are listed, "
                    "never fatal")
    parser.add_argument("--predictor", metavar="DIR",
                        help="conditional generation: a property predictor (`ead predictor`); each "
                        "record's target is its SD field / XYZ key named after the property (as "
                        "`ead sample --condition` writes it); reports the MAE, EDM's score")
    add_threads_flag(parser)
    parser.add_argument("--progress", action="store_true",
                        help="show progress even when stderr is not a terminal")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress and no notes on stderr; the results only")
    parser.set_defaults(func=run)


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
    from ..metrics.reference import describe

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
                  f"{'MAE target vs predicted':<28}{_num(p['mae'])} {p['unit']}"
                  + (f"   [95 % {p['mae_interval'][0]:.4f}, {p['mae_interval'][1]:.4f}]" if p.get("mae_interval") else ""),
                  f"{'  mean target / predicted':<28}{_num(p['target_mean'])} / {p['predicted_mean']:.4f}",
                  f"{'  targets shuffled':<28}{_num(p['shuffled_mae'])}   (the condition ignored)",
                  f"{'  atom count only':<28}{_num(p['size_only_mae'])}   (QM9 mean for the size)"]
        if p.get("vs_size_only"):
            d, lo, hi = p["vs_size_only"]
            lines.append(f"{'  MAE − atom count only':<28}{d:+10.4f}   [95 % {lo:+.4f}, {hi:+.4f}]")
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
    if "relaxation" in r:
        lines += _relaxation_table(r["relaxation"], r)
    return "\n".join(lines)


RELAX_ROWS = (("atom stability", "atom_stability"), ("molecule stability", "molecule_stability"),
              ("validity", "validity"), ("uniqueness", "uniqueness"), ("novelty", "novelty"),
              ("connectivity", "connectivity"))


def _relaxation_table(x: dict, raw_all: dict) -> list[str]:
    """Raw and relaxed metrics in separate columns: all raw molecules, the raw molecules that
    relaxed, and their relaxed geometries."""
    k, n = x["num_relaxed"], x["num_molecules"]
    lines = ["", f"{x['method'].upper()} relaxation: {k} of {n} molecules relaxed",
             f"{'metric':<24}{'raw, all':>12}{'raw, relaxed':>14}{'relaxed':>12}"]
    for label, key in RELAX_ROWS:
        cells = [raw_all.get(key)] + [x[s].get(key) if s in x else None for s in ("raw", "relaxed")]
        lines.append(f"{label:<24}" + "".join(f"{_pct(c):>{w}}" for c, w in zip(cells, (12, 14, 12))))
    for label, key in (("energy drop (kcal/mol)", "energy_drop_kcal_mol"), ("RMSD (Å)", "rmsd_angstrom")):
        lines.append(f"{label:<24}median {_num(x[key]['median'])}  mean {_num(x[key]['mean'])}")
    lines += [f"  molecule {f['molecule']}: {f['error']}" for f in x["failures"][:MAX_LISTED_BAD]]
    if len(x["failures"]) > MAX_LISTED_BAD:
        lines.append(f"  … and {len(x['failures']) - MAX_LISTED_BAD} more (all are listed with --json)")
    return lines


def _num(x) -> str:
    return f"{'–':>10}" if x is None else f"{x:10.4f}"


MAX_LISTED_BAD = 10


def run(args) -> int:
    from ..device import set_threads
    from ..metrics.evaluate import evaluate_molecules   # RDKit loads only when evaluating
    from ..progress import showing

    molecules, bad, props = _read(args.files)
    if args.limit is not None:
        molecules, props = molecules[: args.limit], props[: args.limit]
    predictor = None
    if args.predictor:   # load and check before the slow metrics
        from ..model.predictor import Predictor

        predictor = Predictor.from_pretrained(args.predictor)
        from ..data.properties import record_values

        name = predictor.config.property
        targets = record_values(props, (name,), "target",
                                f" (sample with a model conditioned on {name}, or add the field)")[:, 0]
    set_threads(args.threads, args.quiet)   # after the inputs are read: bad input gets its one error line alone
    checks = ["protocol"]
    checks += [c for c, on in (("posebusters", args.posebusters),
                               ("distribution", args.distribution),
                               ("energy", args.energy)) if on]
    result = evaluate_molecules(molecules, reference=args.reference, checks=checks,
                                energy_samples=args.energy or 0, seed=args.seed,
                                verbose=not args.quiet,
                                progress=showing(args.quiet, args.progress))
    result["bad_records"] = bad
    if args.relax:
        from ..metrics.relax import relaxed_comparison

        result["relaxation"] = relaxed_comparison(molecules, args.relax, args.reference,
                                                  args.relax_workers,
                                                  showing(args.quiet, args.progress))
    if predictor is not None:
        from ..metrics.property import property_mae

        result["property"] = property_mae(predictor, molecules, targets)
    if args.json:
        print(json.dumps(result, indent=2, default=_json_default))
        return 0
    sources = args.files[0] if len(args.files) == 1 else f"{len(args.files)} inputs"
    print(_table(result, sources))
    for w in result["warnings"]:
        print(f"\nwarning: {w}")
    if bad:
        print(f"\n{len(bad)} bad record{'s' if len(bad) != 1 else ''} skipped (not evaluated):")
        for b in bad[:MAX_LISTED_BAD]:
            print(f"  {b['error']}")
        if len(bad) > MAX_LISTED_BAD:
            print(f"  … and {len(bad) - MAX_LISTED_BAD} more (all are listed with --json)")
    sys.stdout.flush()
    return 0


def _json_default(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
