"""The ``tierflow`` command: a thin layer over the library."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from tierflow.errors import TierflowError

app = typer.Typer(
    name="tierflow",
    help="Plan, split and run DNNs across end devices, edge nodes and the cloud.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are wide; when output goes to a file or a pipe, rich would assume 80 columns.
console = Console(width=None if sys.stdout.isatty() else 132)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 132)

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a :class:`TierflowError` as one clear line and exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except TierflowError as exc:
            err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def main() -> None:
    # Registering commands on import keeps each command module independent of the others.
    from tierflow.cli import (  # noqa: F401
        commands_bench,
        commands_build,
        commands_compress,
        commands_fusion,
        commands_hop,
        commands_model,
        commands_plan,
        commands_serve,
        commands_train,
    )

    app()
