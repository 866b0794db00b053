"""The `ead` command: train | sample | evaluate | predictor | info (and view, bench, completion),
one module per verb; argument parsing lives only in this package.

Every error a user can cause ends in one line `ead: error: …` and exit status 2; no traceback,
no half-written output file."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import EADError
from ..version import __version__
from . import bench, completion, evaluate, info, predictor, sample, train, view
from .common import Parser
from .completion import completion_script

__all__ = ["build_parser", "completion_script", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ead", description="Equivariant Asynchronous Diffusion for 3D molecules "
                     "(An et al., arXiv 2603.10093): train, sample, evaluate.")
    parser.add_argument("--version", action="version", version=f"ead {__version__}")
    parser.set_defaults(root_parser=parser)   # `ead completion` reads the parser it belongs to
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train.add(sub)
    sample.add(sub)
    view.add(sub)
    evaluate.add(sub)
    predictor.add(sub)
    info.add(sub)
    bench.add(sub)
    completion.add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad flag (already reported in one line)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except EADError as e:
        print(f"ead: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ead: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
