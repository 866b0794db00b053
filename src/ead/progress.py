"""Progress for every long step (sampling, PoseBusters, xTB, pictures), one rule for all of them:
on stderr, never stdout (a pipe gets only the results); shown when stderr is a terminal, or when
asked (`--progress`, `progress=True`); never with `--quiet`. A callable receives the counts instead.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterable


def showing(quiet: bool = False, force: bool = False) -> bool:
    """Whether a command's progress bars are drawn: off with --quiet, on with --progress, else
    only when stderr is a terminal (a log file or a pipe gets no bar redraws)."""
    if quiet:
        return False
    if force:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):   # closed or replaced stderr
        return False


class Progress:
    """Counts work toward a total: a tqdm bar on stderr (`show=True`), calls of `callback(done,
    total, **fields)` (`show` a callable), or nothing (`show` False / None)."""

    def __init__(self, total: int | None, desc: str, unit: str = "it",
                 show: bool | Callable | None = False):
        self.total, self.done, self.fields = total, 0, {}
        self.callback = show if callable(show) else None
        self.bar = None
        if show is True:
            from tqdm.auto import tqdm   # a widget in notebooks, a text bar in terminals

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, k: int = 1, **fields) -> None:
        """k more units done; `fields` (e.g. molecules=12) are shown beside the bar."""
        self.done += k
        if fields:
            self.fields.update(fields)
        if self.bar is not None:
            if fields:
                self.bar.set_postfix(self.fields, refresh=False)
            self.bar.update(k)
        if self.callback is not None:
            self.callback(self.done, self.total, **self.fields)

    def set_total(self, total: int) -> None:
        """A better estimate of the total (e.g. once a batch showed its real step count)."""
        self.total = max(int(total), self.done)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tracked(items: Iterable, total: int, desc: str, unit: str = "it",
            show: bool | Callable | None = False):
    """Iterate `items`, counting each one on a Progress."""
    with Progress(total, desc, unit, show) as p:
        for item in items:
            yield item
            p.update()
