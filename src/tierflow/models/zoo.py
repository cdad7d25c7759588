"""tierflow's own model zoo: small, seeded, CPU-fast models covering the shapes of DAG that
splitting has to handle (a chain, residual skips, multi-branch concatenation, recurrence and
a fine-grained transformer).

The zoo doubles as the test zoo: every entry builds in well under a second, runs a forward
pass in milliseconds on one CPU core and traces with torch.fx. Every block is its own
``nn.Module`` class so that ``granularity="block"`` capture has something to group by.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model.

    Attributes
    ----------
    build:
        ``build(seed)`` returns ``(model, example_inputs)``; the same seed gives the same
        weights and inputs.
    description:
        One line for ``tierflow models`` listings.
    """

    build: Callable[[int], Example]
    description: str


class ConvBNReLU(nn.Module):
    """Convolution, batch norm and ReLU: the unit every CNN in the zoo is built from."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.bn(self.conv(x)))
        return out


class LeNet(nn.Module):
    """LeNet-5 style chain for 1x28x28 inputs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        logits: torch.Tensor = self.fc3(x)
        return logits


class LeNetWide(nn.Module):
    """LeNet-style chain for 1x28x28 inputs whose compute sits after the first pooling.

    An early exit after ``pool1`` has seen about 10% of the FLOPs (conv1: 0.23 MFLOPs of
    2.4 M); the 8->64-channel ``conv2`` (1.6 MFLOPs) and the 1024->256 ``fc1`` come after
    it, so every sample that leaves at that exit skips most of the work (the BranchyNet
    setting, with a wider second stage than LeNet-5 to make the saving visible).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)  # 28 -> 24
        self.pool1 = nn.MaxPool2d(2)  # 24 -> 12
        self.conv2 = nn.Conv2d(8, 64, 5)  # 12 -> 8
        self.pool2 = nn.MaxPool2d(2)  # 8 -> 4
        self.fc1 = nn.Linear(64 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        logits: torch.Tensor = self.fc2(x)
        return logits


class LeNetLarge(nn.Module):
    """LeNet-style chain with three conv stages, for early-exit experiments on 1x28x28.

    The first stage (conv 5x5, 32 channels: 1.3 MFLOPs) is cheap; the 192- and
    384-channel stages and the 1024-unit classifier after it take about 98% of the
    ~130 MFLOPs. An exit after ``pool1`` therefore saves nearly all the work for every
    input it answers, which is the regime BranchyNet measured on LeNet (5.4x on CPU).
    Measured with ONNX Runtime on one thread of this repository's 2-core CI host, the whole
    model takes about 0.8 ms per input: enough compute that the fixed cost of an extra
    executor call and the exit policy (~0.1 ms) does not eat the saving, which it does for
    ``lenet_wide`` (0.09 ms in all).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)  # 28x28
        self.pool1 = nn.MaxPool2d(2)  # -> 14x14
        self.conv2 = nn.Conv2d(32, 192, 5, padding=2)
        self.pool2 = nn.MaxPool2d(2)  # -> 7x7
        self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
        self.pool3 = nn.MaxPool2d(2)  # -> 3x3
        self.fc1 = nn.Linear(384 * 3 * 3, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = self.pool3(torch.relu(self.conv3(x)))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        logits: torch.Tensor = self.fc2(x)
        return logits


class ResidualBlock(nn.Module):
    """ResNet BasicBlock: two 3x3 convolutions plus a skip (1x1 projection when needed)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBNReLU(c_in, c_out, 3, stride),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.body(x) + self.shortcut(x))
        return out


class ResNetMini(nn.Module):
    """A three-stage residual CNN for 3x32x32 inputs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, 16, 3)
        self.stages = nn.Sequential(
            ResidualBlock(16, 16, 1), ResidualBlock(16, 32, 2), ResidualBlock(32, 64, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        logits: torch.Tensor = self.fc(torch.flatten(x, 1))
        return logits


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1, 3x3, 5x5, pool) joined by ``torch.cat``."""

    def __init__(self, c_in: int, c_branch: int) -> None:
        super().__init__()
        self.branch1 = ConvBNReLU(c_in, c_branch, 1)
        self.branch3 = nn.Sequential(
            ConvBNReLU(c_in, c_branch, 1), ConvBNReLU(c_branch, c_branch, 3)
        )
        self.branch5 = nn.Sequential(
            ConvBNReLU(c_in, c_branch, 1), ConvBNReLU(c_branch, c_branch, 5)
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), ConvBNReLU(c_in, c_branch, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)]
        return torch.cat(branches, dim=1)


class InceptionMini(nn.Module):
    """Two Inception blocks between a stem and a classifier, for 3x32x32 inputs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, 16, 3, stride=2)
        self.block1 = InceptionBlock(16, 8)
        self.pool = nn.MaxPool2d(2)
        self.block2 = InceptionBlock(32, 16)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.pool(self.block1(self.stem(x))))
        logits: torch.Tensor = self.head(x)
        return logits


