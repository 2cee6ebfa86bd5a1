"""Connectivity of a model's growable layers, traced from one forward pass.

Which layer feeds which is read from what the model actually computes, never from the order in
which parameters are registered. The forward pass runs under a ``TorchFunctionMode`` that sees
every torch call: a ``linear``/``conv2d`` whose weight is a growable parameter is a layer, and each
tensor carries the set of layers (and the network input) whose units it holds, with the unit
mapping (a channel offset from concatenation or channel padding; the spatial size once a conv
output has been flattened). Ops that keep units in place (activations, normalisation, dropout,
pooling, spatial slicing, additions) pass that set on; an add merges the sets of its operands, so a
residual consumer sees both producers. Any other op marks its output as unsupported, and a layer
or the network output that reads such a tensor raises an error naming the op.

Units: a Linear's units are features, a Conv2d's are channels. A Linear after a conv and a flatten
reads ``H*W`` features per conv channel: its input feature ``f`` belongs to channel ``f // (H*W)``
(``Link.spatial`` records ``(H, W)``; ``Layer.in_group`` is ``H*W``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from growth.masks import growable_weight_names


class UnsupportedTopologyError(ValueError):
    """The model's structure cannot be expressed as a graph of growable layers."""


@dataclass(frozen=True)
class Layer:
    name: str  # growable weight's parameter name
    kind: str  # "linear" or "conv2d"
    in_units: int  # Linear: input features; Conv2d: input channels
    out_units: int  # Linear: output features; Conv2d: output channels
    in_group: int = 1  # input features per producer unit: H*W behind a flatten, else 1
    kernel: tuple[int, ...] = ()  # (kh, kw) for Conv2d; () for Linear

    @property
    def grouped_in_units(self) -> int:
        """Input units as seen by the layers that feed this one (conv channels behind a flatten)."""
        return self.in_units // self.in_group


@dataclass(frozen=True)
class Link:
    """Producer unit ``v`` feeds consumer unit ``v + offset`` (counted in grouped input units)."""

    src: str | None  # producing growable weight; None: the network input
    dst: str | None  # consuming growable weight; None: the network output
    offset: int = 0  # channel concatenation / channel padding shifts units
    spatial: tuple[int, ...] | None = None  # (H, W) of the producer's output when flattened on the way
    src_units: int = 0  # units the source provides (producer's out_units, or the input's units)

    @property
    def group(self) -> int:
        return math.prod(self.spatial) if self.spatial is not None else 1

    def covers(self, dst_unit: int) -> bool:
        return 0 <= dst_unit - self.offset < self.src_units


@dataclass(frozen=True)
class LayerGraph:
    layers: dict[str, Layer]  # in order of first use in the forward pass (a topological order)
    links: tuple[Link, ...]  # every producer->consumer connection, input and output links included
    predecessors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    successors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    input_layers: tuple[str, ...] = ()  # read the network input
    output_layers: tuple[str, ...] = ()  # produce the network output

    @property
    def order(self) -> list[str]:
        return list(self.layers)

    def links_into(self, name: str) -> list[Link]:
        return [link for link in self.links if link.dst == name]

    def links_from(self, name: str) -> list[Link]:
        return [link for link in self.links if link.src == name]

    def link(self, src: str | None, dst: str | None) -> Link:
        found = [link for link in self.links if link.src == src and link.dst == dst]
        if len(found) != 1:
            raise KeyError(f"{len(found)} links from {src!r} to {dst!r}")
        return found[0]


# --- tracing -------------------------------------------------------------------------------------

# A traced tensor carries a frozenset of mappings (src, offset, spatial, src_units), fields as in
# Link: these units of the tensor come from `src` (a layer name, or None for the network input).


class _Poison:
    def __init__(self, reason: str):
        self.reason = reason


