"""Reproduce the model-compression figures: ``python -m tierflow.compress.model_bench``.

For each model it builds every variant of :func:`compress_variants` and prints one table.
MNIST-sized models (``lenet``, ``lenet_wide``, ``mnist_cnn``) are first trained on
``mnist5k`` so their accuracies mean something; torchvision models (``resnet18``,
``mobilenet_v2``) are random-init at 224x224 and measured for speed only, with random
calibration inputs (ranges, not accuracy, are what calibration sets there).

``mnist_cnn`` exists because LeNet-5 is too small for compression to pay on a CPU: one
sample costs ~0.4 MFLOPs and ~20 us in ORT, mostly per-node overhead that pruning and
int8 do not shrink. ``mnist_cnn`` is the classic two-conv MNIST network (32 and 64 5x5
filters, 1024-unit hidden layer) at ~12 M multiply-adds per sample, where kernels
dominate.

Note [Measured compression figures]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Preliminary (shared 2-core AMD EPYC host, AVX512-VNNI, ORT 1.32, 1 intra-op thread,
interleaved medians; speedups are vs fp32 in the same run, accuracy on the mnist5k test
split of 1,000 images):

============  ===========  ============  ==========  ============  ==========
model         int8-static  pruned 50%    pruned+int8 fp16          accuracy
============  ===========  ============  ==========  ============  ==========
lenet         0.44-0.50x   1.24-1.30x    ~0.5x       ~1.0x         94.9 -> int8 95.0, pruned 95.6
mnist_cnn     2.39-2.67x   2.88-3.37x    5.1-5.3x    1.02-1.08x    97.2 -> int8 97.2, pruned 97.4
resnet18      3.20-3.37x   3.63-3.69x    5.3-8.2x    0.74-0.79x    (random init)
mobilenet_v2  1.80-2.32x   2.18-5.63x    2.6-6.7x    0.32-0.61x    (random init)
============  ===========  ============  ==========  ============  ==========

LeNet-5 is overhead-bound: int8 adds Q/DQ nodes and is *slower*. fp16 never pays on CPU
(Note [fp16 on CPU] in ``quantize``). mobilenet_v2 ranges are wide because the first run
shared the host with a heavy neighbour; the quieter runs gave the lower ends.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tierflow.compress.finetune import finetune
from tierflow.compress.variants import VARIANT_NAMES, Variant, compress_variants, variants_table
from tierflow.data import load_dataset

__all__ = ["MnistCNN", "bench_model", "main"]

MNIST_MODELS = ("lenet", "lenet_wide", "mnist_cnn")
TORCHVISION_MODELS = ("resnet18", "mobilenet_v2")


class MnistCNN(nn.Module):
    """Two 5x5 conv layers (32, 64 filters) and a 1024-unit hidden layer, for 1x28x28."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 7 * 7, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        logits: torch.Tensor = self.fc2(x)
        return logits


def bench_model(
    name: str,
    out_dir: Path,
    *,
    epochs: int = 5,
    finetune_epochs: int = 3,
    threads: int = 1,
    runs: int = 200,
    seed: int = 0,
) -> list[Variant]:
    """Train (MNIST models) or build (torchvision models) ``name`` and measure its variants.

    Examples
    --------
    >>> out = bench_model("lenet", Path("/tmp/bench"), epochs=1, finetune_epochs=1, runs=5)
    >>> [v.name for v in out]
    ['fp32', 'pruned', 'int8-static', 'int8-dynamic', 'pruned+int8', 'fp16']
    """
    torch.manual_seed(seed)
    if name in MNIST_MODELS:
        from tierflow.models import resolve_model

        splits = load_dataset("mnist5k")
        model = MnistCNN() if name == "mnist_cnn" else resolve_model(f"zoo:{name}")[0]
        model = finetune(model, splits.train, epochs=epochs, lr=2e-3, seed=seed)
        return compress_variants(
            model,
            torch.from_numpy(splits.test.x[:1]),
            out_dir / name,
            data=splits,
            names=VARIANT_NAMES,
            finetune_epochs=finetune_epochs,
            threads=threads,
            runs=runs,
            seed=seed,
        )
    if name in TORCHVISION_MODELS:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None).eval()
        rng = np.random.default_rng(seed)
        calibration = rng.standard_normal((16, 3, 224, 224)).astype(np.float32)
        return compress_variants(
            model,
            torch.from_numpy(calibration[:1]),
            out_dir / name,
            calibration=calibration,
            names=VARIANT_NAMES,
            threads=threads,
            runs=max(runs // 4, 5),  # 5-50 ms a run; keeps the bench within minutes
            warmup=3,
        )
    raise SystemExit(f"unknown model {name!r}; choose from {MNIST_MODELS + TORCHVISION_MODELS}")


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point; ``--help`` lists the options."""
    parser = argparse.ArgumentParser(prog="python -m tierflow.compress.model_bench")
    parser.add_argument("--models", default="lenet,mnist_cnn,resnet18,mobilenet_v2")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    parser.add_argument("--runs", type=int, default=200, help="timed rounds (MNIST models)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (MNIST)")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="keep the ONNX files here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for name in args.models.split(","):
            variants = bench_model(
                name,
                out,
                epochs=args.epochs,
                finetune_epochs=args.finetune_epochs,
                threads=args.threads,
                runs=args.runs,
            )
            print(f"\n{name} (threads={args.threads})\n{variants_table(variants)}", flush=True)


if __name__ == "__main__":
    main()
