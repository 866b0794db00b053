"""Which atoms leave the noise first? Statistics over many denoising trajectories.

Two questions about EAD's adaptive sampler (docs/method.md §7): do heavy atoms reach t = 0 before
hydrogens, and do ring atoms reach it before chain atoms? Rings are read with RDKit from the final
molecule's distance-inferred bonds; ring vs chain compares heavy atoms only, since hydrogens are
never in rings and would otherwise make it the first question again.

Two measures per atom, both from `MoleculeTrajectory`:
- finish rank: the order in which the atoms of a molecule first reach t = 0, as a fraction
  (0 = first, 1 = last; tied atoms share their mean rank). Coarse: with a 2C window many atoms
  arrive together at the end.
- mean offset: t_i − mean_j t_j (how far behind the molecule's average time; negative =
  ahead), averaged over the asynchronous iterates (those where not every atom shares one
  time). Uses the whole asynchronous phase, not only its last steps. Within a molecule the
  difference between two groups' offsets is the same whatever the reference time, so the paired
  comparison below equals one made with the lag behind the leading atom.

Comparisons are paired within molecules: for each molecule that has atoms of both groups, the
mean over group B minus the mean over group A; positive means group A is ahead. Reported with a
bootstrap 95 % interval over molecules and a two-sided sign test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rdkit import Chem, rdBase

from ..data.elements import symbol
from ..metrics.chem import protocol_mol, smiles_of
from .trajectory import MoleculeTrajectory


@dataclass
class AtomTable:
    """One row per atom of every analysed molecule."""

    molecule: np.ndarray      # [A] molecule number
    z: np.ndarray             # [A] atomic number (decoded)
    ring: np.ndarray          # [A] bool, in a ring of the final molecule
    valid: np.ndarray         # [A] bool, its molecule passes RDKit sanitisation (protocol)
    finish_rank: np.ndarray   # [A] in [0, 1]
    mean_offset: np.ndarray   # [A] time steps; NaN for a molecule with no asynchronous iterate

    @property
    def heavy(self) -> np.ndarray:
        return self.z > 1


def ring_atoms(positions, atomic_numbers) -> tuple[np.ndarray, bool]:
    """(in-ring flag per atom, validity) for the molecule built by the evaluation protocol."""
    mol = protocol_mol(positions, atomic_numbers, conformer=False)
    with rdBase.BlockLogs():
        valid = smiles_of(Chem.Mol(mol)) is not None
    # ring perception on the unsanitised graph: invalid molecules have rings too
    m = Chem.RWMol(mol)
    m.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(m)
    return np.array([a.IsInRing() for a in m.GetAtoms()], dtype=bool), valid


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):
        tie = values == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def finish_rank(traj: MoleculeTrajectory) -> np.ndarray:
    m = traj.num_atoms
    return _average_ranks(traj.finish_index()) / max(m - 1, 1)


def time_offset(traj: MoleculeTrajectory) -> np.ndarray:
    """[S, m] t_i − mean_j t_j at every iterate."""
    t = traj.times.astype(np.float64)
    return t - t.mean(axis=1, keepdims=True)


def mean_offset(traj: MoleculeTrajectory) -> np.ndarray:
    rows = traj.lag().max(axis=1) > 0
    if not rows.any():
        return np.full(traj.num_atoms, np.nan)
    return time_offset(traj)[rows].mean(axis=0)


def atom_table(trajectories: list[MoleculeTrajectory]) -> AtomTable:
    cols: dict[str, list] = {k: [] for k in ("molecule", "z", "ring", "valid", "finish_rank", "mean_offset")}
    for k, tr in enumerate(trajectories):
        ring, valid = ring_atoms(tr.final_positions, tr.atomic_numbers)
        cols["molecule"].append(np.full(tr.num_atoms, k))
        cols["z"].append(np.asarray(tr.atomic_numbers, dtype=np.int64))
        cols["ring"].append(ring)
        cols["valid"].append(np.full(tr.num_atoms, valid))
        cols["finish_rank"].append(finish_rank(tr))
        cols["mean_offset"].append(mean_offset(tr))
    return AtomTable(**{k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()})


def sign_test(differences: np.ndarray) -> float:
    """Two-sided exact sign test of 'positive and negative equally likely' (zeros dropped)."""
    d = differences[differences != 0]
    n = len(d)
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int((d > 0).sum()), n, 0.5).pvalue)


def paired_difference(table: AtomTable, value: np.ndarray, first: np.ndarray, second: np.ndarray,
                      molecules: np.ndarray | None = None, seed: int = 0) -> dict:
    """Per molecule: mean(value over `second` atoms) − mean(value over `first` atoms), for the
    molecules that have both (and are in `molecules` if given). Positive = `first` is ahead."""
    diffs = []
    for k in np.unique(table.molecule):
        if molecules is not None and not molecules[k]:
            continue
        here = table.molecule == k
        a, b = value[here & first], value[here & second]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if len(a) and len(b):
            diffs.append(b.mean() - a.mean())
    d = np.asarray(diffs, dtype=np.float64)
    out = {"molecules": int(len(d)), "mean": None, "ci95": None, "positive": None, "p_sign": None}
    if len(d):
        rng = np.random.default_rng(seed)
        boot = d[rng.integers(0, len(d), size=(2000, len(d)))].mean(axis=1)
        out.update(mean=float(d.mean()), ci95=[float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
                   positive=float((d > 0).mean()), negative=float((d < 0).mean()), p_sign=sign_test(d))
    return out


def analyse(trajectories: list[MoleculeTrajectory]) -> dict:
    """The two questions, with both measures, on all molecules and on the valid ones only;
    plus mean finish rank and time offset per element and for ring / chain heavy atoms."""
    table = atom_table(trajectories)
    heavy, h, ring = table.heavy, table.z == 1, table.ring
    chain = heavy & ~ring
    ring_heavy = heavy & ring
    valid_mol = np.array([bool(table.valid[table.molecule == k].all()) for k in range(len(trajectories))])
    result = {
        "molecules": len(trajectories),
        "valid_molecules": int(valid_mol.sum()),
        "atoms": int(len(table.z)),
        "asynchronous_molecules": int(sum(bool((tr.lag() > 0).any()) for tr in trajectories)),
        "settings": trajectories[0].settings if trajectories else {},
    }
    for name, first, second in (("heavy_before_h", heavy, h), ("ring_before_chain", ring_heavy, chain)):
        result[name] = {
            measure: {
                "all": paired_difference(table, value, first, second),
                "valid": paired_difference(table, value, first, second, molecules=valid_mol),
            }
            for measure, value in (("finish_rank", table.finish_rank), ("mean_offset", table.mean_offset))
        }
    groups = {symbol(int(z)): table.z == z for z in np.unique(table.z)}
    groups.update({"heavy, ring": ring_heavy, "heavy, chain": chain})
    result["groups"] = {
        g: {"atoms": int(mask.sum()),
            "finish_rank": float(table.finish_rank[mask].mean()) if mask.any() else None,
            "mean_offset": float(np.nanmean(table.mean_offset[mask])) if mask.any() and
            not np.isnan(table.mean_offset[mask]).all() else None}
        for g, mask in groups.items()
    }
    return result


def offset_profiles(trajectories: list[MoleculeTrajectory], last: int | None = None) -> dict[str, np.ndarray]:
    """Mean time offset of H, chain-heavy and ring-heavy atoms at each of the `last` iterates before
    the end of sampling (trajectories aligned at their final iterate; by default as many as the
    longest asynchronous phase). NaN where no atom."""
    if last is None:
        phases = [len(tr.iterations) - int(np.argmax(tr.lag().max(axis=1) > 0))
                  for tr in trajectories if (tr.lag() > 0).any()]
        last = max(phases, default=1) + 2
    sums = {g: np.zeros(last) for g in ("H", "heavy, chain", "heavy, ring")}
    counts = {g: np.zeros(last) for g in sums}
    for tr in trajectories:
        ring, _ = ring_atoms(tr.final_positions, tr.atomic_numbers)
        heavy = tr.atomic_numbers > 1
        masks = {"H": ~heavy, "heavy, chain": heavy & ~ring, "heavy, ring": heavy & ring}
        offset = time_offset(tr)[::-1][:last]  # row 0 = final iterate
        n = len(offset)
        for g, mask in masks.items():
            if mask.any():
                sums[g][:n] += offset[:, mask].sum(axis=1)
                counts[g][:n] += mask.sum()
    with np.errstate(invalid="ignore"):
        return {g: sums[g] / counts[g] for g in sums}


def _verdict(res: dict) -> str:
    if res["mean"] is None:
        return "not measurable (no molecule has both groups)"
    lo, hi = res["ci95"]
    if lo > 0 and res["p_sign"] < 0.05:
        return "yes"
    if hi < 0 and res["p_sign"] < 0.05:
        return "no, the opposite"
    return "no clear difference"


def markdown(result: dict) -> str:
    """The answer as Markdown: one table per question (what `docs/asynchrony.md` shows)."""
    s = result["settings"]
    lines = [
        f"Sampler: {s.get('sampler')} ({', '.join(f'{k} = {v}' for k, v in s.items() if k != 'sampler')}); "
        f"{result['molecules']} molecules ({result['valid_molecules']} valid), {result['atoms']} atoms; "
        f"{result['asynchronous_molecules']} molecules had at least one asynchronous iterate.",
        "",
    ]
    titles = {"heavy_before_h": ("Do heavy atoms reach t = 0 before hydrogens?", "H − heavy"),
              "ring_before_chain": ("Do ring atoms reach t = 0 before chain atoms (heavy atoms only)?",
                                    "chain − ring")}
    for key, (question, diff) in titles.items():
        lines += [f"**{question}** Answer (mean offset, all molecules): "
                  f"**{_verdict(result[key]['mean_offset']['all'])}**.", "",
                  f"| measure | molecules | mean difference ({diff}) | 95 % CI | share > 0 | share < 0 | sign test p |",
                  "|---|---|---|---|---|---|---|"]
        for measure, unit in (("mean_offset", "time steps"), ("finish_rank", "rank fraction")):
            for subset in ("all", "valid"):
                r = result[key][measure][subset]
                if r["mean"] is None:
                    lines.append(f"| {measure} ({subset}) | 0 | – | – | – | – | – |")
                    continue
                lines.append(f"| {measure} ({subset}, {unit}) | {r['molecules']} | {r['mean']:+.3f} | "
                             f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | {r['positive']:.2f} | "
                             f"{r['negative']:.2f} | {r['p_sign']:.2g} |")
        lines.append("")
    lines += ["| atoms | count | mean finish rank (0 = first) | mean offset t_i − t̄ (time steps, < 0 = ahead) |",
              "|---|---|---|---|"]
    for g, r in result["groups"].items():
        fr = "–" if r["finish_rank"] is None else f"{r['finish_rank']:.3f}"
        off = "–" if r["mean_offset"] is None else f"{r['mean_offset']:+.2f}"
        lines.append(f"| {g} | {r['atoms']} | {fr} | {off} |")
    return "\n".join(lines) + "\n"


def plot_asynchrony(trajectories: list[MoleculeTrajectory], result: dict, path) -> None:
    """Left: mean time offset of each atom group over the last iterates (below zero = ahead of
    its molecule's average). Right: per-group mean offset and mean finish rank."""
    from pathlib import Path

    from matplotlib.figure import Figure

    from ..pipeline import write_atomic

    profiles = offset_profiles(trajectories)
    fig = Figure(figsize=(10, 3.9), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.4, 1])
    colors = {"H": "#7f7f7f", "heavy, chain": "#1f77b4", "heavy, ring": "#d62728"}
    ax1.axhline(0, color="black", lw=0.6)
    for g, prof in profiles.items():
        if np.isfinite(prof).any():
            ax1.plot(-np.arange(len(prof)), prof, label=g, color=colors[g], lw=1.6)
    ax1.set_xlabel("iterates before the end of sampling")
    ax1.set_ylabel(r"mean $t_i - \bar t$ (time steps)")
    ax1.set_title("time offset from the molecule's mean (below 0 = ahead)", fontsize=10)
    ax1.legend(fontsize=8)
    groups = [(g, r) for g, r in result["groups"].items() if r["mean_offset"] is not None]
    x = np.arange(len(groups))
    ax2.axhline(0, color="black", lw=0.6)
    ax2.bar(x, [r["mean_offset"] for _, r in groups], color="#9ecae1", label="mean offset (left axis)")
    ax2.set_xticks(x)
    ax2.set_xticklabels([f"{g.replace(', ', chr(10))}\n({r['atoms']})" for g, r in groups], fontsize=8)
    ax2.set_ylabel(r"mean $t_i - \bar t$ (time steps)")
    twin = ax2.twinx()
    twin.plot(x, [r["finish_rank"] for _, r in groups], "o", color="#e6550d", label="mean finish rank")
    twin.set_ylim(0, 1)
    twin.set_ylabel("mean finish rank (0 = first)")
    ax2.set_title("per atom group (count)", fontsize=10)
    handles = ax2.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax2.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower left")
    s = result["settings"]
    fig.suptitle(f"EAD asynchrony: {result['molecules']} molecules, {s.get('sampler')} sampler, "
                 f"{s.get('steps')} steps", fontsize=11)
    write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