_ELEMENTWISE = {
    # activations
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_",
    "selu", "selu_", "celu", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "sigmoid", "sigmoid_",
    "tanh", "tanh_", "softplus", "threshold", "threshold_", "prelu", "rrelu",
    # normalisation and dropout
    "batch_norm", "instance_norm", "group_norm", "layer_norm", "local_response_norm",
    "dropout", "dropout_", "dropout2d", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
    # arithmetic (an add of two tracked tensors merges producers: residual connections)
    "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__", "__isub__",
    "rsub", "mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_", "__truediv__",
    "__rtruediv__", "__itruediv__", "neg", "__neg__", "__pos__", "abs", "abs_", "clamp", "clamp_",
    "clip", "clip_", "sqrt", "exp", "pow", "__pow__", "square",
    # copies and casts
    "contiguous", "clone", "detach", "to", "type", "float", "double", "half", "bfloat16",
    # pooling keeps channels
    "max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d",
    "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "_adaptive_max_pool2d", "lp_pool2d",
    "max_pool1d", "avg_pool1d", "adaptive_avg_pool1d",
    "upsample", "interpolate", "upsample_nearest2d", "upsample_bilinear2d",
}
_RESHAPE = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "logsumexp"}
_CAT = {"cat", "concat", "concatenate"}
_CONSTANT = {"zeros_like", "ones_like", "empty_like", "full_like", "zeros", "ones", "new_zeros",
             "new_ones", "new_full", "new_empty", "rand_like", "randn_like"}


