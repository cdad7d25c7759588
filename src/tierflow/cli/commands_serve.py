"""``tierflow serve`` / ``up`` / ``down`` / ``infer``: running a built plan.

``serve`` runs one tier's service; ``up`` starts a whole :class:`~tierflow.testbed.Testbed`
(one ``serve`` process per tier, emulated links between) and supervises it until Ctrl-C,
SIGTERM or ``tierflow down``; ``infer`` sends one request to a tier and shows the trace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from tierflow.cli.app import app, console, err_console, reports_errors
from tierflow.errors import TierflowError
from tierflow.runtime.trace import FINAL, Trace

DEFAULT_STATE = Path(".tierflow") / "testbed.json"


def parse_address(text: str, *, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT``, on 127.0.0.1) → ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise TierflowError(f"{option} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8001")
    return host or "127.0.0.1", int(port)


def parse_codecs(items: list[str] | None) -> dict[str, str]:
    """``--codec TENSOR=SPEC`` options → ``{tensor: spec}``; a later one for the same
    tensor wins. The specs are checked against the tier's route when it is derived."""
    codecs: dict[str, str] = {}
    for item in items or ():
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise TierflowError(
                f"--codec {item!r}: expected TENSOR=SPEC, e.g. pool2=int8+zstd (or pool2=none)"
            )
        codecs[name.strip()] = spec.strip()
    return codecs


@contextlib.contextmanager
def _until_signalled() -> Iterator[threading.Event]:
    """An event set on SIGINT or SIGTERM; the previous handlers come back afterwards."""
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(stop: threading.Event) -> None:
    # A timed wait lets the main thread run the Python-level signal handler promptly.
    while not stop.wait(0.2):
        pass


@app.command("serve")
@reports_errors
def serve_command(
    manifest: Annotated[Path, typer.Option(help="manifest.json (or its directory)")],
    tier: Annotated[str, typer.Option(help="The tier to serve")],
    listen: Annotated[str, typer.Option(help="HOST:PORT; port 0 picks a free one")] = (
        "127.0.0.1:0"
    ),
    upstream: Annotated[
        str | None, typer.Option(help="HOST:PORT of the next tier (or the link before it)")
    ] = None,
    upstream_tier: Annotated[
        str | None, typer.Option(help="Name of the next tier (default: next in the plan)")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Intra-op threads")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (0: free port)")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Require (and send) this bearer token")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate for TLS")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key for TLS")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="PEM CA: require client certs")] = None,
    max_message_mb: Annotated[float, typer.Option(min=1, help="Largest message, MiB")] = 256,
    codec: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TENSOR=SPEC",
            help="Compress a forwarded tensor on the link upward, e.g. pool2=int8+zstd"
            " (repeatable; overrides the manifest's link_codecs; SPEC none sends it raw)",
        ),
    ] = None,
) -> None:
    """Serve one tier of a built plan; prints `listening HOST:PORT` once ready."""
    from tierflow.artifacts import load_manifest
    from tierflow.runtime.allocator import tune_allocator
    from tierflow.testbed.cpu import apply_deferred_quota

    # This process is ours alone: keep large tensor buffers mapped between requests
    # (halves a relay hop at 10 MB, docs/benchmarks.md "Per-hop overhead").
    tune_allocator()
    from tierflow.runtime.manifest_service import service_from_manifest
    from tierflow.runtime.route import Upstream
    from tierflow.runtime.security import TlsFiles
    from tierflow.runtime.server import TierServer
    from tierflow.runtime.transport import GrpcTransport

    host, port = parse_address(listen, option="--listen")
    codecs = parse_codecs(codec)
    loaded = load_manifest(manifest)
    order = loaded.load_plan().tiers
    if tier not in order:
        raise TierflowError(f"--tier {tier!r}: the plan's tiers are {', '.join(order)}")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    next_tier = None
    if upstream is not None:
        parse_address(upstream, option="--upstream")
        position = order.index(tier)
        if upstream_tier is None and position + 1 >= len(order):
            raise TierflowError(f"--upstream: tier {tier!r} is the last tier of the plan")
        next_tier = Upstream(upstream_tier or order[position + 1], upstream)
    tls = None
    if tls_cert is not None or tls_key is not None:
        tls = TlsFiles(tls_cert, tls_key, tls_ca)
    max_bytes = int(max_message_mb * 1024 * 1024)
    transport = None
    if next_tier is not None:
        transport = GrpcTransport(token=token, tls=tls, max_message_bytes=max_bytes)
    # The tier's segments, its early exits (from the manifest) and its route onward.
    service = service_from_manifest(
        loaded,
        tier,
        upstream=next_tier,
        transport=transport,
        tiers=order,
        intra_op_threads=threads,
        codecs=codecs,
    )
    server = TierServer(
        service,
        host=host,
        port=port,
        token=token,
        tls=tls,
        metrics_port=metrics_port,
        max_message_bytes=max_bytes,
    )
    with _until_signalled() as stop:
        server.start()
        try:
            # Start-up ran at full speed; the emulated tier speed applies from here on.
            apply_deferred_quota()
            print(f"listening {server.address}", flush=True)
            _wait(stop)
        finally:
            server.stop()


