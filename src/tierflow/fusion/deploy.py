"""Starting the fusion tiers on loopback: V devices → edge → cloud, or raw offload."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

from tierflow.errors import FusionError
from tierflow.fusion.bundle import FusionBundle
from tierflow.fusion.server import FusionServer
from tierflow.fusion.services import CloudService, DeviceService, EdgeService, RawCloudService


@dataclass
class FusionDeployment:
    """Running servers: ``devices[i]`` is device ``i`` (``None`` once stopped), then the
    aggregator (the edge, or the raw-offload cloud) and, for fusion, the cloud."""

    devices: list[FusionServer | None]
    aggregator: FusionServer
    cloud: FusionServer | None = None
    _bundle: FusionBundle | None = field(default=None, repr=False)
    _raw: bool = False

    @property
    def device_addresses(self) -> list[str]:
        """Each device's address; a stopped device keeps its (now dead) address."""
        return list(self._addresses)

    def __post_init__(self) -> None:
        self._addresses = [d.address if d is not None else "" for d in self.devices]

    def stop_device(self, index: int) -> None:
        """Stop device ``index``'s server (a device going down)."""
        server = self.devices[index]
        if server is None:
            raise FusionError(f"device {index} is already stopped")
        server.stop(grace_s=0)
        self.devices[index] = None

    def restart_device(self, index: int) -> None:
        """Start device ``index`` again, on a fresh port (its address changes)."""
        if self.devices[index] is not None or self._bundle is None:
            raise FusionError(f"device {index} is running")
        server = _device(self._bundle, index, self.aggregator.address, raw=self._raw)
        self.devices[index] = server
        self._addresses[index] = server.address

    def stop(self) -> None:
        for server in self.devices:
            if server is not None:
                server.stop(grace_s=0)
        self.aggregator.stop(grace_s=0)
        if self.cloud is not None:
            self.cloud.stop(grace_s=0)

    def __enter__(self) -> FusionDeployment:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _device(bundle: FusionBundle, index: int, upstream: str, *, raw: bool) -> FusionServer:
    graph = None if raw else bundle.devices[index]
    tier = "cloud" if raw else "edge"
    return FusionServer(DeviceService(index, graph, upstream=upstream, upstream_tier=tier)).start()


def deploy(
    bundle: FusionBundle,
    *,
    wait_s: float = 0.1,
    raw: bool = False,
    exit_threshold: float | None = None,
) -> FusionDeployment:
    """Start the tiers of ``bundle`` on loopback, each on a free port.

    ``raw=True`` starts the raw-offload baseline instead: devices forward their float32
    views to a :class:`RawCloudService` running the cloud-only reference model.

    Examples
    --------
    >>> with deploy(load_bundle(Path("fusion"))) as running:  # doctest: +SKIP
    ...     client = FusionClient(running.device_addresses)
    """
    cloud: FusionServer | None = None
    if raw:
        aggregator = FusionServer(RawCloudService(bundle, wait_s=wait_s)).start()
    else:
        cloud = FusionServer(CloudService(bundle)).start()
        edge = EdgeService(
            bundle, cloud=cloud.address, wait_s=wait_s, exit_threshold=exit_threshold
        )
        aggregator = FusionServer(edge).start()
    devices: list[FusionServer | None] = [
        _device(bundle, i, aggregator.address, raw=raw) for i in range(bundle.views)
    ]
    return FusionDeployment(devices, aggregator, cloud, _bundle=bundle, _raw=raw)
