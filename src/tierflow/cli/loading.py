"""Turning CLI options into the typed artifacts the library works with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tierflow.errors import CaptureError, ProfileError, TierflowError
from tierflow.graph import LayerGraph, Traced, coarsen, describe, trace
from tierflow.graph.layer_graph import Granularity
from tierflow.measure.tier_profiles import tier_profiles
from tierflow.models import resolve_model
from tierflow.profile import Profile, profile_model
from tierflow.topology.schema import Topology


@dataclass(frozen=True)
class LoadedModel:
    spec: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    traced: Traced
    graph: LayerGraph  # at the requested granularity


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise TierflowError(
            f"--input-shape {text!r}: expected integers such as 1,3,224,224"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise TierflowError(f"--input-shape {text!r}: every dimension must be positive")
    return shape


def leaf_classes(module: nn.Module, names: Sequence[str]) -> list[type[nn.Module]]:
    """Module classes named on the command line (``--leaf Attention``), found in ``module``."""
    found: dict[str, type[nn.Module]] = {}
    for sub in module.modules():
        found.setdefault(type(sub).__name__, type(sub))
        found.setdefault(f"{type(sub).__module__}.{type(sub).__qualname__}", type(sub))
    classes = []
    for name in names:
        if name not in found:
            raise CaptureError(f"--leaf {name}: the model has no submodule of class {name!r}")
        classes.append(found[name])
    return classes


def load_model(
    spec: str,
    *,
    input_shape: str | None = None,
    weights: str | None = None,
    granularity: Granularity = "node",
    leaf: Sequence[str] = (),
) -> LoadedModel:
    module, inputs = resolve_model(spec, input_shape=parse_shape(input_shape), weights=weights)
    return loaded_from(spec, module, inputs, granularity=granularity, leaf=leaf)


def loaded_from(
    spec: str,
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    *,
    granularity: Granularity = "node",
    leaf: Sequence[str] = (),
) -> LoadedModel:
    """A model already resolved (``spec`` names it), traced and described."""
    traced = trace(module, inputs, leaf_modules=leaf_classes(module, leaf))
    graph = describe(traced, inputs, name=spec)
    if granularity == "block":
        graph = coarsen(graph, traced)
    return LoadedModel(spec, module, inputs, traced, graph)


PROFILE_CACHE = Path(".tierflow/cache/profiles")


def measured_tier_profiles(
    spec: str,
    topology: Topology,
    *,
    runs: int,
    say: Callable[[str], object],
    input_shape: str | None = None,
) -> dict[str, Profile]:
    """Each tier's profile of ``spec`` measured in its budget (cached), told as it goes."""

    def announce(tier: str, cached: bool) -> None:
        say(f"profile of {spec} on tier {tier}: " + ("cached" if cached else "measuring…"))

    return tier_profiles(
        spec,
        topology,
        cache_dir=PROFILE_CACHE,
        runs=runs,
        input_shape=input_shape,
        on_tier=announce,
    )


def measure_host_profile(
    loaded: LoadedModel, *, runs: int, warmup: int, threads: int | None, progress: bool
) -> Profile:
    return profile_model(
        loaded.traced,
        loaded.inputs,
        model_name=loaded.spec,
        threads=threads,
        warmup=warmup,
        runs=runs,
        progress=progress,
    )


def parse_profile_options(values: Sequence[str]) -> tuple[Profile | None, dict[str, Profile]]:
    """``--profile FILE`` (the host's) and ``--profile TIER=FILE`` (a tier's own)."""
    host: Profile | None = None
    tiers: dict[str, Profile] = {}
    for value in values:
        tier, sep, path = value.partition("=")
        if sep:
            tiers[tier] = Profile.load(path)
        elif host is None:
            host = Profile.load(value)
        else:
            raise ProfileError(f"--profile {value}: a host profile was already given")
    return host, tiers


def parse_pins(values: Sequence[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for value in values:
        node, sep, tier = value.partition("=")
        if not sep or not node or not tier:
            raise TierflowError(f"--pin {value!r}: expected NODE=TIER")
        pins[node] = tier
    return pins


def json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
