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


# Commands whose module alone is imported when they are the one run: a tier process the
# testbed starts (`tierflow serve`) then needs 0.5 s to start instead of 4.4 s, PyTorch
# never being imported for ONNX segments (Note [Lazy public names] in tierflow).
_LIGHT_COMMANDS = dict.fromkeys(("serve", "up", "down", "infer"), "commands_serve")
_COMMAND_MODULES = (
    "commands_bench",
    "commands_build",
    "commands_compress",
    "commands_fusion",
    "commands_hop",
    "commands_model",
    "commands_plan",
    "commands_serve",
    "commands_train",
)


def command_modules(argv: list[str]) -> tuple[str, ...]:
    """The command modules to import for ``argv`` (the arguments after the program name).

    Registering commands on import keeps each command module independent of the others;
    a light command needs only its own, anything else (help included) all of them.

    Examples
    --------
    >>> command_modules(["serve", "--manifest", "m.json"])
    ('commands_serve',)
    >>> len(command_modules(["--help"])) > 1
    True
    """
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    light = _LIGHT_COMMANDS.get(command or "")
    return (light,) if light else _COMMAND_MODULES


def main() -> None:
    import importlib

    for module in command_modules(sys.argv[1:]):
        importlib.import_module(f"tierflow.cli.{module}")
    app()
