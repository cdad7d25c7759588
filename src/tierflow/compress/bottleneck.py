"""A learned bottleneck at a cut: the lower tier sends a few uint8 channels, not the tensor.

Codecs compress whatever activation the model happens to produce; a bottleneck changes the
model so that what crosses is small by design (BottleFit, Matsubara et al., WoWMoM 2022;
SC2, Matsubara et al., TMLR 2023). At the cut an encoder (a 1x1 convolution to ``k``
channels, BatchNorm, a sigmoid and rounding to 256 levels) ends the lower part, and a
decoder (1x1 convolutions to 64 hidden channels and back to the original ones, each with a
ReLU) starts the upper part. Training freezes the lower part, so the device keeps the
original weights and pays for one 1x1 convolution more, and fits the encoder, decoder and
upper part to the labels, to the original model's logits (knowledge distillation, Hinton
et al. 2015) and to the original activation (BottleFit's head distillation).

Note [Straight-through rounding]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Rounding has zero gradient almost everywhere. In training the encoder outputs
``z + (round(z) - z).detach()``: the forward value is the rounded code, the backward pass
treats rounding as the identity (Bengio et al. 2013). In eval mode it outputs
``round(z)`` exactly, which the exported head casts to uint8; ``z + (round(z) - z)`` is
not always an integer in float32, so it is never exported.

Note [Measured bottleneck figures]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
zoo:lenet_large trained 3 epochs on mnist5k (96.30% test accuracy), bottlenecks trained
with the default settings, everything measured through ONNX Runtime on the 1,000-image
test split (``tierflow compress zoo:lenet_large --cut CUT ...``; shared 2-core host,
one torch thread):

=====  ========  ======  ====================  ==========  ========  ============
cut    channels  epochs  bytes/sample (fp32)   ratio       accuracy  train time
=====  ========  ======  ====================  ==========  ========  ============
pool2  8         3       392 (37,632)          96x         95.80%    19 s
pool2  4         3       196 (37,632)          192x        95.6% *   19 s
pool1  2         3       392 (25,088)          64x         95.00%    26-29 s
pool1  2         5       392 (25,088)          64x (88x    96.20%    46 s
                                               with zstd)
pool1  3         3       588 (25,088)          43x         96.4% *   28 s
=====  ========  ======  ====================  ==========  ========  ============

(* PyTorch accuracy, not re-measured in ORT.) zstd does not shrink pool2's 8-channel codes
(402 B: they are dense) but does pool1's 2-channel ones (286 B). A first version without
the encoder's BatchNorm, the decoder's hidden layer and the feature loss reached only 85.5%
(pool2, 8 channels) and 10% (pool1, 2 channels) after 3 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from tierflow.compress.cut import CutParts, SingleOutput, split_at
from tierflow.data.dataset import ArrayDataset
from tierflow.errors import CompressionError
from tierflow.torch_threads import torch_threads

__all__ = [
    "Bottleneck",
    "BottleneckDecoder",
    "BottleneckEncoder",
    "BottleneckSettings",
    "train_bottleneck",
]

CODE_LEVELS = 255.0  # uint8 codes 0..255


class BottleneckEncoder(nn.Module):
    """``C`` channels to ``k`` codes in [0, 255]: 1x1 conv, sigmoid, rounding (STE)."""

    def __init__(self, channels_in: int, code_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, code_channels, 1)
        # Normalising before the sigmoid spreads codes over all 256 levels from the first
        # step; lenet_large's raw pool2 activations saturate it. A version without this
        # norm (and without the decoder's hidden layer and the feature loss) reached 85.5%
        # where this one reaches 95.8% (Note [Measured bottleneck figures]).
        self.norm = nn.BatchNorm2d(code_channels)

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        levels = torch.sigmoid(self.norm(self.conv(activation))) * CODE_LEVELS
        if self.training:  # Note [Straight-through rounding]
            return levels + (torch.round(levels) - levels).detach()
        return torch.round(levels)


class BottleneckDecoder(nn.Module):
    """``k`` codes (any dtype, 0..255) back to ``C`` non-negative channels."""

    def __init__(self, code_channels: int, channels_out: int, *, hidden: int = 64) -> None:
        super().__init__()
        self.expand = nn.Conv2d(code_channels, hidden, 1)
        self.conv = nn.Conv2d(hidden, channels_out, 1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.expand(code.to(torch.float32) / CODE_LEVELS))
        # The cuts this targets follow a ReLU (and pooling), so the original activation is
        # non-negative; the ReLU keeps the decoded one so too.
        return torch.relu(self.conv(hidden))


class _Head(nn.Module):
    def __init__(self, lower: SingleOutput, encoder: BottleneckEncoder) -> None:
        super().__init__()
        self.lower, self.encoder = lower, encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code: torch.Tensor = self.encoder(self.lower(x))
        return code.to(torch.uint8)


class _Tail(nn.Module):
    def __init__(self, decoder: BottleneckDecoder, upper: SingleOutput) -> None:
        super().__init__()
        self.decoder, self.upper = decoder, upper

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.upper(self.decoder(code))
        return result


class Bottleneck(nn.Module):
    """A model with a learned bottleneck at ``cut``; ``tail(head(x))`` gives the logits.

    Attributes
    ----------
    cut:
        The node after which the code crosses.
    head:
        Input to uint8 code ``[B, k, H, W]`` (lower part + encoder): what the lower tier runs.
    tail:
        uint8 code to logits (decoder + upper part): what the upper tier runs.
    fp32_bytes_per_sample:
        Bytes the original activation at ``cut`` takes as float32, per sample.
    """

    def __init__(
        self, parts: CutParts, encoder: BottleneckEncoder, decoder: BottleneckDecoder
    ) -> None:
        super().__init__()
        self.cut = parts.cut
        self.fp32_bytes_per_sample = parts.fp32_bytes_per_sample
        self.head = _Head(parts.lower, encoder)
        self.tail = _Tail(decoder, parts.upper)

    @property
    def code_channels(self) -> int:
        return int(self.head.encoder.conv.out_channels)

    @property
    def name(self) -> str:
        """``bottleneck-<k>ch``, the codec row name reports use."""
        return f"bottleneck-{self.code_channels}ch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; in training mode the code is a float with straight-through rounding."""
        code = self.head.encoder(self.head.lower(x)) if self.training else self.head(x)
        result: torch.Tensor = self.tail(code)
        return result


