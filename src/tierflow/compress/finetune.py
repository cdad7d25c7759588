"""Recovery fine-tuning and accuracy checks for compressed models.

This is deliberately minimal: a few epochs of Adam with cross-entropy, enough to let a
pruned network re-learn what the removed channels carried (Li et al., "Pruning Filters
for Efficient ConvNets", ICLR 2017, retrain the pruned network briefly for the same
reason). It is not a general training loop; full training lives in ``tierflow.train``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from tierflow.data.dataset import ArrayDataset
from tierflow.errors import CompressionError
from tierflow.torch_threads import torch_threads

__all__ = ["accuracy", "finetune"]


def finetune(
    model: nn.Module,
    data: ArrayDataset,
    *,
    epochs: int = 2,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    threads: int = 1,
) -> nn.Module:
    """Return a copy of ``model`` fine-tuned on ``data`` (recovery training after pruning).

    Parameters
    ----------
    model:
        A classifier mapping ``data.x`` batches to ``[B, classes]`` logits. Not modified.
    data:
        Training split; ``x`` float32 ``[N, ...]``, ``y`` int64 ``[N]``.
    epochs, lr, batch_size, seed:
        Adam for ``epochs`` passes over shuffled batches; ``seed`` fixes the shuffle and
        torch's RNG so two runs give the same weights.
    threads:
        torch intra-op threads while training (restored afterwards); see
        Note [One torch thread] in :mod:`tierflow.torch_threads`.

    Raises
    ------
    CompressionError
        If ``epochs`` or ``batch_size`` is below 1 or ``data`` is empty.

    Examples
    --------
    >>> from tierflow.data import load_dataset
    >>> from tierflow.models import resolve_model
    >>> net, _ = resolve_model("zoo:lenet")
    >>> splits = load_dataset("mnist5k")
    >>> trained = finetune(net, splits.train, epochs=3, lr=2e-3)  # ~1 s on one core
    >>> accuracy(trained, splits.test) > 0.9
    True
    """
    if epochs < 1:
        raise CompressionError(f"finetune: epochs must be >= 1, not {epochs}")
    if batch_size < 1:
        raise CompressionError(f"finetune: batch_size must be >= 1, not {batch_size}")
    if len(data) == 0:
        raise CompressionError(f"finetune: training data {data.name!r} is empty")
    if threads < 1:
        raise CompressionError(f"finetune: threads must be >= 1, not {threads}")
    trained = copy.deepcopy(model)
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(trained.parameters(), lr=lr)
    trained.train()
    with torch_threads(threads):  # Note [One torch thread]
        _train(trained, data, optimiser, epochs=epochs, batch_size=batch_size, seed=seed)
    trained.eval()
    return trained


def _train(
    model: nn.Module,
    data: ArrayDataset,
    optimiser: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        for x, y in data.batches(batch_size, shuffle=True, seed=seed + epoch):
            optimiser.zero_grad()
            loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
            loss.backward()
            optimiser.step()


def accuracy(model: nn.Module, data: ArrayDataset, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``data`` in PyTorch (eval mode, no gradients).

    Examples
    --------
    >>> from tierflow.data.dataset import ArrayDataset
    >>> data = ArrayDataset(np.zeros((4, 3), np.float32), np.zeros(4, np.int64), classes=2)
    >>> net = nn.Linear(3, 2)
    >>> _ = net.bias.data.copy_(torch.tensor([1.0, 0.0]))  # zero inputs: class 0 wins
    >>> accuracy(net, data)
    1.0
    """
    if len(data) == 0:
        raise CompressionError(f"accuracy: dataset {data.name!r} is empty")
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad(), torch_threads(1):
        for x, y in data.batches(batch_size):
            predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
            correct += int(np.sum(predicted == y))
    model.train(was_training)
    return correct / len(data)
