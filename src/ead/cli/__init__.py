"""The `ead` command: train | sample | evaluate | predictor | info (and view, bench, completion),
one module per verb; argument parsing lives only in this package.

Every error a user can cause ends in one line `ead: error: …` and exit status 2; no traceback,
no half-written output file."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..errors import EADError
from ..version import __version__
from . import bench, completion, evaluate, info, predictor, sample, train, view
from .common import Parser
from .completion import completion_script

__all__ = ["build_parser", "completion_script", "main"]


VERBS = {"train": train, "sample": sample, "view": view, "evaluate": evaluate,
         "predictor": predictor, "info": info, "bench": bench, "completion": completion}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (`only`) one verb's options with the others listed by name and help:
    a verb's options need its configuration classes, and those import torch (4 s), which
    `ead --help`, `--version` and every other verb do not need."""
    parser = Parser(prog="ead", description="Equivariant Asynchronous Diffusion for 3D molecules "
                     "(An et al., arXiv 2603.10093): train, sample, evaluate.")
    parser.add_argument("--version", action="version", version=f"ead {__version__}")
    parser.set_defaults(root_parser=parser)   # `ead completion` reads the parser it belongs to
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, verb in VERBS.items():
        if only is None or name == only:
            verb.add(sub)
        else:
            sub.add_parser(name, help=verb.HELP, add_help=False)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in argv if not a.startswith("-")), "")
    # `ead completion` writes every verb's options; other verbs need only their own
    parser = build_parser(None if verb == "completion" else verb)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad flag (already reported in one line)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # SIGTERM unwinds like Ctrl-C, so every `with` block removes its temporary file (a killed
    # `ead sample` left a hidden partial .out.sdf.<hex>.tmp); training turns it into a stop request
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        return args.func(args)
    except Terminated:
        print("ead: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except EADError as e:
        print(f"ead: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ead: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(0)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that clean-up code runs."""


def _terminate(signum, frame):
    raise Terminated


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
