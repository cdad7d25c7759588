"""``tierflow bench-hop``: per-hop overhead of a tier service against raw TCP, on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tierflow.cli.app import app, console, err_console, reports_errors
from tierflow.measure.hop_bench import DEFAULT_SIZES_BYTES, HopTiming, hop_report, run_hop_bench
from tierflow.runtime import allocator

# The targets (docs/benchmarks.md, "Per-hop overhead").
MAX_ADDED_MS = 1.0  # for tensors up to TARGET_SMALL_BYTES
TARGET_SMALL_BYTES = 100_000
MIN_THROUGHPUT_RATIO = 0.70  # at TARGET_LARGE_BYTES
TARGET_LARGE_BYTES = 10_000_000


def _size(size_bytes: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:g} {unit}"
    return f"{size_bytes} B"


def hop_table(timings: list[HopTiming]) -> Table:
    relay = any(t.relay_p50_ms is not None for t in timings)
    echo = any(t.echo_p50_ms is not None for t in timings)
    table = Table(title="one hop on loopback: raw TCP vs tier call (round trip, tensor both ways)")
    columns = ["tensor", "rounds", "raw p50 ms", "raw p95 ms", "tier p50 ms", "tier p95 ms"]
    columns += ["added ms", "raw MB/s", "tier MB/s", "tier/raw"]
    columns += ["relay p50 ms", "relay hop ms"] if relay else []
    columns += ["gRPC echo p50 ms", "echo/raw"] if echo else []
    for column in columns:
        table.add_column(column, justify="right")
    for t in timings:
        row = [
            _size(t.size_bytes), str(t.samples), f"{t.raw_p50_ms:.3f}", f"{t.raw_p95_ms:.3f}",
            f"{t.tier_p50_ms:.3f}", f"{t.tier_p95_ms:.3f}", f"{t.added_ms:.3f}",
            f"{t.raw_mbps:.0f}", f"{t.tier_mbps:.0f}", f"{t.throughput_ratio:.2f}",
        ]  # fmt: skip
        if relay:
            row += [f"{t.relay_p50_ms or 0.0:.3f}", f"{t.relay_added_ms or 0.0:.3f}"]
        if echo:
            row += [f"{t.echo_p50_ms or 0.0:.3f}", f"{t.echo_ratio or 0.0:.2f}"]
        table.add_row(*row)
    return table


def target_lines(timings: list[HopTiming]) -> list[str]:
    """One verdict line per target the measured sizes cover."""
    lines = []
    small = [t for t in timings if t.size_bytes <= TARGET_SMALL_BYTES]
    if small:
        worst = max(small, key=lambda t: t.added_ms)
        met = "met" if worst.added_ms <= MAX_ADDED_MS else "MISSED"
        lines.append(
            f"added ≤ {MAX_ADDED_MS} ms up to {_size(TARGET_SMALL_BYTES)}: {met}"
            f" (worst {worst.added_ms:.3f} ms at {_size(worst.size_bytes)})"
        )
    large = [t for t in timings if t.size_bytes == TARGET_LARGE_BYTES]
    for t in large:
        met = "met" if t.throughput_ratio >= MIN_THROUGHPUT_RATIO else "MISSED"
        lines.append(
            f"throughput ≥ {MIN_THROUGHPUT_RATIO:.0%} of raw TCP at {_size(t.size_bytes)}:"
            f" {met} ({t.throughput_ratio:.0%})"
        )
    return lines


@app.command("bench-hop")
@reports_errors
def bench_hop(
    sizes: Annotated[
        str, typer.Option(help="Tensor sizes in bytes, comma-separated (multiples of 4)")
    ] = ",".join(map(str, DEFAULT_SIZES_BYTES)),
    repeats: Annotated[int, typer.Option(min=1, help="Timed rounds per size (at most)")] = 300,
    seconds: Annotated[float, typer.Option(help="Time budget per size")] = 8.0,
    warmup: Annotated[int, typer.Option(min=1, help="Untimed rounds per size")] = 5,
    relay: Annotated[bool, typer.Option(help="Also time a call through a relay tier")] = True,
    grpc_echo: Annotated[
        bool, typer.Option(help="Also time a bytes-only gRPC echo (the ceiling for a gRPC hop)")
    ] = True,
    tune_allocator: Annotated[
        bool,
        typer.Option(
            help="Keep large buffers mapped in this (client) process, as the servers do;"
            " applies to the raw TCP and tier clients alike"
        ),
    ] = True,
    out: Annotated[Path, typer.Option(help="Directory for hop.json")] = Path("reports/bench"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
) -> None:
    """Per-hop overhead of a tier call over raw TCP on loopback (no link emulation)."""
    try:
        sizes_bytes = [int(size) for size in sizes.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--sizes must be integers, got {sizes!r}") from None
    # Process-wide, and this process exists only to run the bench: every client in it (raw
    # TCP included) gets the same allocator, so the comparison stays fair (Note [Fair hop
    # baseline] in tierflow.measure.hop_bench).
    tuned = allocator.tune_allocator() if tune_allocator else False
    try:
        timings = run_hop_bench(
            sizes_bytes,
            repeats=repeats,
            min_repeats=min(15, repeats),
            budget_s=seconds,
            warmup=warmup,
            relay=relay,
            grpc_echo=grpc_echo,
            progress=None if json_out else err_console.print,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    report = hop_report(timings, client_allocator_tuned=tuned)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hop.json").write_text(json.dumps(report, indent=2) + "\n")
    if json_out:
        print(json.dumps(report, indent=2))
        return
    console.print(hop_table(timings))
    for line in target_lines(timings):
        console.print(line)
    console.print(f"written to {out / 'hop.json'}")
