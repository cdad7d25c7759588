"""Reading topologies from YAML, with ``--set`` style overrides."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tierflow.documents import read_yaml_mapping
from tierflow.errors import TopologyError
from tierflow.topology.schema import Topology


def load_topology(
    path: str | Path, *, overrides: Iterable[str] = (), base_dir: Path | None = None
) -> Topology:
    """Read and validate a topology YAML file.

    Parameters
    ----------
    path:
        The YAML file.
    overrides:
        ``dotted.path=value`` strings applied before validation, e.g.
        ``"links.0.bandwidth_mbps=5"``.
    base_dir:
        Directory against which relative ``compute.profile`` paths resolve; defaults to the
        topology file's directory.

    Examples
    --------
    >>> topo = load_topology("examples/topologies/camera-gateway-cloud.yaml")  # doctest: +SKIP
    >>> topo.tier_names
    ('camera', 'gateway', 'datacenter')
    """
    file = Path(path)
    raw = read_yaml_mapping(file, what="topology file", error=TopologyError)
    raw = apply_overrides(raw, overrides)
    topology = topology_from_dict(raw, source=str(file))
    return resolve_profile_paths(topology, base_dir or file.parent)


def topology_from_dict(raw: Mapping[str, Any], *, source: str = "topology") -> Topology:
    """Validate a topology given as plain data; errors name the offending field."""
    try:
        return Topology.model_validate(raw)
    except ValidationError as exc:
        problems = []
        errors = exc.errors()
        locations = [tuple(str(p) for p in error["loc"]) for error in errors]
        for error, loc in zip(errors, locations, strict=True):
            # A container error that only repeats a problem already reported for one of
            # its items (pydantic reports both) would only confuse; keep the precise one.
            if any(other[: len(loc)] == loc and other != loc for other in locations):
                continue
            where = ".".join(loc) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise TopologyError(f"{source}: " + "; ".join(problems)) from None


def resolve_profile_paths(topology: Topology, base_dir: Path) -> Topology:
    """Make relative ``compute.profile`` paths absolute against ``base_dir``."""
    tiers = []
    for tier in topology.tiers:
        profile = tier.compute.profile
        if profile is not None and not Path(profile).is_absolute():
            compute = tier.compute.model_copy(update={"profile": str(base_dir / profile)})
            tier = tier.model_copy(update={"compute": compute})
        tiers.append(tier)
    return topology.model_copy(update={"tiers": tuple(tiers)})


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.path=value`` override applied.

    Path segments index mappings by key and lists by position (``links.1.rtt_ms=40``);
    a tier may also be named (``tiers.camera.memory_mb=128``). Values are parsed as YAML
    scalars, so ``5`` is a number and ``device`` a string.
    """
    result: dict[str, Any] = copy.deepcopy(dict(raw))
    for override in overrides:
        dotted, sep, value_text = override.partition("=")
        if not sep or not dotted:
            raise TopologyError(f"override {override!r}: expected PATH=VALUE")
        value = yaml.safe_load(value_text)
        keys = dotted.split(".")
        container: Any = result
        for depth, key in enumerate(keys):
            here = ".".join(keys[: depth + 1])
            last = depth == len(keys) - 1
            if isinstance(container, list):
                position = _list_position(container, key, here)
                if last:
                    container[position] = value
                else:
                    container = container[position]
            elif isinstance(container, dict):
                if last:
                    container[key] = value
                else:
                    if key not in container:
                        container[key] = {}
                    container = container[key]
            else:
                raise TopologyError(f"override {override!r}: {here} is not a mapping or list")
    return result


def _list_position(items: list[Any], key: str, here: str) -> int:
    if key.lstrip("-").isdigit():
        position = int(key)
        if not -len(items) <= position < len(items):
            raise TopologyError(f"override path {here}: index out of range ({len(items)} items)")
        return position
    for position, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return position
    raise TopologyError(f"override path {here}: no item named {key!r}")
