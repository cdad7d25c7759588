"""Reference measurement behind the codec defaults: ``python -m tierflow.compress.codecs.bench``.

Captures ReLU activations at three cuts (random-init weights, seed 0: codecs see realistic
ReLU sparsity and per-channel ranges without a training run) and prints
:func:`measure_codecs` for every built-in codec:

* torchvision resnet18, one 3x224x224 input, after ``layer2`` ([1, 128, 28, 28]) and after
  ``layer3`` ([1, 256, 14, 14]);
* ``zoo:lenet`` on the first 16 MNIST test digits of ``mnist5k``, after ``pool2``
  ([16, 16, 5, 5]).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tierflow.compress.codecs.measure import measure_codecs
from tierflow.compress.codecs.stage import Activation

SPECS = [
    "raw",
    "raw+zlib",
    "raw+zstd",
    "raw+lz4",
    "fp16",
    "fp16+zstd",
    "int8",
    "int8+zlib",
    "int8+zstd",
    "int8+lz4",
    "int4",
    "int4+zlib",
    "int4+zstd",
    "int4+lz4",
    "topk:0.1",
    "topk:0.1+zstd",
    "topk:0.25+zstd",
]


def reference_activations(seed: int = 0) -> dict[str, Activation]:
    """The three cut activations described in the module docstring, as float32 arrays."""
    import torch
    import torchvision

    from tierflow.data import load_dataset
    from tierflow.models import resolve_model

    torch.manual_seed(seed)
    captured: dict[str, Any] = {}

    def keep(name: str) -> Any:
        return lambda _module, _inputs, output: captured.__setitem__(name, output)

    resnet = torchvision.models.resnet18(weights=None).eval()
    resnet.layer2.register_forward_hook(keep("resnet18/layer2"))
    resnet.layer3.register_forward_hook(keep("resnet18/layer3"))
    lenet, _ = resolve_model("zoo:lenet", seed=seed)
    lenet.eval()
    lenet.get_submodule("pool2").register_forward_hook(keep("lenet/pool2"))
    digits = torch.as_tensor(load_dataset("mnist5k").test.x[:16])
    with torch.no_grad():
        resnet(torch.randn(1, 3, 224, 224))
        lenet(digits)
    return {name: np.ascontiguousarray(t.numpy()) for name, t in captured.items()}


def main() -> None:
    """Print the measurement table for every reference activation."""
    for name, activation in reference_activations().items():
        zeros = float((activation == 0).mean())
        print(
            f"\n{name} {list(activation.shape)} ({activation.nbytes:,} B fp32, {zeros:.0%} zeros)"
        )
        for result in measure_codecs(activation, SPECS, repeats=7):
            print(f"  {result}")


if __name__ == "__main__":
    main()