class RecurrentClassifier(nn.Module):
    """Linear input projection, a GRU or LSTM, and a classifier on the last time step."""

    def __init__(self, cell: type[nn.GRU] | type[nn.LSTM], num_layers: int) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 32)
        self.rnn = cell(32, 32, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence = self.rnn(self.proj(x))[0]
        logits: torch.Tensor = self.head(sequence[:, -1])
        return logits


class Attention(nn.Module):
    """Multi-head self-attention written out op by op (q/k/v projections, matmul, softmax)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        # (batch, tokens, dim) -> (batch, heads, tokens, head_dim)
        q = self.q(x).view(batch, tokens, self.heads, -1).transpose(1, 2)
        k = self.k(x).view(batch, tokens, self.heads, -1).transpose(1, 2)
        v = self.v(x).view(batch, tokens, self.heads, -1).transpose(1, 2)
        weights = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        mixed = torch.matmul(weights, v).transpose(1, 2).reshape(batch, tokens, dim)
        out: torch.Tensor = self.out(mixed)
        return out


class MLP(nn.Module):
    """Transformer feed-forward: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block with two residual adds."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        out: torch.Tensor = x + self.mlp(self.norm2(x))
        return out


class TinyTransformer(nn.Module):
    """Token embedding, learned positions, two encoder blocks, mean-pool classifier."""

    def __init__(self, tokens: int = 16, features: int = 32, dim: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(features, dim)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList([EncoderBlock(dim, heads=4) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.pos
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.norm(x).mean(dim=1))
        return logits


def _seeded(
    factory: Callable[[], nn.Module], input_shape: tuple[int, ...]
) -> Callable[[int], Example]:
    """Wrap ``factory`` so that weights and inputs come from ``seed`` without touching the
    caller's global RNG state (fork_rng restores it on exit)."""

    def build(seed: int) -> Example:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory().eval()
            inputs = (torch.randn(input_shape),)
        return model, inputs

    return build


ZOO: Mapping[str, ZooEntry] = MappingProxyType(
    {
        "lenet": ZooEntry(_seeded(LeNet, (1, 1, 28, 28)), "LeNet-5 chain, 1x28x28, 10 classes"),
        "lenet_wide": ZooEntry(
            _seeded(LeNetWide, (1, 1, 28, 28)),
            "LeNet-style chain, most compute after pool1 (early-exit backbone), 1x28x28",
        ),
        "lenet_large": ZooEntry(
            _seeded(LeNetLarge, (1, 1, 28, 28)),
            "LeNet-style chain, 3 conv stages, ~130 MFLOPs, 98% after pool1, 1x28x28",
        ),
        "resnet_mini": ZooEntry(
            _seeded(ResNetMini, (1, 3, 32, 32)), "three residual blocks with skips, 3x32x32"
        ),
        "inception_mini": ZooEntry(
            _seeded(InceptionMini, (1, 3, 32, 32)), "two four-branch Inception blocks, 3x32x32"
        ),
        "gru": ZooEntry(
            _seeded(lambda: RecurrentClassifier(nn.GRU, 1), (1, 16, 8)),
            "one-layer GRU sequence classifier, 16 steps x 8 features",
        ),
        "lstm": ZooEntry(
            _seeded(lambda: RecurrentClassifier(nn.LSTM, 2), (1, 16, 8)),
            "two-layer LSTM sequence classifier, 16 steps x 8 features",
        ),
        "transformer": ZooEntry(
            _seeded(TinyTransformer, (1, 16, 32)),
            "two-block transformer encoder with explicit attention ops, 16 tokens x 32",
        ),
    }
)


def zoo_names() -> tuple[str, ...]:
    """Names of the zoo models, sorted (``resolve_model("zoo:NAME")`` accepts each)."""
    return tuple(sorted(ZOO))