@app.command("up")
@reports_errors
def up_command(
    topology: Annotated[Path, typer.Argument(metavar="TOPOLOGY.yaml")],
    plan: Annotated[Path, typer.Option(help="The plan (from `plan --out`)")],
    manifest: Annotated[
        Path | None, typer.Option(help="Built artifacts (default: build the plan now)")
    ] = None,
    emulate: Annotated[
        bool, typer.Option("--emulate/--no-emulate", help="CPU quotas and emulated links")
    ] = True,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a topology field, e.g. links.0.bandwidth_mbps=5"),
    ] = None,
    state: Annotated[Path, typer.Option(help="Where to record the supervisor")] = DEFAULT_STATE,
    log_dir: Annotated[Path | None, typer.Option(help="Tier logs (default: temp dir)")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token every tier requires")] = None,
) -> None:
    """Start a testbed: one process per tier, emulated links; stop with Ctrl-C or `down`."""
    from tierflow.plan import Plan
    from tierflow.testbed.bed import Testbed
    from tierflow.topology import load_topology

    the_topology = load_topology(topology, overrides=overrides or ())
    running = _recorded_pid(state)
    if running is not None and _alive(running):
        raise TierflowError(
            f"--state {state}: testbed supervisor {running} is already up; `tierflow down` first"
        )
    work = Path(tempfile.mkdtemp(prefix="tierflow-up-"))
    try:
        if manifest is None:
            from tierflow.artifacts import build
            from tierflow.cli.commands_build import exit_heads_for
            from tierflow.models import resolve_model

            the_plan = Plan.load(plan)
            heads = exit_heads_for(the_plan, str(plan))
            model, inputs = resolve_model(the_plan.model)
            build(model, the_plan, inputs, work / "artifacts", exit_heads=heads)
            manifest = work / "artifacts"
        bed = Testbed(the_topology, manifest, emulate=emulate, log_dir=log_dir, token=token)
        with _until_signalled() as stop, bed:
            record = bed.ready_record()
            _write_state(state, {**record, "pid": os.getpid(), "tier_pids": bed.tier_pids})
            try:
                print(json.dumps(record), flush=True)
                _wait(stop)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    state.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_state(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)


def _recorded_pid(state: Path) -> int | None:
    try:
        return int(json.loads(state.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return fields[0] not in ("Z", "X")


@app.command("down")
@reports_errors
def down_command(
    state: Annotated[Path, typer.Option(help="The state file `up` wrote")] = DEFAULT_STATE,
    timeout_s: Annotated[float, typer.Option(help="How long to wait for it to stop")] = 60.0,
) -> None:
    """Stop the testbed that `tierflow up` started (SIGTERM to its supervisor)."""
    try:
        pid = int(json.loads(state.read_text())["pid"])
    except FileNotFoundError:
        raise TierflowError(f"--state {state}: no testbed is recorded there") from None
    except (ValueError, KeyError, TypeError) as error:
        raise TierflowError(f"--state {state}: malformed state file: {error}") from None
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TierflowError(f"testbed supervisor {pid} did not stop within {timeout_s:g} s")
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        state.unlink()
    err_console.print(f"testbed {pid} stopped")


@app.command("infer")
@reports_errors
def infer_command(
    address: Annotated[str, typer.Argument(metavar="HOST:PORT")],
    input_file: Annotated[Path, typer.Option("--input", help="Input tensor (.npy)")],
    model: Annotated[str | None, typer.Option(help="Model id (default: the served one)")] = None,
    out: Annotated[Path | None, typer.Option(help="Save the output tensor (.npy)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    token: Annotated[str | None, typer.Option(help="Bearer token")] = None,
    top: Annotated[int, typer.Option(min=1, help="How many top values to show")] = 5,
) -> None:
    """Send one request to a tier; show the outputs and the per-tier trace."""
    from tierflow.runtime.client import connect

    parse_address(address, option="ADDRESS")
    try:
        x = np.load(input_file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise TierflowError(f"--input {input_file}: not a .npy array: {error}") from None
    with connect(address, model=model, token=token) as client:
        result = client.infer(x)
    if out is not None:
        np.save(out, result.output)
    outputs = {name: _summary(value, top) for name, value in result.outputs.items()}
    trace = result.trace
    if as_json:
        document: dict[str, Any] = {"outputs": outputs, "trace": None}
        if trace is not None:
            document["trace"] = json.loads(trace.to_json())
        sys.stdout.write(json.dumps(document) + "\n")
        return
    table = Table(title="outputs")
    for column in ("name", "dtype", "shape", f"top {top} (index: value)"):
        table.add_column(column)
    for name, summary in outputs.items():
        tops = ", ".join(f"{i}: {v:.4g}" for i, v in summary["top"])
        table.add_row(name, summary["dtype"], str(summary["shape"]), tops)
    console.print(table)
    if trace is not None:
        console.print(_trace_table(trace))


def _summary(value: np.ndarray[Any, Any], top: int) -> dict[str, Any]:
    flat = value.reshape(-1).astype(np.float64)
    order = np.argsort(-flat, kind="stable")[:top]
    return {
        "dtype": value.dtype.name,
        "shape": list(value.shape),
        "top": [[int(i), float(flat[i])] for i in order],
    }


def _trace_table(trace: Trace) -> Table:
    answered = "" if trace.exit == FINAL else f" at exit {trace.exit}"
    table = Table(title=f"trace · produced by {trace.produced_by}{answered}")
    for column in ("hop", "compute ms", "queue ms", "service / transfer ms", "bytes up+down"):
        table.add_column(column, justify="left" if column == "hop" else "right")
    for hop in trace.tiers:
        table.add_row(
            hop.tier, f"{hop.compute_ms:.2f}", f"{hop.queue_ms:.2f}", f"{hop.service_ms:.2f}", ""
        )
    for link in trace.links:
        codecs = ", ".join(f"{name} {spec}" for name, spec in link.codecs.items())
        table.add_row(
            f"{link.source} → {link.target}" + (f" ({codecs})" if codecs else ""),
            "",
            "",
            f"{link.transfer_ms:.2f}",
            f"{link.request_bytes}+{link.response_bytes}",
        )
    return table
