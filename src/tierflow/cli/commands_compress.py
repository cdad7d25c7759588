"""``tierflow compress``: model variants and ways across one cut, all measured in ORT."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.table import Table

from tierflow.cli.app import app, console, err_console, reports_errors
from tierflow.cli.commands_model import ModelArg
from tierflow.cli.loading import parse_shape
from tierflow.compress.bottleneck import BottleneckSettings, train_bottleneck
from tierflow.compress.bottleneck_run import save_bottleneck
from tierflow.compress.codec_options_measure import DEFAULT_LIMIT, codec_options_for
from tierflow.compress.cut import cut_candidates, split_at
from tierflow.compress.cut_measure import (
    DEFAULT_CUT_CODECS,
    CutCodec,
    measure_bottleneck,
    measure_cut_codecs,
)
from tierflow.compress.finetune import accuracy, finetune
from tierflow.compress.variant_options_measure import DEFAULT_PLAN_VARIANTS, variant_options_for
from tierflow.compress.variants import Variant, compress_variants
from tierflow.data import load_dataset
from tierflow.data.dataset import DatasetSplits
from tierflow.errors import CompressionError
from tierflow.models import resolve_model
from tierflow.plan.codec_options import CodecOptions
from tierflow.plan.variant_options import VariantOptions

_RANDOM_INIT = ("zoo:", "torchvision:")  # specs whose weights are random at build time
_DEFAULT_VARIANTS = "fp32,pruned,int8-static,int8-dynamic,pruned+int8"


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _default_cut(model: torch.nn.Module, example: torch.Tensor) -> str:
    candidates = cut_candidates(model, example)
    if not candidates:
        raise CompressionError("--cut: the model has no node where one 4-D tensor alone crosses")
    # pool2 is where lenet-style models were measured (Note [Measured bottleneck figures]
    # in compress.bottleneck);
    # elsewhere the middle candidate splits the feature extractor roughly in half.
    return "pool2" if "pool2" in candidates else candidates[len(candidates) // 2]


def _limited(data: DatasetSplits, limit: int | None) -> DatasetSplits:
    if limit is None or limit >= len(data.train):
        return data
    index = np.arange(limit, dtype=np.int64)
    return DatasetSplits(
        train=data.train.subset(index, f"{data.train.name}[:{limit}]"),
        val=data.val,
        test=data.test,
    )


def _variants_table(variants: Sequence[Variant]) -> Table:
    table = Table(title="model variants (ONNX Runtime, 1 thread, test split)")
    for column in ("variant", "latency ms", "speedup", "size kB", "accuracy"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for v in variants:
        acc = "-" if v.accuracy is None else f"{v.accuracy:.2%}"
        table.add_row(
            v.name, f"{v.latency_ms:.3f}", f"{v.speedup:.2f}x", f"{v.size_bytes / 1024:.1f}", acc
        )
    return table


def _codecs_table(rows: Sequence[CutCodec]) -> Table:
    base = rows[0].accuracy
    table = Table(title=f"at cut {rows[0].cut}: bytes per sample and accuracy (ONNX Runtime)")
    for column in ("codec", "bytes/sample", "ratio vs fp32", "accuracy", "loss pp"):
        table.add_column(column, justify="left" if column == "codec" else "right")
    for r in rows:
        table.add_row(
            r.name,
            f"{r.bytes_per_sample:,.1f}",
            f"{r.ratio_vs_fp32:.2f}x",
            f"{r.accuracy:.2%}",
            f"{100 * (base - r.accuracy):.2f}",
        )
    return table


def _options_table(options: CodecOptions) -> Table:
    table = Table(title="codec options for the planner (validation split, PyTorch)")
    for column in ("node", "codec", "ratio", "encode ms", "decode ms", "drop pp"):
        table.add_column(column, justify="left" if column in {"node", "codec"} else "right")
    for c in options.candidates:
        table.add_row(
            c.node,
            c.codec,
            f"{c.ratio:.3f}",
            f"{c.encode_ms:.3f}",
            f"{c.decode_ms:.3f}",
            f"{c.accuracy_drop_pp:.2f}",
        )
    return table


def _variant_options_table(options: VariantOptions) -> Table:
    """Per variant: its accuracy drop and the time ratio of each stretch it changes."""
    table = Table(title="variant options for the planner (ONNX Runtime, 1 thread)")
    for column in ("variant", "drop pp", "time ratio per stretch (variant / fp32)"):
        table.add_column(column, justify="right" if column == "drop pp" else "left")
    for v in options.variants:
        # Nodes are listed in graph order and a stretch's nodes share its ratio.
        stretches: list[tuple[float, list[str]]] = []
        for node, ratio in v.time_ratio.items():
            if stretches and stretches[-1][0] == ratio:
                stretches[-1][1].append(node)
            else:
                stretches.append((ratio, [node]))
        shown = "; ".join(f"{nodes[0]}..{nodes[-1]}: {ratio:.2f}" for ratio, nodes in stretches)
        table.add_row(v.name, f"{v.accuracy_drop_pp:.2f}", shown or "unchanged")
    return table


def _plot(rows: Sequence[CutCodec], path: Path) -> Path:
    """Bytes per sample (log x) against accuracy, one labelled point per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = "osD^v<>ph*"
    for index, r in enumerate(rows):
        # A legend, not annotations: a bottleneck's raw and +zstd points nearly coincide.
        ax.scatter(
            r.bytes_per_sample, 100 * r.accuracy, marker=markers[index % len(markers)], label=r.name
        )
    ax.legend(fontsize=8, loc="best")
    ax.set_xscale("log")
    ax.set_xlabel(f"bytes per sample at {rows[0].cut} (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("ways across the cut: bytes vs accuracy")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _document(
    model: str, cut: str, trained: bool, variants: Sequence[Variant], rows: Sequence[CutCodec]
) -> dict[str, Any]:
    return {
        "model": model,
        "cut": cut,
        "trained_here": trained,
        "variants": [
            {
                "name": v.name,
                "latency_ms": v.latency_ms,
                "speedup": v.speedup,
                "size_bytes": v.size_bytes,
                "accuracy": v.accuracy,
            }
            for v in variants
        ],
        "codecs": [
            {
                "name": r.name,
                "cut": r.cut,
                "bytes": r.bytes_per_sample,
                "ratio_vs_fp32": r.ratio_vs_fp32,
                "accuracy": r.accuracy,
                "fp32_bytes": r.fp32_bytes_per_sample,
            }
            for r in rows
        ],
    }


