"""Structured channel pruning with Torch-Pruning.

Structured pruning removes whole output channels (and the matching input channels of
every layer that consumes them), so the pruned network is an ordinary, smaller dense
network: ONNX Runtime runs it faster with no sparse kernels. Torch-Pruning's
``DependencyGraph`` finds the coupled layers (Fang et al., "DepGraph: Towards Any
Structural Pruning", CVPR 2023); channels are ranked by the L2 norm of their group's
weights (``GroupMagnitudeImportance``, the filter-norm criterion of Li et al., ICLR 2017).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from tierflow.errors import CompressionError

__all__ = ["channel_counts", "prune_channels"]

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prune_channels(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    ratio: float = 0.5,
    *,
    ignored_layers: Sequence[nn.Module] | None = None,
) -> nn.Module:
    """Return a copy of ``model`` with ``ratio`` of the channels of each layer removed.

    Parameters
    ----------
    model:
        The network to prune. It is deep-copied first and never modified.
    example_inputs:
        Inputs that ``model`` accepts; traced once to build the dependency graph.
    ratio:
        Fraction of output channels removed per prunable layer, in ``(0, 1)``.
    ignored_layers:
        Layers of ``model`` whose *output* channels are kept. ``None`` keeps the last
        Conv/Linear layer run by the forward pass (the classifier: its outputs are the
        class logits). Pass ``[]`` to prune every layer.

    Returns
    -------
    nn.Module
        The pruned copy, in eval mode; same input and output shapes as ``model``.

    Raises
    ------
    CompressionError
        If ``ratio`` is outside ``(0, 1)``, ``ignored_layers`` names a layer not in
        ``model``, or Torch-Pruning cannot trace the model.

    Examples
    --------
    >>> from tierflow.models import resolve_model
    >>> net, inputs = resolve_model("zoo:lenet")
    >>> small = prune_channels(net, inputs, 0.5)
    >>> channel_counts(small)["conv2"], channel_counts(net)["conv2"]
    (8, 16)
    >>> small(*inputs).shape
    torch.Size([1, 10])
    """
    if not 0.0 < ratio < 1.0:
        raise CompressionError(f"prune_channels: ratio must lie in (0, 1), not {ratio}")
    inputs = (
        (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    )
    # Work on a copy in eval mode from the start: even a forward pass of the user's model
    # in train mode would update its BatchNorm running statistics.
    memo: dict[int, object] = {}
    pruned = copy.deepcopy(model, memo)
    pruned.eval()
    if ignored_layers is None:
        ignored: list[object] = [_last_prunable(pruned, inputs)]
    else:
        missing = [type(m).__name__ for m in ignored_layers if id(m) not in memo]
        if missing:
            raise CompressionError(
                f"prune_channels: ignored layer(s) {missing} are not part of the model"
            )
        ignored = [memo[id(layer)] for layer in ignored_layers]
    with torch.no_grad():
        before = pruned(*inputs)
    example = inputs[0] if len(inputs) == 1 else inputs
    try:
        with warnings.catch_warnings():
            # Torch-Pruning warns about layers it treats as unwrapped parameters; the
            # shape check below is what guarantees the result is usable.
            warnings.simplefilter("ignore")
            pruner = tp.pruner.MetaPruner(
                pruned,
                example,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=ratio,
                ignored_layers=ignored,
            )
            pruner.step()
    except Exception as exc:  # Torch-Pruning raises bare RuntimeError/KeyError on tracing
        raise CompressionError(
            f"prune_channels: Torch-Pruning failed on {type(model).__name__}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    with torch.no_grad():
        after = pruned(*inputs)
    if before.shape != after.shape:
        raise CompressionError(
            f"prune_channels: output shape changed from {list(before.shape)} to "
            f"{list(after.shape)}; add the output layer to ignored_layers"
        )
    return pruned


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels (Conv) or features (Linear) of each prunable layer, by module name.

    Examples
    --------
    >>> channel_counts(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2)))
    {'0': 4, '2': 2}
    """
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            counts[name] = module.out_features
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            counts[name] = module.out_channels
    return counts


def _last_prunable(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """The last Conv/Linear layer the forward pass runs (hooks, so order is execution order)."""
    order: list[nn.Module] = []
    handles = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, _PRUNABLE)
    ]
    try:
        with torch.no_grad():
            model(*inputs)  # a copy in eval mode (see prune_channels)
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise CompressionError(
            f"prune_channels: {type(model).__name__} has no Conv or Linear layer to prune"
        )
    return order[-1]
