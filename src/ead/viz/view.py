"""`ead view`: look at molecules from any SDF/XYZ file.

Two outputs:
- a grid PNG of RDKit 2D depictions, with validity and SMILES under each. Valid molecules are
  drawn as chemists draw them (hydrogens implicit); an invalid one is drawn from its atoms and
  distance-inferred bonds as they are, every hydrogen shown and none added, so that what made it
  invalid (a five-bonded carbon, a stray H) stays visible.
- an HTML page with an interactive 3D view of each molecule that opens offline: the data and the
  viewer (`viewer_js.py`) are inlined, and the page fetches nothing.

Validity is the evaluation protocol's (RDKit sanitisation of the distance-bond molecule).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

from ..data.elements import symbol
from ..errors import EADError
from ..metrics.chem import protocol_mol, smiles_of
from ..pipeline import write_atomic
from .render import principal_rotation
from .style import ball_radius, color_hex, formula
from .viewer_js import VIEWER_JS


@dataclass
class MoleculeInfo:
    index: int                    # position in the file (0-based, as RDKit numbers records)
    name: str
    positions: np.ndarray         # [n, 3] Å
    atomic_numbers: np.ndarray    # [n]
    mol: Chem.Mol                 # the protocol molecule (distance bonds), unsanitised
    valid: bool
    smiles: str                   # canonical SMILES if valid, else the raw bond graph's SMILES

    @property
    def formula(self) -> str:
        return formula(self.atomic_numbers)


def describe(positions, atomic_numbers, index: int = 0, name: str = "") -> MoleculeInfo:
    pos = np.asarray(positions, dtype=np.float64)
    z = np.asarray(atomic_numbers, dtype=np.int64)
    mol = protocol_mol(pos, z)
    with rdBase.BlockLogs():  # invalid molecules are expected; their warnings are not news
        sanitised = Chem.Mol(mol)
        valid = smiles_of(sanitised) is not None
        if valid:
            # the whole molecule, not the protocol's largest fragment: a viewer should not hide
            # the pieces that the metric ignores
            smiles = Chem.MolToSmiles(Chem.RemoveHs(sanitised))
        else:
            try:
                smiles = Chem.MolToSmiles(mol, canonical=False)
            except Exception:  # RDKit may refuse some impossible graphs; the formula still tells
                smiles = ""
    return MoleculeInfo(index, name, pos, z, mol, valid, smiles)


# ------------------------------------------------------------------------------ grid PNG
def _depiction(info: MoleculeInfo) -> Chem.Mol:
    """A 2D-drawable copy of the molecule (see the module docstring for valid vs invalid)."""
    from rdkit.Chem import rdDepictor
    from rdkit.Chem.Draw import rdMolDraw2D

    with rdBase.BlockLogs():
        if info.valid:
            m = Chem.Mol(info.mol)
            Chem.SanitizeMol(m)
            m = Chem.RemoveHs(m)
            rdDepictor.Compute2DCoords(m)
            return rdMolDraw2D.PrepareMolForDrawing(m, addChiralHs=False)
        m = Chem.RWMol(info.mol)
        for atom in m.GetAtoms():
            atom.SetNoImplicit(True)  # draw the atoms that are there, add none
        m.UpdatePropertyCache(strict=False)
        Chem.FastFindRings(m)
        try:
            rdDepictor.Compute2DCoords(m)
        except Exception:
            # a graph the depictor cannot lay out: fall back to the 3D coordinates, projected
            # onto their two main axes
            xy = (info.positions - info.positions.mean(0)) @ principal_rotation(info.positions).T
            conf = Chem.Conformer(m.GetNumAtoms())
            for k, (x, y, _) in enumerate(xy.tolist()):
                conf.SetAtomPosition(k, (x, y, 0.0))
            m.RemoveAllConformers()
            m.AddConformer(conf, assignId=True)
        return rdMolDraw2D.PrepareMolForDrawing(m.GetMol(), kekulize=False, addChiralHs=False,
                                                wedgeBonds=False)


def _wrap(text: str, fits, lines: int) -> list[str]:
    """Cut `text` into at most `lines` lines, each as long as `fits(line)` allows (SMILES have
    no spaces to break at), marking a cut with an ellipsis."""
    out, line = [], ""
    for ch in text:
        if line and not fits(line + ch):
            out.append(line)
            line = ""
        line += ch
    out.append(line)
    if len(out) > lines:
        out = out[:lines]
        while out[-1] and not fits(out[-1] + "…"):
            out[-1] = out[-1][:-1]
        out[-1] += "…"
    return out


def grid_png(infos: list[MoleculeInfo], path, columns: int = 4, panel: int = 260) -> Path:
    """One PNG with a 2D depiction per molecule and, under it, index, validity (green or red),
    formula and SMILES. RDKit draws each molecule in its own panel (so one exploded sample does
    not shrink the others); the captions are set with Pillow, whose line layout is cleaner than
    RDKit's multi-line legends."""
    import io

    from PIL import Image, ImageDraw
    from rdkit.Chem.Draw import rdMolDraw2D

    from .render import _font

    if not infos:
        raise EADError("no molecules to draw")
    columns = max(1, min(columns, len(infos)))
    rows = -(-len(infos) // columns)
    font = _font(13)
    line_h = 16
    caption_h = 6 + 3 * line_h + 6
    cell_h = panel + caption_h
    sheet = Image.new("RGB", (columns * panel, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, info in enumerate(infos):
        x0, y0 = (k % columns) * panel, (k // columns) * cell_h
        drawer = rdMolDraw2D.MolDraw2DCairo(panel, panel)
        drawer.drawOptions().prepareMolsBeforeDrawing = False  # prepared in _depiction
        with rdBase.BlockLogs():
            drawer.DrawMolecule(_depiction(info))
        drawer.FinishDrawing()
        sheet.paste(Image.open(io.BytesIO(drawer.GetDrawingText())).convert("RGB"), (x0, y0))
        y = y0 + panel + 4
        head = f"#{info.index}  "
        draw.text((x0 + 8, y), head, fill=(20, 20, 20), font=font)
        hx = x0 + 8 + draw.textlength(head, font=font)
        status = "valid" if info.valid else "invalid"
        draw.text((hx, y), status, fill=(27, 120, 40) if info.valid else (190, 20, 30), font=font)
        hx += draw.textlength(status + "  ", font=font)
        draw.text((hx, y), info.formula, fill=(80, 80, 80), font=font)
        fits = lambda text: draw.textlength(text, font=font) <= panel - 16  # noqa: E731
        for j, line in enumerate(_wrap(info.smiles or "(no SMILES)", fits, 2)):
            draw.text((x0 + 8, y + (j + 1) * line_h), line, fill=(40, 40, 40), font=font)
        draw.rectangle([x0, y0, x0 + panel - 1, y0 + cell_h - 1], outline=(225, 225, 225))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    write_atomic(Path(path), lambda tmp: tmp.write_bytes(buf.getvalue()))
    return Path(path)


# ------------------------------------------------------------------------------ HTML page
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.2rem; color: #222; background: #f4f5f7; }
h1 { font-size: 1.25rem; margin: 0 0 .2rem; }
.meta { color: #555; margin-bottom: 1rem; font-size: .9rem; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: .8rem; }
.card { margin: 0; background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.15);
        overflow: hidden; }
.card canvas { width: 100%; height: 260px; display: block; cursor: grab; touch-action: none; }
.card canvas:active { cursor: grabbing; }
figcaption { padding: .4rem .6rem .6rem; font-size: .85rem; border-top: 1px solid #eee; }
.head { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; }
.idx { font-weight: 600; }
.badge { padding: 0 .4rem; border-radius: 4px; font-size: .75rem; }
.badge.ok { background: #d8f3dc; color: #1b5e20; }
.badge.bad { background: #fde2e1; color: #a4161a; }
.formula { color: #555; }
.name { color: #777; font-size: .75rem; margin-top: .15rem; }
.smiles { font-family: ui-monospace, monospace; font-size: .78rem; word-break: break-all;
          margin-top: .25rem; }
"""


def _page_data(infos: list[MoleculeInfo]) -> dict:
    elements = {}
    molecules = []
    for info in infos:
        # the page shows each molecule in its principal-axes frame: the first view is the
        # broadest one, and planar molecules start face on
        centred = info.positions - info.positions.mean(0)
        xyz = centred @ principal_rotation(centred).T
        for z in set(info.atomic_numbers.tolist()):
            elements[int(z)] = [color_hex(z), round(ball_radius(z), 3), symbol(z)]
        bonds = [[b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondTypeAsDouble())]
                 for b in info.mol.GetBonds()]
        molecules.append({
            "index": info.index, "name": info.name, "valid": info.valid, "smiles": info.smiles,
            "formula": info.formula,
            "atoms": [[int(z), *np.round(p, 3).tolist()] for z, p in zip(info.atomic_numbers, xyz)],
            "bonds": bonds})
    return {"elements": elements, "molecules": molecules}


def html_page(infos: list[MoleculeInfo], path, title: str, subtitle: str = "") -> Path:
    """A single self-contained HTML file: styles, data and viewer inline, no external URL."""
    # a molecule name from a user file could hold "</script>" or "<!--", which the HTML parser
    # acts on even inside a <script> element; as \u escapes they mean the same to JSON.parse
    payload = json.dumps(_page_data(infos), separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<div class="meta">{html.escape(subtitle)} Drag to rotate, scroll to zoom, double-click to reset,
hover an atom to name it. Bonds are inferred from distances (evaluation protocol).</div>
<div id="grid"></div>
<script type="application/json" id="ead-data">{payload}</script>
<script>{VIEWER_JS}</script>
</body>
</html>
"""
    write_atomic(Path(path), lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return Path(path)


# ------------------------------------------------------------------------------ the verb
def view_file(path, out_prefix=None, max_molecules: int = 48, columns: int = 4,
              png: bool = True, page: bool = True, progress=False) -> dict:
    """Read an SDF/XYZ file (or folder) and write OUT_PREFIX.png and OUT_PREFIX.html for its
    first `max_molecules` molecules. Unreadable records are skipped and counted, not fatal: a
    viewer should show what it can. Returns the paths written and the counts. `progress`: as
    ead.progress.Progress's `show`, per molecule drawn."""
    from ..data.files import read_molecules
    from ..progress import tracked

    path = Path(path)
    result = read_molecules(path, strict=False)
    if not result.molecules:
        detail = f": {result.errors[0][1]}" if result.errors else ""
        raise EADError(f"no molecules could be read from {path}{detail}")
    if out_prefix is None:
        out_prefix = path.with_suffix("") if path.is_file() else path / path.name
    out_prefix = Path(out_prefix)
    try:   # -o a/b/c makes the folders a/b (once the input has been read)
        out_prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EADError(f"cannot make the output folder {out_prefix.parent}: {e.strerror or e}") from None
    shown = list(zip(result.molecules, result.names))[:max_molecules]
    infos = [describe(pos, z, k, name) for k, ((pos, z), name)
             in enumerate(tracked(shown, len(shown), "view", "mol", progress))]
    out = {"molecules": len(result.molecules), "shown": len(infos),
           "valid": sum(i.valid for i in infos), "skipped": len(result.errors), "files": []}
    if png:
        out["files"].append(grid_png(infos, out_prefix.with_name(out_prefix.name + ".png"), columns))
    if page:
        subtitle = (f"{len(infos)} of {len(result.molecules)} molecules from {path.name}, "
                    f"{out['valid']} valid.")
        out["files"].append(html_page(infos, out_prefix.with_name(out_prefix.name + ".html"),
                                      f"EAD view: {path.name}", subtitle))
    return out


__all__ = ["MoleculeInfo", "describe", "grid_png", "html_page", "view_file"]