@dataclass(frozen=True)
class BottleneckSettings:
    """How :func:`train_bottleneck` trains.

    ``distill_weight`` weighs the KL divergence to the original logits at
    ``temperature`` against cross-entropy with the labels (weight 1); ``feature_weight``
    the mean squared error of the decoded activation, over the activation's mean square
    (BottleFit's head distillation); ``tune_upper``
    lets the upper part adapt to the decoded activation (BottleFit's second stage).
    """

    code_channels: int = 8
    epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 64
    distill_weight: float = 1.0
    feature_weight: float = 1.0
    temperature: float = 2.0
    tune_upper: bool = True
    seed: int = 0
    threads: int = 1


def train_bottleneck(
    model: nn.Module,
    example: torch.Tensor,
    cut: str,
    data: ArrayDataset,
    settings: BottleneckSettings | None = None,
) -> Bottleneck:
    """Insert a bottleneck into ``model`` at ``cut`` and train it on ``data``.

    Parameters
    ----------
    model:
        A trained single-input classifier; never modified.
    example:
        One input batch, for tracing.
    cut:
        An fx node name with a 4-D output that alone crosses (see
        :func:`~tierflow.compress.cut.cut_candidates`).
    data:
        Labelled training data.
    settings:
        Code channels, epochs, optimiser and loss weights; default ``BottleneckSettings()``.

    Raises
    ------
    CompressionError
        If ``cut`` is not a single 4-D tensor cut, or a setting is out of range.

    Examples
    --------
    >>> from tierflow.compress.finetune import finetune
    >>> from tierflow.data import load_dataset
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> splits = load_dataset("mnist5k")
    >>> net = finetune(net, splits.train, epochs=3, lr=2e-3)
    >>> b = train_bottleneck(net, x, "pool2", splits.train, BottleneckSettings(code_channels=4))
    >>> b.name, b.head(x).dtype, tuple(b.head(x).shape)
    ('bottleneck-4ch', torch.uint8, (1, 4, 5, 5))
    """
    settings = settings or BottleneckSettings()
    _check(settings, data)
    parts = split_at(model, example, cut)
    if len(parts.activation_shape) != 4:
        raise CompressionError(
            f"cut {cut!r} outputs shape {parts.activation_shape}; a bottleneck needs [B, C, H, W]"
        )
    channels = parts.activation_shape[1]
    torch.manual_seed(settings.seed)
    encoder = BottleneckEncoder(channels, settings.code_channels)
    decoder = BottleneckDecoder(settings.code_channels, channels)
    bottleneck = Bottleneck(parts, encoder, decoder)
    with torch_threads(settings.threads):
        features, teacher = _teacher_outputs(parts, data)
        _fit(bottleneck, features, teacher, torch.from_numpy(data.y), settings)
    return bottleneck.eval()


