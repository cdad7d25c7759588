"""Analytic FLOPs of one traced node, from the concrete values it consumed and produced.

Note [FLOP conventions]
-----------------------
* A multiply-add counts as 2 FLOPs, so a linear layer costs ``2 * in * out`` per row,
  matching ``torch.utils.flop_counter.FlopCounterMode``. Unlike FlopCounterMode we also
  count a bias add as 1 FLOP per output element (conv, linear, addmm, baddbmm).
* Batch norm at inference folds into one scale and shift: 2 FLOPs per element. Layer,
  group, instance and RMS norm compute statistics at run time: 5 FLOPs per element (mean,
  subtract, square, sum, scale) plus 2 for the affine transform = 7.
* Softmax: 5 FLOPs per element (max, subtract, exp, sum, divide), as in the numerically
  stable implementation.
* Pooling: kernel-size FLOPs per output element; adaptive pooling and reductions (mean,
  sum, ...) touch each input element once.
* RNN cells (per time step, layer and direction): the two gate matmuls and their biases,
  then 9 elementwise FLOPs per hidden unit for LSTM and GRU (gate nonlinearities and the
  state update) and 1 for a plain RNN.
* Shape, indexing and copy ops (view, permute, cat, getitem, size, dropout at inference,
  embedding lookups) cost 0.
* Any other op is assumed elementwise: 1 FLOP per output element. This is exact for
  activations and arithmetic and a documented under-/over-estimate for anything exotic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import fx, nn

_ZERO_COST = frozenset(
    {
        "view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "squeeze",
        "unsqueeze", "expand", "expand_as", "contiguous", "clone", "cat", "concat", "stack",
        "split", "chunk", "unbind", "getitem", "getattr", "size", "sym_size", "dim", "numel",
        "dropout", "alpha_dropout", "feature_dropout", "identity", "detach", "alias", "to",
        "type_as", "slice", "select", "narrow", "index_select", "gather", "embedding",
        "assert_tensor_metadata", "repeat", "tile", "movedim", "view_as", "reshape_as",
        "zeros", "ones", "zeros_like", "ones_like", "empty", "full", "arange",
    }
)  # fmt: skip
_REDUCTIONS = frozenset({"mean", "sum", "amax", "amin", "var", "std", "logsumexp", "prod"})
_SOFTMAX = frozenset({"softmax", "log_softmax", "softmin"})
_OTHER_NORMS = frozenset({"layer_norm", "group_norm", "instance_norm", "rms_norm"})
_ALIASES = {
    "native_batch_norm_legit_no_training": "batch_norm",
    "native_batch_norm": "batch_norm",
    "native_layer_norm": "layer_norm",
    "native_group_norm": "group_norm",
    "max_pool2d_with_indices": "max_pool2d",
    "max_pool3d_with_indices": "max_pool3d",
    "iadd": "add",
    "isub": "sub",
    "imul": "mul",
    "truediv": "div",
    "itruediv": "div",
    "floordiv": "div",
    "concatenate": "cat",
}
_CONVOLUTION = re.compile(r"conv[123]d|conv_transpose[123]d|convolution")
_SOFTMAX_FLOPS, _NORM_FLOPS, _BATCH_NORM_FLOPS, _RNN_GATE_FLOPS = 5, 7, 2, 9
_RNN_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def node_flops(
    node: fx.Node,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    output: Any,
    module: nn.Module | None = None,
) -> int:
    """FLOPs of one execution of ``node`` (see Note [FLOP conventions]).

    Parameters
    ----------
    node:
        A ``call_module``, ``call_function`` or ``call_method`` node (others cost 0).
    args, kwargs:
        The concrete values the node was called with.
    output:
        The value it returned.
    module:
        The called module, for ``call_module`` nodes.
    """
    if node.op == "call_module" and module is not None:
        return _module_flops(module, args, output)
    if node.op in ("call_function", "call_method"):
        return _function_flops(op_name(node), args, kwargs, output)
    return 0


def op_name(node: fx.Node) -> str:
    """Canonical op name: ``conv2d`` for ``F.conv2d``, ``aten.conv2d.default`` and
    ``torch.conv2d``; ``add`` for ``operator.add``, ``aten.add_.Tensor`` and ``x.add``."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        raw = str(target.overloadpacket.__name__)
    elif isinstance(target, str):
        raw = target
    else:
        raw = str(getattr(target, "__name__", target))
    name = raw.strip("_")  # `relu_` (in place), `_softmax`, `__add__`
    return _ALIASES.get(name, name)


