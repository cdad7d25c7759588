"""Measuring a :class:`Profile`: the latency of every graph node on this host.

Note [Per-node timing]
----------------------
Each timed run executes the traced graph node by node over closures prepared once
(:func:`_compile_steps`); gathering a node's arguments happens before its timed window
opens, so the window holds only what the generated ``forward`` does for that node. Five
choices keep the per-node times summing to the whole-model time:

* Values are dropped after their last use, inside the window of the node that last
  uses them, exactly where the ``forward`` torch.fx generates drops them. Freeing a large
  buffer (``munmap``) is real work: timed outside the windows it went missing, and
  torchvision mobilenet_v2's nodes summed to 0.93-0.96 of the whole model on one core
  instead of 0.99-1.01.
* Whole-model runs are interleaved with node-by-node runs, alternating which goes first,
  so that thermal drift, page cache and allocator state affect both alike.
* A ``call_module`` step looks its submodule up by attribute path on every call, as the
  generated ``forward`` does (``getattr(getattr(self.features, "1"), "conv")...``). Each
  ``nn.Module.__getattr__`` costs a few hundred nanoseconds; mobilenet_v2 has 141 module
  calls with paths up to five deep, and the lookups take 0.36 ms of its 7-11 ms forward.
  A segment run as a GraphModule pays them too.
* Likewise a ``get_attr`` node's lookup is timed as part of the first node that reads
  the parameter. torch.export graphs fetch every weight and BatchNorm statistic this way
  (314 lookups, about 1 ms per forward of mobilenet_v2); left untimed, that model's
  nodes summed to 0.87-0.90 of the whole.
* The cost of reading the clock (measured as the median of back-to-back
  ``perf_counter_ns`` pairs) is subtracted from every node sample; it is tens of
  nanoseconds, well below any real operator, but it adds up over hundreds of nodes.

The progress bar does not auto-refresh: a rendering thread waking at 10 Hz would compete
for the CPU with the operators being timed. It is redrawn between runs instead.
"""

from __future__ import annotations

import copy
import operator
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import fx

from tierflow.errors import ProfileError
from tierflow.graph.trace import Traced
from tierflow.profile.profile import Profile
from tierflow.torch_threads import torch_threads

