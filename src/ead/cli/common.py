"""What every verb's parser shares: the one-line error parser, argument types, and flags derived
from a config dataclass (its fields' defaults, help and value kinds)."""

from __future__ import annotations

import argparse
import dataclasses


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + line
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int, what: str):
    """An argparse type: an integer ≥ low, with one readable message for anything else."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = low - 1
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


positive_int = _int_at_least(1, "a positive integer")
nonneg_int = _int_at_least(0, "an integer ≥ 0")


def _float_in_unit(open_at_zero: bool):
    """An argparse type: a number in (0, 1] or in [0, 1]."""
    span = "(0, 1]" if open_at_zero else "[0, 1]"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text!r}") from None
        if not (0.0 < v if open_at_zero else 0.0 <= v) or v > 1.0:
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text!r}")
        return v

    return parse


fraction = _float_in_unit(open_at_zero=True)
unit_float = _float_in_unit(open_at_zero=False)


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


KINDS = {"positive_int": positive_int, "nonneg_int": nonneg_int, "fraction": fraction,
         "unit_float": unit_float, "positive_float": positive_float}


def default_of(cls, name: str):
    """The default of field `name` of dataclass `cls`: a flag's default comes from its config."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def add_config_flags(p: argparse.ArgumentParser, cls) -> None:
    """A --flag per field of `cls` with `help` and `kind` metadata, defaulting to None ("the model's
    setting"): the fields' own defaults apply where nothing was given."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "kind" not in meta:
            continue
        flag = "--" + f.name.replace("_", "-")
        if meta["kind"] == "choice":
            p.add_argument(flag, choices=list(meta["choices"]), help=meta["help"])
        else:
            p.add_argument(flag, type=KINDS[meta["kind"]], help=meta["help"])


def config_values(args: argparse.Namespace, cls) -> dict:
    """The values of `cls`'s flags in `args` (None where not given)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if "kind" in f.metadata}


def add_threads_flag(p: argparse.ArgumentParser) -> None:
    """--threads N, the same on every verb that computes (ead.device.set_threads applies it)."""
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads (default: the CPUs this process may use, less those other "
                        "processes keep busy; one on a loaded machine)")


def add_relax_flags(parser, help_text: str) -> None:
    """--relax mmff|xtb and --relax-workers N, for the verbs that relax molecules (sample, evaluate)."""
    parser.add_argument("--relax", choices=["mmff", "xtb"], help=help_text)
    parser.add_argument("--relax-workers", type=positive_int, default=1, metavar="N",
                        help="processes relaxing molecules in parallel (default 1)")
