"""The local testbed: a built plan served by one process per tier, linked by emulated links.

:class:`Testbed` starts ``tierflow serve`` for every tier of a topology, last tier (the
cloud) first, all at once on reserved ports (Note [parallel start]). With
``emulate=True`` each tier process runs under a cgroup CPU quota for its
``compute.speed`` (:mod:`tierflow.testbed.cpu`) and each link ``l`` (tier ``l`` → tier
``l + 1``) is an :class:`~tierflow.testbed.link.EmulatedLink` thread inside this process,
in front of tier ``l + 1``'s service. Links are threads, not processes: importing
tierflow (torch, ONNX Runtime) costs about 3 s per process on the profiling host.

Tier processes write stdout and stderr to files under ``log_dir`` (a pipe nobody reads
would fill and block the tier); the ``listening HOST:PORT`` line is read from the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from tierflow.artifacts.manifest import MANIFEST_NAME, Manifest, load_manifest
from tierflow.errors import TestbedError
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.security import bearer_metadata
from tierflow.runtime.transport import method_path
from tierflow.testbed.cpu import CpuQuota, LimitedProcess, cpu_limited
from tierflow.testbed.shaping import LinkParams
from tierflow.topology.schema import Tier, Topology

if TYPE_CHECKING:
    from tierflow.testbed.link import EmulatedLink, LinkStats

_log = logging.getLogger(__name__)

LISTENING = "listening "
_STOP_TIMEOUT_S = 5.0
_POLL_S = 0.02
_STDERR_TAIL_CHARS = 2000


class Testbed:
    """A built plan running on one machine: a process per tier, emulated links between.

    Parameters
    ----------
    topology:
        The tiers (in path order, as in the plan) and the links between them.
    manifest:
        The artifact directory or its ``manifest.json`` (from :func:`tierflow.artifacts.build`).
    emulate:
        Slow each tier to its ``compute.speed`` with a cgroup CPU quota and put an
        :class:`~tierflow.testbed.link.EmulatedLink` on each link. ``False``: tiers call
        each other directly, unthrottled.
    host:
        Where tier services and links listen (free ports are picked).
    ready_timeout_s:
        How long each tier may take to print its ``listening`` line and answer ServerReady.
    log_dir:
        Where ``TIER.out`` / ``TIER.err`` are written; a fresh temporary directory if None.
    token:
        A bearer token every tier requires (and passes upstream).

    Examples
    --------
    >>> with Testbed(load_topology("topo.yaml"), "build/") as bed:  # doctest: +SKIP
    ...     with connect(bed.entry) as client:
    ...         result = client.infer(x)
    ...     bed.set_link(0, bandwidth_mbps=5)
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        topology: Topology,
        manifest: str | Path,
        *,
        emulate: bool = True,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 120.0,
        log_dir: Path | None = None,
        token: str | None = None,
    ) -> None:
        path = Path(manifest)
        self._manifest_path = path / MANIFEST_NAME if path.is_dir() else path
        self._topology = topology
        self._emulate = emulate
        self._host = host
        self._ready_timeout_s = ready_timeout_s
        self._log_dir = log_dir
        self._token = token
        self._manifest: Manifest | None = None
        self._stack: contextlib.ExitStack | None = None
        self._tiers: dict[str, str] = {}
        self._processes: dict[str, LimitedProcess] = {}
        self._links: dict[str, EmulatedLink] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start every tier (last first) and link; return once all answer ServerReady.

        Raises
        ------
        TestbedError
            If a tier exits or stays silent past ``ready_timeout_s`` (with its stderr tail),
            or the topology's tiers are not the plan's. Everything started is stopped.
        """
        if self._stack is not None:
            raise TestbedError("this Testbed is already started")
        manifest = load_manifest(self._manifest_path)
        plan_tiers = manifest.load_plan().tiers
        if tuple(plan_tiers) != self._topology.tier_names:
            raise TestbedError(
                f"topology tiers {', '.join(self._topology.tier_names)} differ from the tiers "
                f"{', '.join(plan_tiers)} of the plan built in {manifest.root}"
            )
        self._manifest = manifest
        log_dir = self._log_dir or Path(tempfile.mkdtemp(prefix="tierflow-testbed-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_dir = log_dir
        self._stack = contextlib.ExitStack()
        try:
            self._start_all(log_dir)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate every tier (SIGTERM, then SIGKILL), stop links, remove cgroups."""
        stack, self._stack = self._stack, None
        # Ask every tier to stop at once, so their graceful shutdowns overlap; the stack
        # then waits for each (killing stragglers), stops the links and removes cgroups.
        for limited in self._processes.values():
            if limited.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    limited.process.terminate()
        if stack is not None:
            stack.close()
        self._tiers.clear()
        self._processes.clear()
        self._links.clear()

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what callers use ------------------------------------------------------------------

    @property
    def entry(self) -> str:
        """``HOST:PORT`` of the first tier's service: clients call it directly."""
        return self._running_tiers()[self._topology.tiers[0].name]

    @property
    def tiers(self) -> dict[str, str]:
        """Tier name → ``HOST:PORT`` of its service (not of the link in front of it)."""
        running = self._running_tiers()
        return {tier.name: running[tier.name] for tier in self._topology.tiers}

    @property
    def model(self) -> str:
        """The model id the tiers serve (the manifest's model spec)."""
        if self._manifest is None:
            raise TestbedError("the testbed is not running; call start() first")
        return self._manifest.model

    @property
    def tier_pids(self) -> dict[str, int]:
        """Tier name → process id of its ``tierflow serve`` process."""
        return {
            t.name: self._processes[t.name].process.pid
            for t in self._topology.tiers
            if t.name in self._processes
        }

    @property
    def log_dir(self) -> Path | None:
        return self._log_dir

    def ready_record(self) -> dict[str, Any]:
        """``{"entry": ..., "tiers": {...}, "model": ...}``: what ``tierflow up`` prints."""
        return {"entry": self.entry, "tiers": self.tiers, "model": self.model}

    def set_link(self, link: int | str, **changes: Any) -> None:
        """Change an emulated link live (``bandwidth_mbps``, ``rtt_ms``, ``jitter_ms``,
        ``up``, ``downlink_mbps``); ``link`` is its index or its name ``"a->b"``."""
        self._link(link).set(**changes)

    def link_stats(self) -> dict[str, LinkStats]:
        """Bytes and connections per emulated link, by name ``"a->b"`` (empty without)."""
        return {name: link.stats() for name, link in self._links.items()}

    def kill_tier(self, name: str) -> None:
        """SIGKILL the process of tier ``name`` (for failure tests); it stays dead."""
        self._topology.tier(name)  # raises TopologyError naming the tiers
        process = self._processes.get(name)
        if process is None:
            raise TestbedError(f"tier {name!r} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.process.pid, signal.SIGKILL)
        process.process.wait()

    # -- internals -------------------------------------------------------------------------

    def _running_tiers(self) -> dict[str, str]:
        if self._stack is None or len(self._tiers) != len(self._topology.tiers):
            raise TestbedError("the testbed is not running; call start() first")
        return self._tiers

    def _link(self, link: int | str) -> EmulatedLink:
        if not self._links:
            raise TestbedError("this testbed has no emulated links (emulate=False or stopped)")
        names = [ln.name for ln in self._topology.links]
        if isinstance(link, int):
            if not 0 <= link < len(names):
                raise TestbedError(f"link index {link} out of range: there are {len(names)}")
            return self._links[names[link]]
        if link not in self._links:
            raise TestbedError(f"no link named {link!r}; links are {', '.join(names)}")
        return self._links[link]

    def _start_all(self, log_dir: Path) -> None:
        # Note [parallel start]: each tier must know its upstream's address when it
        # starts, which would serialise the start-up (about 3 s of imports per tier).
        # Instead every tier's port is reserved first, by a socket bound with SO_REUSEPORT
        # and never listening: the kernel hands that port to nobody else, while gRPC
        # (which binds with SO_REUSEPORT too) can listen on it. All tiers then start at
        # once, last tier first; gRPC channels connect lazily, so the order they come up
        # in does not matter. The reservations are closed once the tiers listen.
        assert self._stack is not None
        tiers = self._topology.tiers
        with contextlib.ExitStack() as reservations:
            services: dict[str, str] = {}
            for tier in tiers:
                sock = reservations.enter_context(_reserve_port(self._host))
                services[tier.name] = f"{self._host}:{sock.getsockname()[1]}"
            launched = []
            started = time.monotonic()
            for index in reversed(range(len(tiers))):
                upstream: tuple[str, str] | None = None
                if index + 1 < len(tiers):
                    after = tiers[index + 1].name
                    address = services[after]
                    if self._emulate:
                        address = self._start_link(index, address)
                    upstream = (after, address)
                launched.append(self._start_tier(tiers[index], services, upstream, log_dir))
            for name, process, out_path, err_path in launched:
                address = self._await_listening(name, process, out_path, err_path)
                if address != services[name]:
                    raise TestbedError(
                        f"tier {name!r} listens on {address}, not on {services[name]} as asked"
                    )
                self._tiers[name] = address
        for name, address in self._tiers.items():
            self._wait_ready(name, address)
        _log.info("testbed of %d tiers ready in %.2f s", len(tiers), time.monotonic() - started)

    def _start_link(self, index: int, upstream: str) -> str:
        from tierflow.testbed.link import EmulatedLink

        assert self._stack is not None
        spec = self._topology.links[index]
        host, _, port = upstream.rpartition(":")
        link = EmulatedLink((host, int(port)), LinkParams.from_link(spec), listen=(self._host, 0))
        self._stack.enter_context(link)
        self._links[spec.name] = link
        return f"{link.address[0]}:{link.address[1]}"

    def _start_tier(
        self,
        tier: Tier,
        services: dict[str, str],
        upstream: tuple[str, str] | None,
        log_dir: Path,
    ) -> tuple[str, subprocess.Popen[bytes], Path, Path]:
        assert self._stack is not None
        args = [
            sys.executable, "-m", "tierflow", "serve",
            "--manifest", str(self._manifest_path),
            "--tier", tier.name,
            "--listen", services[tier.name],
        ]  # fmt: skip
        if upstream is not None:
            args += ["--upstream", upstream[1], "--upstream-tier", upstream[0]]
        if self._token is not None:
            args += ["--token", self._token]
        speed = 1.0
        if self._emulate:
            if tier.compute.speed is None:
                _log.warning(
                    "tier %s has a measured profile, not a speed: it runs unthrottled", tier.name
                )
            else:
                speed = tier.compute.speed
                args += ["--threads", str(CpuQuota.for_speed(speed).threads)]
        out_path, err_path = log_dir / f"{tier.name}.out", log_dir / f"{tier.name}.err"
        out = self._stack.enter_context(out_path.open("wb"))
        err = self._stack.enter_context(err_path.open("wb"))
        limited = self._stack.enter_context(
            cpu_limited(
                args,
                speed=speed,
                name=tier.name,
                limit_threads=self._emulate,
                stop_timeout_s=_STOP_TIMEOUT_S,
                defer_until_ready=True,  # `tierflow serve` applies it once ready
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        )
        if self._emulate and limited.reason is not None and speed < 1:
            _log.warning("tier %s runs unthrottled: %s", tier.name, limited.reason)
        self._processes[tier.name] = limited
        return tier.name, limited.process, out_path, err_path

    def _await_listening(
        self, name: str, process: subprocess.Popen[bytes], out_path: Path, err_path: Path
    ) -> str:
        deadline = time.monotonic() + self._ready_timeout_s
        while True:
            for line in out_path.read_text(errors="replace").splitlines():
                if line.startswith(LISTENING):
                    return line[len(LISTENING) :].strip()
            code = process.poll()
            if code is not None:
                raise TestbedError(
                    f"tier {name!r} exited with status {code} before listening; "
                    f"stderr ({err_path}):\n{_tail(err_path)}"
                )
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"tier {name!r} did not print its address within {self._ready_timeout_s:g}"
                    f" s; stderr ({err_path}):\n{_tail(err_path)}"
                )
            time.sleep(_POLL_S)

    def _wait_ready(self, name: str, address: str) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        with grpc.insecure_channel(address) as channel:
            ready = channel.unary_unary(
                method_path("ServerReady"),
                request_serializer=pb.ServerReadyRequest.SerializeToString,
                response_deserializer=pb.ServerReadyResponse.FromString,
            )
            while True:
                try:
                    answer: pb.ServerReadyResponse = ready(
                        pb.ServerReadyRequest(),
                        timeout=max(0.1, deadline - time.monotonic()),
                        metadata=bearer_metadata(self._token),
                        wait_for_ready=True,
                    )
                    if answer.ready:
                        return
                except grpc.RpcError as error:
                    if time.monotonic() > deadline:
                        raise TestbedError(
                            f"tier {name!r} at {address} is not ready: {error}"
                        ) from error
                if time.monotonic() > deadline:
                    raise TestbedError(f"tier {name!r} at {address} reports not ready")
                time.sleep(_POLL_S)


@contextlib.contextmanager
def _reserve_port(host: str) -> Iterator[socket.socket]:
    """A free port on ``host``, held by a bound, non-listening SO_REUSEPORT socket."""
    family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, 0))
        yield sock


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-_STDERR_TAIL_CHARS:]
    return "(no stderr)"
