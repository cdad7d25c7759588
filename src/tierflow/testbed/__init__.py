"""The local testbed: emulated links and CPU-limited tier processes on one machine.

Each tier runs as its own OS process, optionally slowed to its topology ``speed`` with a
cgroup CPU quota (:mod:`tierflow.testbed.cpu`), and tiers talk through TCP proxies that
impose each link's bandwidth, delay, jitter and outages (:mod:`tierflow.testbed.link`).

:class:`Testbed` (:mod:`tierflow.testbed.bed`) puts them together: a built plan served by
one process per tier. The link module is imported lazily so that
``python -m tierflow.testbed.link`` does not find it already imported by its package
(runpy warns about that); the testbed module too, since it imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tierflow.testbed.control import control_request
from tierflow.testbed.cpu import CpuQuota, LimitedProcess, cpu_limited
from tierflow.testbed.shaping import LinkParams

if TYPE_CHECKING:
    from tierflow.testbed.bed import Testbed
    from tierflow.testbed.link import EmulatedLink, LinkStats

__all__ = [
    "CpuQuota",
    "EmulatedLink",
    "LimitedProcess",
    "LinkParams",
    "LinkStats",
    "Testbed",
    "control_request",
    "cpu_limited",
]


def __getattr__(name: str) -> Any:
    if name in ("EmulatedLink", "LinkStats"):
        from tierflow.testbed import link

        return getattr(link, name)
    if name == "Testbed":
        from tierflow.testbed import bed

        return bed.Testbed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