class _Tracer(TorchFunctionMode):
    def __init__(self, growable: dict[int, str]):
        super().__init__()
        self.growable = growable  # id(parameter) -> name
        self.info: dict[int, frozenset | _Poison] = {}
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive so their ids stay unique
        self.layers: dict[str, Layer] = {}
        self.links: dict[tuple, None] = {}  # ordered set of (src, dst, offset, spatial, src_units)

    # bookkeeping
    def get(self, t) -> frozenset | _Poison | None:
        if not isinstance(t, torch.Tensor):
            return None
        return self.info.get(id(t))

    def set(self, t: torch.Tensor, value) -> None:
        self.keep.append(t)
        self.info[id(t)] = value

    def tracked_args(self, args, kwargs) -> list[torch.Tensor]:
        leaves, _ = tree_flatten((args, kwargs))
        return [t for t in leaves if isinstance(t, torch.Tensor) and id(t) in self.info]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        if name in ("linear", "conv2d"):
            self.on_layer(name, args, kwargs, out)
            return out
        tracked = self.tracked_args(args, kwargs)
        if not tracked:
            return out
        if name == "__setitem__":
            self.set(args[0], _Poison("in-place item assignment (__setitem__)"))
            return out
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outs:
            return out
        if name in _CONSTANT:
            return out
        value = self.propagate(name, args, kwargs, tracked, outs[0])
        for t in outs:
            self.set(t, value)
        return out

    # propagation rules
    def merged(self, tracked) -> frozenset | _Poison:
        result: set = set()
        for t in tracked:
            v = self.info[id(t)]
            if isinstance(v, _Poison):
                return v
            result |= v
        return frozenset(result)

    def propagate(self, name, args, kwargs, tracked, out) -> frozenset | _Poison:
        poison = next((self.info[id(t)] for t in tracked if isinstance(self.info[id(t)], _Poison)), None)
        if poison is not None:
            return poison
        if out.dim() < 2:
            return _Poison(f"op '{name}' leaves fewer than 2 dimensions (batch, units)")

        def same_units(t):
            return t.dim() == out.dim() and t.shape[1] == out.shape[1]

        if name in _ELEMENTWISE:
            if all(same_units(t) for t in tracked):
                return self.merged(tracked)
            return _Poison(f"op '{name}' broadcasts or changes the unit dimension")
        if name in _RESHAPE:
            return self.reshape(name, tracked[0], out)
        if name in _REDUCE:
            dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if dims is None or not isinstance(dims, (int, tuple, list)):
                return _Poison(f"op '{name}' reduces over every dimension")
            dims = [dims] if isinstance(dims, int) else list(dims)
            src = tracked[0]
            dims = [d % src.dim() for d in dims]
            if any(d < 2 for d in dims):
                return _Poison(f"op '{name}' reduces over the batch or unit dimension")
            return self.merged(tracked)
        if name == "__getitem__":
            return self.getitem(tracked[0], args[1] if len(args) > 1 else None, out)
        if name == "pad":
            pad = kwargs.get("pad", args[1] if len(args) > 1 else None)
            return self.pad(tracked[0], list(pad), out, kwargs.get("mode", args[2] if len(args) > 2 else "constant"))
        if name in _CAT:
            seq = kwargs.get("tensors", args[0] if args else None)
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            return self.cat(list(seq), dim, out)
        return _Poison(f"op '{name}'")

    def reshape(self, name, src, out):
        v = self.info[id(src)]
        if tuple(out.shape[:2]) == tuple(src.shape[:2]) and src.dim() >= 2 and out.dim() >= 2:
            if src.dim() == 2 and out.dim() != 2 and any(m[2] is not None for m in v):
                return _Poison(f"op '{name}' reshapes flattened conv features")
            return v
        flattens = out.dim() == 2 and out.shape[0] == src.shape[0] and out.shape[1] == math.prod(src.shape[1:])
        if src.dim() >= 3 and flattens:
            spatial = tuple(int(s) for s in src.shape[2:])
            hw = math.prod(spatial)
            flat = set()
            for s, offset, sp, units in v:
                if s is None:
                    # the network input has no producing layer: its units become the features
                    flat.add((s, offset * hw, None, units * hw))
                else:
                    flat.add((s, offset, spatial, units))
            return frozenset(flat)
        return _Poison(f"op '{name}' reshapes {tuple(src.shape)} to {tuple(out.shape)} "
                       "(only flattening everything after the batch dimension is supported)")

    def getitem(self, src, index, out):
        idx = index if isinstance(index, tuple) else (index,)
        if any(not isinstance(i, (slice, type(Ellipsis))) for i in idx) or out.dim() != src.dim():
            return _Poison("indexing other than slicing (__getitem__)")
        if Ellipsis in idx:
            k = idx.index(Ellipsis)
            idx = idx[:k] + (slice(None),) * (src.dim() - len(idx) + 1) + idx[k + 1:]
        if len(idx) > 1 and idx[1] != slice(None):
            return _Poison("slicing the unit dimension (__getitem__)")
        return self.info[id(src)]

    def pad(self, src, pad, out, mode):
        v = self.info[id(src)]
        nd = src.dim()
        if len(pad) > 2 * (nd - 1):
            return _Poison("padding the batch dimension (pad)")
        j = nd - 2  # pad pairs run from the last dimension backwards; the unit dimension is 1
        if len(pad) <= 2 * j or (pad[2 * j] == 0 and pad[2 * j + 1] == 0):
            return v
        if mode != "constant":
            return _Poison(f"non-constant padding of the unit dimension (pad, mode={mode})")
        return self.shift(v, int(pad[2 * j]), "pad")

    def shift(self, v, offset, op):
        if any(m[2] is not None and math.prod(m[2]) > 1 for m in v):
            return _Poison(f"op '{op}' on the unit dimension of flattened conv features")
        return frozenset((s, o + offset, sp, u) for s, o, sp, u in v)

    def cat(self, seq, dim, out):
        dim = dim % out.dim()
        if dim == 0:
            return _Poison("concatenation along the batch dimension (cat)")
        parts = [(t, self.get(t)) for t in seq]
        if any(isinstance(v, _Poison) for _, v in parts):
            return next(v for _, v in parts if isinstance(v, _Poison))
        result: set = set()
        offset = 0
        for t, v in parts:
            if v is not None:
                if dim == 1:
                    shifted = self.shift(v, offset, "cat")
                    if isinstance(shifted, _Poison):
                        return shifted
                    result |= shifted
                else:
                    result |= v
            offset += t.shape[1] if dim == 1 else 0
        return frozenset(result)

    # layers
    def on_layer(self, op, args, kwargs, out):
        weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
        x = kwargs.get("input", args[0] if args else None)
        name = self.growable.get(id(weight))
        value = self.get(x)
        if name is None:
            if isinstance(value, frozenset) or isinstance(value, _Poison):
                self.set(out, _Poison(f"a {op} whose weight is not growable"))
            return
        if value is None:
            raise UnsupportedTopologyError(
                f"layer '{name}' reads a tensor that depends on neither the network input nor a growable layer")
        if isinstance(value, _Poison):
            raise UnsupportedTopologyError(
                f"layer '{name}' is reached through an unsupported {value.reason}; only Linear/Conv2d layers "
                "joined by activations, normalisation, dropout, pooling, slicing, flatten, additions and channel "
                "concatenation/padding are supported")
        if op == "conv2d":
            groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
            if groups != 1:
                raise UnsupportedTopologyError(
                    f"layer '{name}' is a grouped convolution (groups={groups}); "
                    "grouped and depthwise convolutions are not supported")
            if x.dim() != 4:
                raise UnsupportedTopologyError(
                    f"layer '{name}' (Conv2d) needs a 4-d (batch, channels, H, W) input, got {tuple(x.shape)}")
            if any(m[2] is not None for m in value):
                raise UnsupportedTopologyError(f"layer '{name}' (Conv2d) reads flattened features")
            kernel = tuple(int(k) for k in weight.shape[2:])
            layer = Layer(name, "conv2d", int(weight.shape[1]), int(weight.shape[0]), 1, kernel)
        else:
            if x.dim() != 2:
                raise UnsupportedTopologyError(
                    f"layer '{name}' (Linear) needs a 2-d (batch, features) input, got {tuple(x.shape)}")
            groups_seen = {math.prod(m[2]) if m[2] is not None else 1 for m in value}
            if len(groups_seen) > 1:
                raise UnsupportedTopologyError(
                    f"layer '{name}' (Linear) mixes inputs with different flattened spatial sizes "
                    f"{sorted(groups_seen)}")
            group = groups_seen.pop()
            if weight.shape[1] % group:
                raise UnsupportedTopologyError(
                    f"layer '{name}' has {weight.shape[1]} input features, "
                    f"not a multiple of the flattened spatial size {group}")
            layer = Layer(name, "linear", int(weight.shape[1]), int(weight.shape[0]), group)
        if name in self.layers:
            raise UnsupportedTopologyError(
                f"layer '{name}' is applied more than once in the forward pass (weight sharing is not supported)")
        position = {n: i for i, n in enumerate(self.layers)}
        self.layers[name] = layer
        # a fixed link order keeps the walks' uniform layer choices reproducible across processes
        order = sorted(value, key=lambda m: (position.get(m[0], -1), m[1], str(m[2]), m[3]))
        for s, offset, spatial, units in order:
            self.links[(s, name, offset, spatial, units)] = None
        self.set(out, frozenset({(name, 0, None, layer.out_units)}))


