"""`ead view`: draw molecules as a grid PNG and an offline 3D HTML page."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EADError
from .common import add_threads_flag, positive_int

HELP = "draw molecules: a grid PNG and an offline 3D HTML page"


def add(sub):
    p = sub.add_parser("view", help=HELP,
                       description="Draw the molecules of an SDF/XYZ file or folder. OUT_PREFIX.png: "
                       "RDKit 2D depictions in a grid, with validity and SMILES under each (invalid "
                       "molecules are drawn from their atoms as they are). OUT_PREFIX.html: one "
                       "self-contained page with an interactive 3D view per molecule (drag to "
                       "rotate, scroll to zoom) that opens offline. Bonds and validity follow the "
                       "evaluation protocol (bonds from distances).")
    p.add_argument("file", metavar="FILE", help="SDF, MOL or XYZ file (gzipped too), or a folder of them")
    p.add_argument("-o", "--output", metavar="OUT_PREFIX",
                   help="write OUT_PREFIX.png and OUT_PREFIX.html (default: FILE without its extension)")
    p.add_argument("--max-molecules", metavar="N", type=positive_int, default=48,
                   help="draw the first N molecules (default 48)")
    p.add_argument("--columns", metavar="C", type=positive_int, default=4,
                   help="molecules per row in the PNG (default 4)")
    add_threads_flag(p)
    p.add_argument("--progress", action="store_true",
                   help="show progress even when stderr is not a terminal")
    p.add_argument("--quiet", action="store_true", help="print nothing when all went well")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..device import set_threads
    from ..progress import showing
    from ..viz.view import view_file

    if not Path(args.file).exists():
        raise EADError(f"no such file or folder: {args.file}")
    set_threads(args.threads, quiet=True)   # drawing is RDKit's: the thread count is not worth a line
    res = view_file(args.file, args.output, max_molecules=args.max_molecules, columns=args.columns,
                    progress=showing(args.quiet, args.progress))
    if not args.quiet:
        png, page = res["files"]
        print(f"drew {res['shown']} of {res['molecules']} molecules ({res['valid']} valid): {png} and {page}"
              + (f"; skipped {res['skipped']} unreadable records" if res["skipped"] else ""), file=sys.stderr)
    return 0