@app.command()
@reports_errors
def compress(
    model: ModelArg,
    data: Annotated[str, typer.Option(help="mnist5k | digits | npz:FILE | folder:DIR")] = "mnist5k",
    cut: Annotated[
        str | None, typer.Option(help="Node the activation crosses after (default: pool2)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write ONNX files and cut_codecs.png here")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
    variants: Annotated[str, typer.Option(help="Model variants, comma-separated")] = (
        _DEFAULT_VARIANTS
    ),
    codecs: Annotated[str, typer.Option(help="Codecs at the cut, comma-separated")] = ",".join(
        DEFAULT_CUT_CODECS
    ),
    train_epochs: Annotated[
        int, typer.Option(min=1, help="Epochs to train random-init (zoo:, torchvision:) models")
    ] = 3,
    bottleneck_channels: Annotated[
        int, typer.Option(min=0, help="Code channels of the learned bottleneck; 0: none")
    ] = 8,
    bottleneck_epochs: Annotated[int, typer.Option(min=1, help="Bottleneck epochs")] = 3,
    bottleneck_out: Annotated[
        Path | None,
        typer.Option(
            help="Save the trained bottleneck model here, deployable as bottleneck:DIR "
            "(tierflow plan / build / serve / bench)"
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed rounds per variant")] = 100,
    train_limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N training samples")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds training")] = 0,
    input_shape: Annotated[
        str | None,
        typer.Option(
            help="Example input shape, e.g. 8,1,28,28: latencies, codec and variant options "
            "are measured on requests of its batch (plan and bench at the same shape)"
        ),
    ] = None,
    codec_options: Annotated[
        Path | None,
        typer.Option(
            help="Also measure --codecs at every cut node on the validation split and write "
            "the planner's codec options (codecs.json) here, for tierflow plan --codecs"
        ),
    ] = None,
    codec_options_limit: Annotated[
        int, typer.Option(min=1, help="With --codec-options: validation samples measured")
    ] = DEFAULT_LIMIT,
    variant_options: Annotated[
        Path | None,
        typer.Option(
            help="Also measure --plan-variants per stretch of the model and write the "
            "planner's variant options (variants.json) here, for tierflow plan --variants"
        ),
    ] = None,
    plan_variants: Annotated[
        str, typer.Option(help="With --variant-options: variants measured, comma-separated")
    ] = ",".join(DEFAULT_PLAN_VARIANTS),
) -> None:
    """Measure MODEL's compressed variants and the ways across one cut (codecs, bottleneck)."""
    if bottleneck_out is not None and bottleneck_channels == 0:
        raise typer.BadParameter(
            "--bottleneck-out needs a bottleneck: --bottleneck-channels above 0",
            param_hint="--bottleneck-out",
        )
    say = err_console.print if json_out else console.print
    net, inputs = resolve_model(model, input_shape=parse_shape(input_shape), seed=seed)
    example = inputs[0]
    splits = _limited(load_dataset(data, seed=seed), train_limit)
    if tuple(splits.train.x.shape[1:]) != tuple(example.shape[1:]):
        raise CompressionError(
            f"--data {data}: samples are {tuple(splits.train.x.shape[1:])}, but {model} "
            f"takes {tuple(example.shape[1:])}"
        )
    cut = cut or _default_cut(net, example)
    split_at(net, example, cut)  # refuses a bad --cut before minutes of training
    trained = model.startswith(_RANDOM_INIT)
    if trained:
        say(f"{model} has random weights: training {train_epochs} epochs on {data} first")
        net = finetune(net, splits.train, epochs=train_epochs, lr=2e-3, seed=seed)
    say(f"{model}: test accuracy {accuracy(net, splits.test):.2%} (PyTorch)")
    parts = split_at(net, example, cut)
    with tempfile.TemporaryDirectory(prefix="tierflow-compress-") as scratch:
        where = out or Path(scratch)
        say("measuring model variants ...")
        measured = compress_variants(
            net,
            example,
            where / "variants",
            data=splits,
            names=_items(variants),
            runs=runs,
            seed=seed,
        )
        say(f"measuring codecs at {cut} ...")
        rows = measure_cut_codecs(parts, example, splits.test, where / "cut", codecs=_items(codecs))
        if bottleneck_channels > 0:
            say(f"training a {bottleneck_channels}-channel bottleneck at {cut} ...")
            settings = BottleneckSettings(
                code_channels=bottleneck_channels, epochs=bottleneck_epochs, seed=seed
            )
            bottleneck = train_bottleneck(net, example, cut, splits.train, settings)
            measured_rows = measure_bottleneck(
                bottleneck, example, splits.test, where / "bottleneck"
            )
            rows += measured_rows
            if bottleneck_out is not None:
                save_bottleneck(
                    bottleneck,
                    bottleneck_out,
                    base=model,
                    example=example,
                    dataset=data,
                    accuracy=measured_rows[0].accuracy,
                )
                say(f"saved: plan, build and serve it as bottleneck:{bottleneck_out}")
        if out is not None:
            say(f"wrote {_plot(rows, out / 'cut_codecs.png')}")
    options: CodecOptions | None = None
    if codec_options is not None:
        say(f"measuring codec options at every cut node ({splits.val.name} split) ...")
        options = codec_options_for(
            net, example, splits, codecs=_items(codecs), limit=codec_options_limit
        )
        codec_options.parent.mkdir(parents=True, exist_ok=True)
        options.save(codec_options)
        say(f"codec options for {len(options.candidates)} (node, codec) pairs: {codec_options}")
    planned_variants: VariantOptions | None = None
    if variant_options is not None:
        say(f"measuring variant options per stretch ({splits.val.name} split for accuracy) ...")
        planned_variants = variant_options_for(
            net,
            example,
            splits,
            model_spec=model,
            variants=_items(plan_variants),
            runs=runs,
            limit=codec_options_limit,
        )
        variant_options.parent.mkdir(parents=True, exist_ok=True)
        planned_variants.save(variant_options)
        say(f"variant options ({len(planned_variants.variants)} variants): {variant_options}")
    if json_out:
        document = _document(model, cut, trained, measured, rows)
        if codec_options is not None:
            document["codec_options"] = str(codec_options)
        if variant_options is not None:
            document["variant_options"] = str(variant_options)
        print(json.dumps(document, indent=2))
    else:
        console.print(_variants_table(measured))
        console.print(_codecs_table(rows))
        if options is not None:
            console.print(_options_table(options))
        if planned_variants is not None:
            console.print(_variant_options_table(planned_variants))