@torch.no_grad()
def layer_graph(model: nn.Module, example_input: torch.Tensor) -> LayerGraph:
    """Trace ``model`` on ``example_input`` (one batch, on the model's device) and return its layer graph.

    The model runs in eval mode so the trace leaves BatchNorm statistics untouched; its mode is
    restored afterwards.
    """
    names = growable_weight_names(model)
    params = dict(model.named_parameters())
    growable = {id(params[n]): n for n in names}
    first = next(iter(params.values()), None)
    if first is not None:
        example_input = example_input.to(first.device)
    modes = {m: m.training for m in model.modules()}
    tracer = _Tracer(growable)
    x = example_input.detach().clone()
    if x.dim() < 2:
        raise UnsupportedTopologyError(f"example_input needs a batch dimension, got shape {tuple(x.shape)}")
    tracer.set(x, frozenset({(None, 0, None, int(x.shape[1]))}))
    try:
        model.eval()
        with tracer:
            out = model(x)
    finally:
        for m, training in modes.items():
            m.train(training)

    missing = [n for n in names if n not in tracer.layers]
    if missing:
        raise UnsupportedTopologyError(
            f"growable weights {missing} are not used as the weight of a Linear or Conv2d call in the forward pass")
    outputs: set = set()
    for t in tree_flatten(out)[0]:
        v = tracer.get(t)
        if isinstance(v, _Poison):
            raise UnsupportedTopologyError(f"the network output is reached through an unsupported {v.reason}")
        if v:
            outputs |= {m for m in v if m[0] is not None}
    if not outputs:
        raise UnsupportedTopologyError("the network output does not depend on any growable layer")

    order = list(tracer.layers)
    position = {n: i for i, n in enumerate(order)}
    links = [Link(s, d, o, sp, u) for (s, d, o, sp, u) in tracer.links]
    for s in sorted({m[0] for m in outputs}, key=position.__getitem__):
        links.append(Link(s, None, 0, None, tracer.layers[s].out_units))
    layers = {n: tracer.layers[n] for n in order}
    preds = {n: tuple(dict.fromkeys(lk.src for lk in links if lk.dst == n and lk.src is not None)) for n in order}
    succs = {n: tuple(dict.fromkeys(lk.dst for lk in links if lk.src == n and lk.dst is not None)) for n in order}
    inputs = tuple(dict.fromkeys(lk.dst for lk in links if lk.src is None))
    outs = tuple(dict.fromkeys(lk.src for lk in links if lk.dst is None))
    return LayerGraph(layers, tuple(links), preds, succs, inputs, outs)
