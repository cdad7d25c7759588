"""Turn a model spec string into ``(model, example_inputs)``.

Five spec forms are accepted (the same strings the CLI takes):

* ``torchvision:NAME``: any torchvision classification model, randomly initialised
  (tierflow never downloads weights);
* ``zoo:NAME``: a model from :mod:`tierflow.models.zoo`;
* ``run:DIR``: the trained backbone of a ``tierflow train`` run directory (weights verified
  against their ``.sha256``; example inputs shaped as recorded in ``DIR/model.json``);
* ``bottleneck:DIR``: a model with a learned bottleneck saved by ``tierflow compress
  --bottleneck-out DIR`` (:mod:`tierflow.compress.bottleneck_run`), weights verified;
* ``package.module:factory``: user code; ``factory()`` returns a module, or a module and
  its example inputs.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tierflow.errors import ModelSpecError
from tierflow.models.zoo import ZOO, zoo_names

# torchvision models that need a larger input than the default 224x224 ...
_TORCHVISION_INPUT_SIZE = {"inception_v3": 299}
# ... or extra arguments so that eval() returns one plain tensor: without aux_logits=False
# GoogLeNet/Inception build unused auxiliary heads, and without init_weights they warn that
# their default initialisation will change.
_TORCHVISION_KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def resolve_model(
    spec: str,
    *,
    input_shape: Sequence[int] | None = None,
    weights: str | Path | None = None,
    seed: int = 0,
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Build the model a spec names, with example inputs, in ``eval()`` mode.

    Parameters
    ----------
    spec:
        ``torchvision:NAME``, ``zoo:NAME``, ``run:DIR``, ``bottleneck:DIR`` or
        ``package.module:factory``.
    input_shape:
        Replaces the shape of the first example input (its dtype is kept; float inputs are
        drawn from a standard normal, integer inputs are zeros).
    weights:
        A ``.safetensors`` state dict loaded with ``strict=True``. If ``FILE.sha256`` exists
        next to it, its hex digest is checked first.
    seed:
        Seeds the random initialisation and the example inputs; the global RNG is left as
        it was.

    Returns
    -------
    tuple
        ``(model, example_inputs)``.

    Raises
    ------
    ModelSpecError
        If the spec, the input shape or the weights file is invalid.

    Examples
    --------
    >>> model, inputs = resolve_model("zoo:lenet")
    >>> model(*inputs).shape
    torch.Size([1, 10])
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, inputs = _build(spec, seed)
        if input_shape is not None:
            inputs = _reshape_first(spec, inputs, input_shape)
    if weights is not None:
        load_weights(model, Path(weights), spec=spec)
    return model.eval(), inputs


def _build(spec: str, seed: int) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    kind, sep, name = spec.partition(":")
    if not sep or not name:
        raise ModelSpecError(
            f"model spec {spec!r} is not one of 'torchvision:NAME', 'zoo:NAME', 'run:DIR', "
            "'bottleneck:DIR' or 'package.module:factory'"
        )
    if kind == "torchvision":
        return _torchvision(name)
    if kind == "run":
        # Lazy: tierflow.train imports this module to rebuild a run's backbone.
        from tierflow.train.run_dir import load_backbone

        return load_backbone(name)
    if kind == "bottleneck":
        # Lazy, as for run:DIR: the bottleneck module rebuilds its base through this one.
        from tierflow.compress.bottleneck_run import load_bottleneck

        return load_bottleneck(name)
    if kind == "zoo":
        if name not in ZOO:
            raise ModelSpecError(
                f"model spec {spec!r}: no zoo model {name!r}; "
                f"choose one of {', '.join(zoo_names())}"
            )
        return ZOO[name].build(seed)
    return _factory(spec, kind, name)


def _torchvision(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    # Imported here: torchvision costs 1.5 s at import, which every tierflow command
    # would otherwise pay (Note [Lazy public names] in tierflow).
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ModelSpecError(
            f"model spec 'torchvision:{name}': torchvision has no classification model "
            f"{name!r}; choose one of {', '.join(sorted(known))}"
        )
    kwargs = _TORCHVISION_KWARGS.get(name, {})
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    size = _TORCHVISION_INPUT_SIZE.get(name, 224)
    return model, (torch.randn(1, 3, size, size),)


def _factory(spec: str, module_name: str, attr: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(
            f"model spec {spec!r}: cannot import module {module_name!r} ({exc}); put its "
            "package on PYTHONPATH or use 'torchvision:NAME' / 'zoo:NAME'"
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelSpecError(
            f"model spec {spec!r}: module {module_name!r} has no callable {attr!r}; the part "
            "after ':' must name a function that returns an nn.Module"
        )
    try:
        result = factory()
    except Exception as exc:
        raise ModelSpecError(
            f"model spec {spec!r}: {attr}() raised {type(exc).__name__}: {exc}"
        ) from exc
    model, inputs = (
        result if isinstance(result, tuple | list) and len(result) == 2 else (result, ())
    )
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            f"model spec {spec!r}: {attr}() returned {type(model).__name__}, not an nn.Module "
            "(or a (module, example_inputs) pair)"
        )
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not isinstance(inputs, tuple | list):
        raise ModelSpecError(
            f"model spec {spec!r}: {attr}() returned example inputs of type "
            f"{type(inputs).__name__}; return a tensor or a tuple of tensors"
        )
    return model, tuple(inputs)


def _reshape_first(
    spec: str, inputs: tuple[torch.Tensor, ...], shape: Sequence[int]
) -> tuple[torch.Tensor, ...]:
    dims = tuple(int(d) for d in shape)
    if not dims or any(d <= 0 for d in dims):
        raise ModelSpecError(
            f"model spec {spec!r}: input shape {dims} must be non-empty positive integers"
        )
    # A factory that returns no inputs gets a float32 input of the requested shape.
    dtype = inputs[0].dtype if inputs else torch.float32
    first = (
        torch.randn(dims, dtype=dtype)
        if dtype.is_floating_point
        else torch.zeros(dims, dtype=dtype)
    )
    return (first, *inputs[1:])


def load_weights(model: nn.Module, path: Path, *, spec: str = "model") -> None:
    """Load a ``.safetensors`` state dict into ``model`` (strict), verifying ``path.sha256``.

    Raises
    ------
    ModelSpecError
        If the file is missing, its digest does not match, or its keys or shapes differ
        from the model's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelSpecError(f"model spec {spec!r}: weights file {path} does not exist")
    digest_file = path.with_name(path.name + ".sha256")
    if digest_file.is_file():
        # `sha256sum` writes "HEX  NAME"; a bare hex digest is accepted too.
        fields = digest_file.read_text().split()
        expected = fields[0].lower() if fields else ""
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if expected != actual:
            raise ModelSpecError(
                f"weights file {path} has sha256 {actual} but {digest_file} says {expected!r}; "
                "the file is corrupt or the digest is stale"
            )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelSpecError(f"weights file {path} is not a valid safetensors file: {exc}") from exc
    own = set(model.state_dict())
    missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
    if missing or unexpected:
        raise ModelSpecError(
            f"weights file {path} does not match {spec}: missing keys {_few(missing)}, "
            f"unexpected keys {_few(unexpected)}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelSpecError(f"weights file {path} does not fit {spec}: {exc}") from exc


def _few(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit]) or "none"
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")