def _function_flops(name: str, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    def arg(i: int, key: str) -> Any:
        return args[i] if len(args) > i else kwargs.get(key)

    out = _first_tensor(output)
    out_numel = out.numel() if out is not None else 0
    if name in _ZERO_COST:
        return 0
    if _CONVOLUTION.fullmatch(name):
        transposed = name.startswith("conv_transpose") or (
            name == "convolution" and bool(arg(6, "transposed"))
        )
        return _conv(args[0], arg(1, "weight"), arg(2, "bias"), out_numel, transposed=transposed)
    if name == "linear":
        return _linear(arg(1, "weight"), arg(2, "bias"), out_numel)
    if name in ("matmul", "mm", "bmm"):
        # Every output element is a dot product over the last dim of the left operand.
        return 2 * out_numel * int(args[0].shape[-1])
    if name in ("addmm", "baddbmm", "addbmm"):
        return 2 * _numel(args[1]) * int(args[2].shape[-1]) + out_numel
    if name == "scaled_dot_product_attention":
        return _attention(args[0], args[1], args[2])
    if name in _RNN_GATES and isinstance(arg(2, "params"), list | tuple):
        weights = list(arg(2, "params"))
        directions = 2 if arg(7, "bidirectional") else 1
        per_cell = len(weights) // (int(arg(4, "num_layers")) * directions)
        return _rnn(_RNN_GATES[name], weights, per_cell, args[0])
    if name == "batch_norm":
        return _BATCH_NORM_FLOPS * out_numel
    if name in _OTHER_NORMS:
        return _NORM_FLOPS * out_numel
    if name in _SOFTMAX:
        return _SOFTMAX_FLOPS * out_numel
    if name.startswith(("adaptive_", "lp_pool")) or name in _REDUCTIONS:
        return _numel(args[0])
    if name.startswith(("max_pool", "avg_pool")):
        return out_numel * _kernel_volume(arg(1, "kernel_size"), name)
    return sum(t.numel() for t in _tensors(output))


def _module_flops(module: nn.Module, args: Sequence[Any], output: Any) -> int:
    out = _first_tensor(output)
    out_numel = out.numel() if out is not None else 0
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv(args[0], module.weight, module.bias, out_numel, transposed=module.transposed)
    if isinstance(module, nn.Linear):
        return _linear(module.weight, module.bias, out_numel)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _BATCH_NORM_FLOPS * out_numel
    if isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.modules.instancenorm._InstanceNorm):
        return _NORM_FLOPS * out_numel
    if isinstance(module, nn.Softmax | nn.LogSoftmax | nn.Softmin):
        return _SOFTMAX_FLOPS * out_numel
    if isinstance(
        module, nn.modules.pooling._AdaptiveAvgPoolNd | nn.modules.pooling._AdaptiveMaxPoolNd
    ):
        return _numel(args[0])
    if isinstance(module, nn.modules.pooling._MaxPoolNd | nn.modules.pooling._AvgPoolNd):
        return out_numel * _kernel_volume(module.kernel_size, type(module).__name__)
    if isinstance(module, nn.RNNBase):
        gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
        directions = 2 if module.bidirectional else 1
        weights = [w for w in module._flat_weights if w is not None]
        per_cell = len(weights) // (module.num_layers * directions)
        return _rnn(gates, weights, per_cell, args[0])
    if isinstance(module, nn.MultiheadAttention):
        return _multihead_attention(module, args)
    if isinstance(module, nn.Dropout | nn.Identity | nn.Flatten | nn.Unflatten | nn.Embedding):
        return 0
    return sum(t.numel() for t in _tensors(output))