def _check(settings: BottleneckSettings, data: ArrayDataset) -> None:
    for field in ("code_channels", "epochs", "batch_size", "threads"):
        if getattr(settings, field) < 1:
            raise CompressionError(
                f"BottleneckSettings.{field} must be >= 1, not {getattr(settings, field)}"
            )
    if settings.temperature <= 0:
        raise CompressionError(
            f"BottleneckSettings.temperature must be > 0, not {settings.temperature}"
        )
    if len(data) == 0:
        raise CompressionError(f"train_bottleneck: training data {data.name!r} is empty")


def _teacher_outputs(parts: CutParts, data: ArrayDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen lower part's activations and the original logits, computed once.

    The lower part never trains, so recomputing it every epoch would be wasted work:
    for lenet_large at pool2 it is about half of the model's multiply-adds.
    """
    features, logits = [], []
    parts.lower.eval()
    parts.upper.eval()
    with torch.no_grad():
        for x, _ in data.batches(256):
            activation = parts.lower(torch.from_numpy(x))
            features.append(activation)
            logits.append(parts.upper(activation))
    return torch.cat(features), torch.cat(logits)


def _fit(
    bottleneck: Bottleneck,
    features: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    settings: BottleneckSettings,
) -> None:
    encoder, tail = bottleneck.head.encoder, bottleneck.tail
    tail.upper.requires_grad_(settings.tune_upper)
    params = [*encoder.parameters(), *tail.decoder.parameters()]
    if settings.tune_upper:
        params += list(tail.upper.parameters())
    optimiser = torch.optim.Adam(params, lr=settings.lr)
    steps = settings.epochs * -(-len(labels) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    rng = np.random.default_rng(settings.seed)
    t = settings.temperature
    scale = float(features.pow(2).mean()) or 1.0
    encoder.train()
    tail.train()
    for _ in range(settings.epochs):
        order = torch.from_numpy(rng.permutation(len(labels)))
        for batch in torch.split(order, settings.batch_size):
            target = features[batch]
            decoded = tail.decoder(encoder(target))
            logits = tail.upper(decoded)
            loss = functional.cross_entropy(logits, labels[batch])
            if settings.feature_weight > 0:
                loss = loss + settings.feature_weight * functional.mse_loss(decoded, target) / scale
            if settings.distill_weight > 0:
                kd = functional.kl_div(
                    functional.log_softmax(logits / t, dim=1),
                    functional.log_softmax(teacher[batch] / t, dim=1),
                    log_target=True,
                    reduction="batchmean",
                )
                loss = loss + settings.distill_weight * t * t * kd
            optimiser.zero_grad()
            torch.autograd.backward(loss)
            optimiser.step()
            schedule.step()
    tail.upper.requires_grad_(True)
    bottleneck.eval()
