"""Trace a model into a ``torch.fx.GraphModule``: torch.fx first, torch.export as fallback.

Tracing works on a deep copy of the model. torch.fx stores non-parameter tensor constants
on the traced root and shape propagation runs BatchNorm in whatever mode the model is in,
so tracing the user's own object could change it; the copy also means the returned
GraphModule owns its weights, which is what a splitter wants.

Node names are deterministic: the same model traced twice yields the same names, because
both tracers name nodes from module paths and op names with per-graph counters (the copy
gives fx's constant-naming counter a fresh root every time). Splitting relies on this.
"""

from __future__ import annotations

import copy
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import fx, nn

from tierflow.errors import CaptureError
from tierflow.graph.layer_graph import Tracer as TracerName

SCOPE_META = "tierflow_scope"
"""``node.meta`` key holding the node's :class:`ScopeFrame` stack (outermost first)."""

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_TORCH_DIR = str(Path(torch.__file__).parent)


class ScopeFrame(NamedTuple):
    """One module call enclosing a traced node.

    ``key`` tells calls apart (``blk`` and ``blk@1`` for a module called twice), ``path``
    is the module's qualified name and ``module_type`` its class.
    """

    key: str
    path: str
    module_type: type[nn.Module]

    @property
    def is_container(self) -> bool:
        return issubclass(self.module_type, _CONTAINERS)


@dataclass(frozen=True)
class Traced:
    """A traced model: a GraphModule plus the tracer that produced it.

    For ``tracer="fx"`` the graph holds torch-level calls (``call_module`` for leaf modules
    such as ``nn.Conv2d``); for ``"export"`` it holds aten ops and ``get_attr`` parameters.
    Each node's ``meta[SCOPE_META]`` lists the module calls enclosing it.
    """

    module: fx.GraphModule
    tracer: TracerName


class _LeafTracer(fx.Tracer):
    """An fx Tracer that treats extra module classes as leaves and remembers the innermost
    module whose forward raised, so that a failure can name it."""

    def __init__(self, leaf_modules: tuple[type[nn.Module], ...]) -> None:
        super().__init__()
        self.leaf_types = leaf_modules
        self.failed_in: tuple[str, type[nn.Module]] | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            # The innermost call_module sees the exception first; outer ones keep its answer.
            if self.failed_in is None:
                self.failed_in = (self.path_of_module(m), type(m))
            raise


def trace(
    model: nn.Module,
    example_inputs: Sequence[Any],
    *,
    tracer: TracerName | None = None,
    leaf_modules: Iterable[type[nn.Module]] = (),
) -> Traced:
    """Trace ``model`` into a GraphModule without modifying ``model``.

    Parameters
    ----------
    model:
        The model; it is deep-copied, never changed.
    example_inputs:
        Positional inputs; torch.export runs on them (torch.fx does not need them).
    tracer:
        ``"fx"`` or ``"export"`` to force one tracer; ``None`` tries fx, then export.
    leaf_modules:
        Module classes fx must not trace into (they become single ``call_module`` nodes).
        torch.export ignores them.

    Returns
    -------
    Traced

    Raises
    ------
    CaptureError
        If no tracer succeeds; the message names the module and source line at fault.

    Examples
    --------
    >>> from tierflow.models import resolve_model
    >>> model, inputs = resolve_model("zoo:lenet")
    >>> trace(model, inputs).tracer
    'fx'
    """
    if tracer not in (None, "fx", "export"):
        raise CaptureError(f"tracer must be 'fx', 'export' or None, not {tracer!r}")
    try:
        root = copy.deepcopy(model)
    except Exception as exc:
        raise CaptureError(f"cannot copy {type(model).__name__} for tracing: {exc}") from exc
    leaves = tuple(leaf_modules)
    fx_error: Exception | None = None
    failed_in: tuple[str, type[nn.Module]] | None = None
    if tracer in (None, "fx"):
        fx_tracer = _LeafTracer(leaves)
        try:
            graph = fx_tracer.trace(root)
            module = fx.GraphModule(fx_tracer.root, graph, type(root).__name__)
            _annotate_fx_scopes(module)
            return Traced(module, "fx")
        except Exception as exc:
            fx_error, failed_in = exc, fx_tracer.failed_in
    export_error: Exception | None = None
    if tracer in (None, "export"):
        try:
            return Traced(_export(root, tuple(example_inputs)), "export")
        except Exception as exc:
            export_error = exc
    raise CaptureError(_failure_message(root, fx_error, failed_in, export_error))


def _export(root: nn.Module, args: tuple[Any, ...]) -> fx.GraphModule:
    with warnings.catch_warnings():
        # nn.RNN re-assigns its `_flat_weights` list while running; export notices, warns
        # and restores the attribute afterwards, so the warning says nothing about the graph.
        warnings.filterwarnings(
            "ignore", message=r"The tensor attributes? .*_flat_weights.* assigned during export"
        )
        program = torch.export.export(root, args, strict=False)
    # check_guards=False: otherwise the module gains a `_guards_fn` call_module node that
    # re-checks input shapes, which is not an operation of the model.
    module = program.module(check_guards=False)
    if not isinstance(module, fx.GraphModule):
        raise TypeError(f"torch.export returned {type(module).__name__}, not a GraphModule")
    for node in module.graph.nodes:
        # export records {key: (path, "pkg.Class")}; resolve classes on the traced copy.
        stack = node.meta.get("nn_module_stack") or {}
        node.meta[SCOPE_META] = tuple(
            ScopeFrame(key, path, type(root.get_submodule(path)))
            for key, (path, _) in stack.items()
            if path
        )
    return module


def _annotate_fx_scopes(module: fx.GraphModule) -> None:
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        node.meta[SCOPE_META] = tuple(
            ScopeFrame(key, path, cls) for key, (path, cls) in stack.items() if path
        )


def _failure_message(
    root: nn.Module,
    fx_error: Exception | None,
    failed_in: tuple[str, type[nn.Module]] | None,
    export_error: Exception | None,
) -> str:
    parts = [f"cannot capture {type(root).__name__}."]
    if fx_error is not None:
        where = f"module '{failed_in[0]}' ({failed_in[1].__name__})" if failed_in else "the model"
        parts.append(
            f"torch.fx failed inside {where}{_user_line(fx_error)}: {_first_line(fx_error)}."
        )
    if export_error is not None:
        parts.append(f"torch.export failed{_user_line(export_error)}: {_first_line(export_error)}.")
    cls = failed_in[1].__name__ if failed_in else type(root).__name__
    parts.append(
        f"Fix: mark it as a leaf, capture(..., leaf_modules=[{cls}]) or --leaf {cls}, "
        f"or remove data-dependent control flow from {cls}.forward."
    )
    return " ".join(parts)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _user_line(exc: Exception) -> str:
    """`` at FILE:LINE `code` `` for the innermost traceback frame outside torch, if any."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _TORCH_DIR not in f.filename]
    if not frames or frames[-1].filename == __file__:
        return ""
    frame = frames[-1]
    return f" at {Path(frame.filename).name}:{frame.lineno} `{(frame.line or '').strip()}`"