def _conv(x: Any, weight: torch.Tensor, bias: Any, out_numel: int, *, transposed: bool) -> int:
    # weight is (out, in/groups, *k) for a convolution and (in, out/groups, *k) transposed,
    # so weight[0].numel() already accounts for groups. Each output (convolution) or input
    # (transposed) element performs that many multiply-adds.
    macs_per_element = weight[0].numel()
    elements = _numel(x) if transposed else out_numel
    return 2 * elements * macs_per_element + (out_numel if bias is not None else 0)


def _linear(weight: torch.Tensor, bias: Any, out_numel: int) -> int:
    return 2 * out_numel * weight.shape[-1] + (out_numel if bias is not None else 0)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """Scaled dot-product attention: scores ``q @ k^T``, softmax, then ``@ v``."""
    target, source = q.shape[-2], k.shape[-2]
    batch_heads = q.numel() // (target * q.shape[-1])
    scores = batch_heads * target * source
    return 2 * scores * q.shape[-1] + _SOFTMAX_FLOPS * scores + 2 * scores * v.shape[-1]


def _multihead_attention(module: nn.MultiheadAttention, args: Sequence[Any]) -> int:
    query, key = args[0], args[1]
    embed, kdim, vdim = int(module.embed_dim), int(module.kdim), int(module.vdim)
    # Rows of query/key: (L, N, E), (N, L, E) with batch_first, or (L, E) unbatched. The
    # projections are q, k, v and out (each with a bias add); attention is q@k^T and
    # weights@v. torch.export lowers the same module to linear and SDPA ops: same total.
    target, source = _numel(query) // int(query.shape[-1]), _numel(key) // int(key.shape[-1])
    batch = 1 if query.dim() == 2 else int(query.shape[0 if module.batch_first else 1])
    projections = 2 * embed * (2 * target * embed + source * kdim + source * vdim)
    heads = int(module.num_heads)
    scores = heads * target * source // batch  # batch x heads x L x S
    head_dim = embed // heads
    biases = embed * (2 * target + 2 * source) if module.in_proj_bias is not None else 0
    return projections + biases + 4 * scores * head_dim + _SOFTMAX_FLOPS * scores


def _rnn(gates: int, weights: list[torch.Tensor], per_cell: int, x: torch.Tensor) -> int:
    """``weights`` is the flat list ``[w_ih, w_hh, (b_ih, b_hh), (w_hr)]`` per layer and
    direction, in PyTorch's ``_flat_weights`` order."""
    steps = x.numel() // x.shape[-1]  # time steps x batch (for batched input)
    total = 0
    for start in range(0, len(weights), per_cell):
        w_ih, w_hh, *rest = weights[start : start + per_cell]
        hidden = w_ih.shape[0] // gates
        elementwise = _RNN_GATE_FLOPS if gates > 1 else 1  # plain RNN: one tanh/relu
        cell = 2 * (w_ih.numel() + w_hh.numel()) + elementwise * hidden
        for extra in rest:  # biases add once per gate row; a projection is a matmul
            cell += extra.numel() if extra.dim() == 1 else 2 * extra.numel()
        total += steps * cell
    return total


def _kernel_volume(kernel: Any, name: str) -> int:
    if isinstance(kernel, int):
        match = re.search(r"(\d)d", name)
        return int(kernel ** int(match.group(1))) if match else kernel
    return math.prod(int(k) for k in kernel)


def _numel(value: Any) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else 0


def _first_tensor(value: Any) -> torch.Tensor | None:
    return next(_tensors(value), None)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
