"""``tierflow train``: train a backbone with early exits and write a run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, cast

import typer
from rich.table import Table

from tierflow.cli.app import app, console, reports_errors
from tierflow.cli.commands_model import ModelArg
from tierflow.errors import TrainingError
from tierflow.plan.exit_options import FINAL_EXIT
from tierflow.train import TrainSettings, train_run
from tierflow.train.run import RunResult


def _exit_weights(text: str | None) -> tuple[float, ...]:
    if text is None:
        return ()
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise TrainingError(
            f"--exit-weights {text!r}: expected numbers such as 1,0.5 (exits, then final)"
        ) from None


def _exits(text: str) -> list[str] | str:
    if text == "auto":
        return "auto"
    return [part.strip() for part in text.split(",") if part.strip()]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def result_table(result: RunResult) -> Table:
    config = result.config
    table = Table(
        title=f"{config.backbone} on {config.dataset} · policy {config.policy} · "
        f"{len(result.history)} epochs"
    )
    for column in ("exit", "node", "threshold", "test acc alone", "exit rate", "acc of answered"):
        table.add_column(column, justify="left" if column in {"exit", "node"} else "right")
    default = result.test_default
    for spec in config.exits:
        threshold = config.thresholds.get(spec.name)
        table.add_row(
            spec.name,
            spec.node,
            "off" if threshold is None else f"{threshold:.4f}",
            _percent(result.test_standalone[spec.name]),
            _percent(default.exit_rates[spec.name]),
            _percent(default.exit_accuracy[spec.name]),
        )
    table.add_row(
        FINAL_EXIT,
        "",
        "",
        _percent(result.test_standalone[FINAL_EXIT]),
        _percent(default.exit_rates[FINAL_EXIT]),
        _percent(default.exit_accuracy[FINAL_EXIT]),
    )
    final = result.test_standalone[FINAL_EXIT]
    table.caption = (
        f"test accuracy with exits {default.accuracy:.2%}, final alone {final:.2%} "
        f"(drop {100 * (final - default.accuracy):.2f} pp) · "
        f"{len(result.options.settings)} operating points in exits.json · "
        f"trained in {result.train_seconds:.1f} s"
    )
    return table


@app.command()
@reports_errors
def train(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="Run directory to write")],
    data: Annotated[str, typer.Option(help="mnist5k | digits | npz:FILE | folder:DIR")] = "mnist5k",
    exits: Annotated[
        str, typer.Option(help="auto, or backbone nodes such as pool1,pool2")
    ] = "auto",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per step")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate (peak, with --schedule)")] = 2e-3,
    schedule: Annotated[
        str, typer.Option(help="cosine (decay to 0 over the run) | constant")
    ] = "cosine",
    exit_weights: Annotated[
        str | None, typer.Option(help="Loss weights, one per exit then final, e.g. 1,0.5")
    ] = None,
    policy: Annotated[str, typer.Option(help="max_softmax | entropy")] = "max_softmax",
    head_channels: Annotated[
        int, typer.Option(min=1, help="Channels of the conv in heads on feature maps")
    ] = 32,
    max_accuracy_drop: Annotated[
        float, typer.Option(help="Default thresholds: max accuracy drop vs final, in pp")
    ] = 0.5,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint")] = False,
    seed: Annotated[int, typer.Option(help="Seeds weights and data order")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print metrics.json")] = False,
) -> None:
    """Train MODEL with early exits on a dataset; write OUT (model.json, weights, exits.json)."""
    settings = TrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        exit_weights=_exit_weights(exit_weights),
        seed=seed,
        schedule=cast(Literal["cosine", "constant"], schedule),
    )
    result = train_run(
        model,
        data=data,
        exits=_exits(exits),
        out=out,
        settings=settings,
        policy=policy,
        max_accuracy_drop_pp=max_accuracy_drop,
        resume=resume,
        console=console,
        progress=not json_out,
        head_channels=head_channels,
    )
    if json_out:
        print(json.dumps(result.metrics(), indent=2))
        return
    console.print(result_table(result))
    console.print(f"run written to {out} (plan it with: tierflow plan run:{out} ...)")
