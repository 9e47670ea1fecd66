"""Progress bars for the CLI's long work (verifying the audit log, pulling an extract, ingesting).

On stderr, so that stdout stays what scripts read, and only when stderr is a terminal: a pipe, a log
file or a test's runner sees nothing of it. Without a total the bar is indeterminate (a pulse), for
work that cannot say how far it is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[[float], None]


def _ignore(_amount: float = 1) -> None:
    return None


@contextmanager
def progress(description: str, total: float | None = None, *, transfer: bool = False) -> Iterator[Advance]:
    """``with progress("Ingesting", total=n) as advance: ... advance(1)``. ``transfer``: the amounts
    are bytes, shown as sizes and a rate."""
    if not sys.stderr.isatty():
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    if transfer:
        amount: tuple[ProgressColumn, ...] = (DownloadColumn(), TransferSpeedColumn())
    else:
        amount = (MofNCompleteColumn(),) if total is not None else ()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), *amount, TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(description, total=total)

        def advance(step: float = 1) -> None:
            bar.advance(task, step)

        yield advance