_Loader = Callable[[list[Any]], tuple[tuple[Any, ...], dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class _Slot:
    """Marks where an argument template reads a value from the run's environment."""

    index: int


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    slot: int
    call: Callable[..., Any]
    load: _Loader
    free: tuple[int, ...]
    fetch: tuple[tuple[int, Callable[[Any], Any]], ...]


def default_threads() -> int:
    """The intra-op thread count used when none is given: torch's, capped at usable cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores))


def profile_model(
    traced: Traced | fx.GraphModule,
    example_inputs: Sequence[Any] | torch.Tensor,
    *,
    model_name: str,
    machine: str | None = None,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 30,
    progress: bool = True,
) -> Profile:
    """Measure the latency of every node of a traced model on this host.

    The module is copied and put in eval mode first, so the caller's module is untouched.
    See Note [Per-node timing] in this module for how the numbers are kept honest.

    Parameters
    ----------
    traced:
        The traced model (``tierflow.graph.trace``'s result or a bare ``GraphModule``).
    example_inputs:
        Positional inputs for one forward pass (a lone tensor is accepted).
    model_name:
        The model spec, recorded in the profile and checked when the profile is used.
    machine:
        Name recorded for where it ran; defaults to the host name.
    threads:
        Intra-op threads fixed during measurement (restored afterwards); defaults to
        :func:`default_threads`.
    warmup:
        Untimed runs of each kind before measuring.
    runs:
        Timed runs of each kind; every node's latency is the median over them.
    progress:
        Show a transient progress bar when stderr is a terminal.

    Returns
    -------
    Profile
        ``node_ms`` holds every placeholder (``0.0``) and call node; ``whole_ms`` is the
        median end-to-end latency of the module's own ``forward``.

    Examples
    --------
    >>> gm = torch.fx.symbolic_trace(torch.nn.Linear(4, 2))
    >>> profile = profile_model(gm, (torch.randn(1, 4),), model_name="linear", progress=False)
    >>> list(profile.node_ms)
    ['input_1', 'linear']
    """
    if warmup < 0 or runs < 1:
        raise ProfileError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    source = traced if isinstance(traced, fx.GraphModule) else traced.module
    inputs = (
        (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    )
    thread_count = default_threads() if threads is None else threads
    if thread_count < 1:
        raise ProfileError(f"threads must be >= 1, got {thread_count}")

    module = copy.deepcopy(source).eval()
    with torch_threads(thread_count), torch.inference_mode():
        node_ns, whole_ns, overhead_ns = _measure(module, inputs, warmup, runs, progress)

    node_ms = {
        node.name: (statistics.median(node_ns[node.name]) / 1e6 if node.name in node_ns else 0.0)
        for node in module.graph.nodes
        if node.op in ("placeholder", "call_module", "call_function", "call_method")
    }
    return Profile(
        model=model_name,
        machine=machine or platform.node() or "localhost",
        threads=thread_count,
        runs=runs,
        node_ms=node_ms,
        whole_ms=statistics.median(whole_ns) / 1e6,
        meta={
            "warmup": warmup,
            "timer_overhead_ns": overhead_ns,
            "torch": torch.__version__,
            "platform": platform.platform(),
            "tracer": "fx" if isinstance(traced, fx.GraphModule) else traced.tracer,
        },
    )


def _measure(
    module: fx.GraphModule, inputs: tuple[Any, ...], warmup: int, runs: int, show: bool
) -> tuple[dict[str, list[int]], list[int], int]:
    steps, size, placeholders = _compile_steps(module)
    if len(inputs) > len(placeholders):
        raise ProfileError(f"model takes {len(placeholders)} inputs, got {len(inputs)}")
    env_template: list[Any] = [None] * size
    for position, (slot, default) in enumerate(placeholders):
        env_template[slot] = inputs[position] if position < len(inputs) else default
    overhead_ns = _timer_overhead_ns()
    samples: dict[str, list[int]] = {step.name: [] for step in steps}
    whole: list[int] = []
    pc = time.perf_counter_ns

    def run_whole(record: bool) -> None:
        start = pc()
        try:
            module(*inputs)
        except Exception as exc:
            raise ProfileError(f"the model fails on the example inputs: {exc}") from exc
        end = pc()
        if record:
            whole.append(end - start)

    def run_nodes(record: bool) -> None:
        env = env_template.copy()
        timings: list[int] = []
        name = ""
        try:  # free in Python >= 3.11 unless something raises
            for step in steps:
                name = step.name
                fetch_ns = 0
                if step.fetch:
                    start = pc()
                    for slot, fetch in step.fetch:
                        env[slot] = fetch(module)
                    fetch_ns = pc() - start - overhead_ns
                args, kwargs = step.load(env)
                start = pc()
                env[step.slot] = step.call(*args, **kwargs)
                # Dropping dead values inside the window charges their deallocation (munmap
                # of large buffers) to the node that frees them, as the generated forward does.
                del args, kwargs
                for slot in step.free:
                    env[slot] = None
                end = pc()
                timings.append(end - start + fetch_ns)
        except Exception as exc:
            raise ProfileError(f"node {name!r} fails on the example inputs: {exc}") from exc
        if record:
            for step, elapsed in zip(steps, timings, strict=True):
                samples[step.name].append(max(0, elapsed - overhead_ns))

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("profiling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        auto_refresh=False,
        disable=not (show and console.is_terminal),
    )
    with bar:
        task = bar.add_task("runs", total=warmup + runs)
        for index in range(warmup + runs):
            record = index >= warmup
            # Alternate the order so that neither kind always runs on a cache the other warmed.
            first, second = (run_whole, run_nodes) if index % 2 == 0 else (run_nodes, run_whole)
            first(record)
            second(record)
            bar.advance(task)
            bar.refresh()
    return samples, whole, overhead_ns


def _compile_steps(
    module: fx.GraphModule,
) -> tuple[list[_Step], int, list[tuple[int, Any]]]:
    """Turn the graph into closures over environment slots (see Note [Per-node timing]).

    Returns the steps, the environment size and ``(slot, default)`` for each placeholder.
    """
    nodes = list(module.graph.nodes)
    slot_of = {node: index for index, node in enumerate(nodes)}
    first_user: dict[fx.Node, fx.Node] = {}
    last_user: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        for used in node.all_input_nodes:
            first_user.setdefault(used, node)
            last_user[used] = node
    frees: dict[fx.Node, list[int]] = {}
    for value, user in last_user.items():
        frees.setdefault(user, []).append(slot_of[value])
    # A parameter lookup (get_attr, many in torch.export graphs) is charged to the node
    # that first reads it: the generated forward pays it once per run, like any other op.
    fetches: dict[fx.Node, list[tuple[int, Callable[[Any], Any]]]] = {}
    for value, user in first_user.items():
        if value.op == "get_attr":
            fetch = operator.attrgetter(str(value.target))
            fetches.setdefault(user, []).append((slot_of[value], fetch))

    steps: list[_Step] = []
    placeholders: list[tuple[int, Any]] = []
    for node in nodes:
        if node.op == "placeholder":
            placeholders.append((slot_of[node], node.args[0] if node.args else None))
        elif node.op in ("call_module", "call_function", "call_method"):
            steps.append(
                _Step(
                    name=node.name,
                    slot=slot_of[node],
                    call=_callable(module, node),
                    load=_loader(node, slot_of),
                    free=tuple(frees.get(node, ())),
                    fetch=tuple(fetches.get(node, ())),
                )
            )
    return steps, len(nodes), placeholders


def _callable(module: fx.GraphModule, node: fx.Node) -> Callable[..., Any]:
    if node.op == "call_module":
        # Look the submodule up on every call, as the generated forward does
        # (getattr(getattr(self.features, "1"), "conv")...): see Note [Per-node timing].
        find = operator.attrgetter(str(node.target))

        def call_module(*args: Any, **kwargs: Any) -> Any:
            return find(module)(*args, **kwargs)

        return call_module
    if node.op == "call_method":
        method = str(node.target)

        def call_method(self_arg: Any, *args: Any, **kwargs: Any) -> Any:
            return getattr(self_arg, method)(*args, **kwargs)

        return call_method
    target = node.target
    assert callable(target)
    return target


def _loader(node: fx.Node, slot_of: dict[fx.Node, int]) -> _Loader:
    """Build a function that gathers a node's arguments from the environment."""
    args, kwargs = node.args, node.kwargs
    flat = all(not isinstance(a, list | tuple | dict | slice) for a in (*args, *kwargs.values()))
    if flat:
        # Fast path for the common case (tensors and scalars): no recursion at run time.
        spec = tuple(_Slot(slot_of[a]) if isinstance(a, fx.Node) else a for a in args)
        kwspec = {k: _Slot(slot_of[v]) if isinstance(v, fx.Node) else v for k, v in kwargs.items()}

        def load_flat(env: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (
                tuple(env[a.index] if isinstance(a, _Slot) else a for a in spec),
                {k: env[v.index] if isinstance(v, _Slot) else v for k, v in kwspec.items()},
            )

        return load_flat

    def load_nested(env: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        def read(n: fx.Node) -> Any:
            return env[slot_of[n]]

        return tuple(fx.node.map_arg(args, read)), dict(fx.node.map_arg(kwargs, read))

    return load_nested


def _timer_overhead_ns(samples: int = 2001) -> int:
    """Median cost of one ``perf_counter_ns`` pair with nothing between them."""
    pc = time.perf_counter_ns
    deltas = []
    for _ in range(samples):
        start = pc()
        deltas.append(pc() - start)
    return int(statistics.median(deltas))
