"""Connectivity of a model's growable layers, traced from one forward pass.

Which layer feeds which is read from what the model actually computes, never from the order in
which parameters are registered. The forward pass runs under a ``TorchFunctionMode`` that sees
every torch call: a ``linear``/``conv2d`` whose weight is a growable parameter is a layer, and each
tensor carries the set of layers (and the network input) whose units it holds, with the unit
mapping (a channel offset from concatenation, channel padding or selecting units; the spatial size
once a conv output has been flattened) and the layout: which dimension is the batch and which
dimensions hold the units. Ops that keep units in place (activations, normalisation, dropout,
pooling, spatial and token slicing, additions) pass that set on; an add merges the sets of its
operands, so a residual consumer sees both producers. Transposes, permutes and reshapes move,
split or merge the unit dimensions; unbind/split/integer indexing of a unit dimension select units.
Any other op marks its output as unsupported, and a layer or the network output that reads such a
tensor raises an error naming the op.

Units: a Linear's units are features, a Conv2d's are channels. A Linear after a conv and a flatten
reads ``H*W`` features per conv channel: its input feature ``f`` belongs to channel ``f // (H*W)``
(``Link.spatial`` records ``(H, W)``; ``Layer.in_group`` is ``H*W``). A Linear may read a
``(batch, ..., features)`` tensor (a transformer's tokens): its units are the features of the last
dimension, shared by every token. A patch-embedding conv's channels become the token features.

Attention (explicit ``softmax(q k^T) v`` or ``scaled_dot_product_attention``): mixing over tokens
does not move units, and attention output feature ``f`` (head ``f // d_head``) reads v's feature
``f`` and q's and k's feature ``f``. With a fused qkv Linear these are three links to the consumer
(proj) at offsets 0, -D and -2D. The v link is exact (v's feature f reaches only output feature f);
the q and k links are a sound subset: the logits pair q's feature f with k's feature f, and the
softmax spreads them over all of head h's output features, which one-to-one links cannot record.
So PHEW's walks pass through q and k as well as v, and no q/k unit is a dead end.
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
    """Producer unit ``v`` feeds consumer unit ``v + offset`` (counted in grouped input units).

    A negative offset selects from a wider producer: the q, k and v thirds of a fused qkv Linear."""

    src: str | None  # producing growable weight; None: the network input
    dst: str | None  # consuming growable weight; None: the network output
    offset: int = 0  # channel concatenation / channel padding shifts units, selection shifts them back
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

# A traced tensor carries a _Units: its mappings (src, offset, spatial, src_units), fields as in Link
# (these units of the tensor come from `src`, a layer name or None for the network input), and where
# in the tensor its units and its batch lie.


class _Poison:
    def __init__(self, reason: str):
        self.reason = reason


@dataclass(frozen=True)
class _Units:
    """The units a traced tensor holds, and their layout.

    ``axes``: the dimensions that hold the units, major to minor, as ``(dim, size)``; unit index
    ``u`` is row-major over them (the qkv reshape splits a Linear's features into (3, heads, head
    features) over three dimensions). A ``dim`` of None is a unit axis a matmul contracted (q k^T
    sums over a head's features), aligned by the next matmul with the other operand's unit axis.
    ``batch``: the batch dimension. ``moved``: the last op that moved the units or the batch.
    """

    maps: frozenset
    axes: tuple[tuple[int | None, int], ...]
    batch: int = 0
    moved: str | None = None

    @property
    def units(self) -> int:
        return math.prod(s for _, s in self.axes)

    @property
    def unit_dims(self) -> dict[int, int]:
        """tensor dim -> position in ``axes``"""
        return {d: k for k, (d, _) in enumerate(self.axes) if d is not None}

    def stride(self, k: int) -> int:
        return math.prod(s for _, s in self.axes[k + 1:])

    def relayout(self, axes, batch, op: str) -> _Units:
        axes = tuple(axes)
        moved = self.moved if ([d for d, _ in axes], batch) == ([d for d, _ in self.axes], self.batch) else op
        return _Units(self.maps, axes, batch, moved)


def _spatial(maps) -> bool:
    """Holds conv channels flattened with their positions (a Linear reads them in groups of H*W)."""
    return any(m[2] is not None and math.prod(m[2]) > 1 for m in maps)


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
    "clip", "clip_", "sqrt", "exp", "pow", "__pow__", "square", "masked_fill", "masked_fill_", "where",
    # copies and casts
    "contiguous", "clone", "detach", "to", "type", "float", "double", "half", "bfloat16",
    # pooling keeps channels
    "max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d",
    "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "_adaptive_max_pool2d", "lp_pool2d",
    "max_pool1d", "avg_pool1d", "adaptive_avg_pool1d",
    "upsample", "interpolate", "upsample_nearest2d", "upsample_bilinear2d",
    # broadcasting to more positions or samples keeps the units
    "expand", "expand_as", "broadcast_to",
}
_RESHAPE = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_PERMUTE = {"transpose", "swapaxes", "swapdims", "t", "permute", "movedim", "moveaxis"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "logsumexp"}
_SOFTMAX = {"softmax", "log_softmax", "_softmax", "_log_softmax"}
_SPLIT = {"split", "chunk", "tensor_split", "split_with_sizes", "unsafe_split", "unsafe_chunk"}
_MATMUL = {"matmul", "__matmul__", "__rmatmul__", "bmm"}
_CAT = {"cat", "concat", "concatenate"}
_CONSTANT = {"zeros_like", "ones_like", "empty_like", "full_like", "zeros", "ones", "new_zeros",
             "new_ones", "new_full", "new_empty", "rand_like", "randn_like"}


def _reshape_groups(src: tuple[int, ...], out: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of ``src`` dims with runs of ``out`` dims holding the same elements (row-major).

    Size-1 dims pair with each other, else join the next run (a squeeze or unsqueeze)."""
    groups, i, j = [], 0, 0
    while i < len(src) or j < len(out):
        if i < len(src) and j < len(out) and src[i] == 1 and out[j] == 1:
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        if i == len(src) or j == len(out):
            if any(s != 1 for s in src[i:]) or any(s != 1 for s in out[j:]):
                return None
            groups += [([k], []) for k in range(i, len(src))] + [([], [k]) for k in range(j, len(out))]
            break
        a, b, pa, pb = [i], [j], src[i], out[j]
        i, j = i + 1, j + 1
        while pa != pb or (i < len(src) and src[i] == 1 and (j == len(out) or out[j] != 1)):
            if pa <= pb and i < len(src):
                a.append(i)
                pa *= src[i]
                i += 1
            elif j < len(out):
                b.append(j)
                pb *= out[j]
                j += 1
            else:
                return None
        groups.append((a, b))
    return groups


def _dim_arg(args, kwargs, position: int, *names: str):
    for n in names:
        if n in kwargs:
            return kwargs[n]
    return args[position] if len(args) > position else None


class _Tracer(TorchFunctionMode):
    def __init__(self, growable: dict[int, str], names: dict[int, str] | None = None):
        super().__init__()
        self.growable = growable  # id(parameter) -> name
        self.names = names or {}  # id(parameter) -> name, every parameter (for error messages)
        self.info: dict[int, _Units | _Poison] = {}
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive so their ids stay unique
        self.layers: dict[str, Layer] = {}
        self.links: dict[tuple, None] = {}  # ordered set of (src, dst, offset, spatial, src_units)

    # bookkeeping
    def get(self, t) -> _Units | _Poison | None:
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
        value = self.propagate(func, name, args, kwargs, tracked, outs)
        values = value if isinstance(value, list) else [value] * len(outs)
        for t, v in zip(outs, values):
            self.set(t, v)
        return out

    # propagation rules
    def propagate(self, func, name, args, kwargs, tracked, outs) -> _Units | _Poison | list:
        poison = next((self.info[id(t)] for t in tracked if isinstance(self.info[id(t)], _Poison)), None)
        if poison is not None:
            return poison
        out = outs[0]
        if out.dim() < 2:
            return _Poison(f"op '{name}' leaves fewer than 2 dimensions (batch, units)")
        src = tracked[0]
        if name in _ELEMENTWISE or (name in ("max", "min") and len(self.tensor_args(args, kwargs)) > 1):
            return self.elementwise(name, tracked, out)
        if name in _RESHAPE:
            return self.reshape(name, src, out)
        if name in _PERMUTE or name in _REDUCE:
            return self.rearrange(func, name, args, kwargs, src, out)
        if name in _SOFTMAX:
            v = self.info[id(src)]
            dim = _dim_arg(args, kwargs, 1, "dim")
            if not isinstance(dim, int):
                return _Poison(f"op '{name}' over every dimension")
            dim %= src.dim()
            if dim == v.batch or dim in v.unit_dims:
                return _Poison(f"op '{name}' over the batch or unit dimension")
            return v
        if name == "unbind":
            return self.unbind(func, args, kwargs, src, outs)
        if name in _SPLIT:
            return self.split(name, src, outs)
        if name in _MATMUL:
            a, b = (args[1], args[0]) if name == "__rmatmul__" else (args[0], args[1])
            return self.matmul(name, a, b, out)
        if name == "scaled_dot_product_attention":
            return self.attention(args, kwargs, out)
        if name == "__getitem__":
            return self.getitem(src, args[1] if len(args) > 1 else None, out)
        if name == "pad":
            pad = kwargs.get("pad", args[1] if len(args) > 1 else None)
            return self.pad(src, list(pad), kwargs.get("mode", args[2] if len(args) > 2 else "constant"))
        if name in _CAT:
            seq = kwargs.get("tensors", args[0] if args else None)
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            return self.cat(list(seq), dim, out)
        return _Poison(f"op '{name}'")

    @staticmethod
    def tensor_args(args, kwargs) -> list[torch.Tensor]:
        return [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]

    def merged(self, values) -> frozenset:
        return frozenset().union(*(v.maps for v in values))

    def elementwise(self, name, tracked, out):
        """Operands are aligned from the right (broadcasting); their units must line up with the output's."""
        layouts, values = set(), []
        for t in tracked:
            v = self.info[id(t)]
            shift = out.dim() - t.dim()
            axes = tuple((None if d is None else d + shift, s) for d, s in v.axes)
            if shift < 0 or any(d is not None and out.shape[d] != s for d, s in axes):
                return _Poison(f"op '{name}' broadcasts or changes the unit dimension")
            layouts.add((axes, v.batch + shift))
            values.append(v.relayout(axes, v.batch + shift, name))
        if len(layouts) > 1:
            return _Poison(f"op '{name}' combines tensors whose units lie in different dimensions")
        return _Units(self.merged(values), values[0].axes, values[0].batch, values[0].moved)

    def probe(self, func, args, kwargs, src):
        """``func`` run on a meta tensor whose dim ``d`` has size ``d + 2``: the output's sizes say where dims went."""
        probe = torch.empty(tuple(range(2, src.dim() + 2)), device="meta")
        args = tuple(probe if a is src else a for a in args)
        kwargs = {k: probe if a is src else a for k, a in kwargs.items()}
        return func(*args, **kwargs)

    def rearrange(self, func, name, args, kwargs, src, out):
        """Permutations and reductions: each output dim is one input dim, or a reduced one kept as size 1."""
        v = self.info[id(src)]
        if len(self.tensor_args(args, kwargs)) > 1:
            return _Poison(f"op '{name}'")
        try:
            result = self.probe(func, args, kwargs, src)
        except Exception:  # an argument the probe cannot take
            return _Poison(f"op '{name}'")
        result = tree_flatten(result)[0][0]
        where = {int(s) - 2: k for k, s in enumerate(result.shape) if s >= 2}  # input dim -> output dim
        if v.batch not in where or any(d not in where for d in v.unit_dims):
            return _Poison(f"op '{name}' reduces over the batch or unit dimension")
        axes = [(None if d is None else where[d], s) for d, s in v.axes]
        return v.relayout(axes, where[v.batch], name)

    def reshape(self, name, src, out):
        v = self.info[id(src)]
        flattens = out.dim() == 2 and out.shape[0] == src.shape[0] and out.shape[1] == math.prod(src.shape[1:])
        if src.dim() >= 3 and flattens and v.axes == ((1, src.shape[1]),) and v.batch == 0:
            spatial = tuple(int(s) for s in src.shape[2:])
            hw = math.prod(spatial)
            flat = set()
            for s, offset, sp, units in v.maps:
                if s is None:
                    # the network input has no producing layer: its units become the features
                    flat.add((s, offset * hw, None, units * hw))
                else:
                    flat.add((s, offset, spatial, units))
            return _Units(frozenset(flat), ((1, int(out.shape[1])),), 0, v.moved)
        refused = _Poison(f"op '{name}' reshapes {tuple(src.shape)} to {tuple(out.shape)} in a way that mixes the "
                          "units with other dimensions (flattening everything after the batch dimension, and "
                          "splitting or merging unit dimensions, are supported)")
        groups = _reshape_groups(tuple(src.shape), tuple(out.shape))
        if groups is None:
            return refused
        unit_dims = v.unit_dims
        new_axis: dict[int, list] = {}  # position in v.axes -> the axes replacing it
        batch = None
        for a, b in groups:
            units = [d for d in a if d in unit_dims]
            if v.batch in a:
                if units or not b:
                    return _Poison(f"op '{name}' reshapes {tuple(src.shape)} to {tuple(out.shape)}, "
                                   "merging or dropping the batch dimension")
                batch = b[0]
            if not units:
                continue
            if any(d not in unit_dims and src.shape[d] != 1 for d in a):
                return refused
            positions = [unit_dims[d] for d in units]
            if positions != list(range(positions[0], positions[0] + len(positions))):
                return refused  # merging unit dimensions out of their major-to-minor order
            new_axis[positions[0]] = [(d, int(out.shape[d])) for d in b]
            for p in positions[1:]:
                new_axis[p] = []
        axes = []
        for k, axis in enumerate(v.axes):
            axes += new_axis.get(k, [axis]) if axis[0] is not None else [axis]
        if _spatial(v.maps) and (out.dim() != 2 or axes != [(1, v.axes[0][1])]):
            return _Poison(f"op '{name}' reshapes flattened conv features")
        return v.relayout(axes, batch, name)

    def select(self, v: _Units, k: int, start: int, length: int | None, op: str) -> _Units | _Poison:
        """Units ``start .. start + length`` of unit axis ``k`` (length None: one index, the axis goes)."""
        size = v.axes[k][1]
        if start == 0 and length == size:
            return v
        if size == 1 and length is None:
            return _Units(v.maps, v.axes[:k] + v.axes[k + 1:], v.batch, v.moved)
        if k != 0:
            return _Poison(f"op '{op}' selects part of a unit dimension that is not the outermost")
        if any(m[2] is not None and math.prod(m[2]) > 1 for m in v.maps):
            return _Poison(f"op '{op}' selects part of flattened conv features")
        shift = start * v.stride(0)
        maps = frozenset((s, o - shift, sp, u) for s, o, sp, u in v.maps)
        axes = v.axes[1:] if length is None else ((v.axes[0][0], length),) + v.axes[1:]
        return _Units(maps, axes, v.batch, v.moved)

    def unbind(self, func, args, kwargs, src, outs):
        v = self.info[id(src)]
        dim = len(self.probe(func, args, kwargs, src)) - 2
        if dim == v.batch:
            return _Poison("op 'unbind' splits the batch")
        keep = [(None if d is None else d - (d > dim), s) for d, s in v.axes if d != dim]
        base = v.relayout(v.axes, v.batch - (v.batch > dim), "unbind")
        if dim not in v.unit_dims:
            return [base.relayout(keep, base.batch, "unbind")] * len(outs)
        k = v.unit_dims[dim]
        pieces = [self.select(base, k, i, None, "unbind") for i in range(len(outs))]
        return [p if isinstance(p, _Poison) else p.relayout(keep, p.batch, "unbind") for p in pieces]

    def split(self, name, src, outs):
        v = self.info[id(src)]
        differ = {d for t in outs for d in range(src.dim()) if t.dim() != src.dim() or t.shape[d] != src.shape[d]}
        if len(differ) > 1 or any(t.dim() != src.dim() for t in outs):
            return _Poison(f"op '{name}'")
        if not differ or differ.isdisjoint(v.unit_dims):
            if differ and v.batch in differ:
                return _Poison(f"op '{name}' splits the batch")
            return v
        dim = differ.pop()
        starts = [0]
        for t in outs:
            starts.append(starts[-1] + int(t.shape[dim]))
        return [self.select(v, v.unit_dims[dim], s, int(t.shape[dim]), name) for s, t in zip(starts, outs)]

    def matmul(self, name, a, b, out):
        """``a @ b``: dims of ``a`` but the last and of ``b`` but the second-to-last go to the output.

        A unit axis summed over by the product is kept as a contracted axis (dim None) when both operands
        hold it (attention scores), and aligned with the other operand's unit axis by the next product
        (attention weights times values)."""
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() < 2 or b.dim() < 2:
            return _Poison(f"op '{name}' on fewer than 2 dimensions")
        layouts = []
        # (operand, its summed dim, its dim that becomes the output's row (a) or column (b))
        for t, contracted, kept, to in ((a, a.dim() - 1, a.dim() - 2, out.dim() - 2),
                                        (b, b.dim() - 2, b.dim() - 1, out.dim() - 1)):
            v = self.get(t)
            if v is None:
                continue
            if v.batch == contracted:
                return _Poison(f"op '{name}' sums over the batch")
            place = {d: to if d == kept else d + out.dim() - t.dim() for d in range(t.dim()) if d != contracted}
            layouts.append((v, [(place.get(d), s) for d, s in v.axes], place[v.batch]))
        if len(layouts) == 1:
            v, axes, batch = layouts[0]
            if any(d is None for d, _ in axes):
                return _Poison(f"op '{name}' sums over the unit dimension with a tensor that is not a layer's output")
            return v.relayout(axes, batch, name)
        (va, axes_a, batch_a), (vb, axes_b, batch_b) = layouts
        if batch_a != batch_b or len(axes_a) != len(axes_b):
            return _Poison(f"op '{name}' combines tensors whose units or batch do not line up")
        axes = []
        for (da, sa), (db, sb) in zip(axes_a, axes_b):
            if sa != sb or (da is not None and db is not None and da != db):
                return _Poison(f"op '{name}' combines tensors whose units do not line up")
            axes.append((da if da is not None else db, sa))
        return _Units(va.maps | vb.maps, tuple(axes), batch_a, name)

    def attention(self, args, kwargs, out):
        """``scaled_dot_product_attention(q, k, v)``: output feature f reads q's, k's and v's feature f."""
        qkv = [_dim_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value"))]
        values = [self.get(t) for t in qkv if self.get(t) is not None]
        layouts = {(v.axes, v.batch) for v in values}
        if len(layouts) != 1:
            return _Poison("op 'scaled_dot_product_attention' on queries, keys and values whose units differ")
        axes, batch = layouts.pop()
        dims = {d for d, _ in axes}
        if out.dim() - 1 not in dims or out.dim() - 2 in dims or batch >= out.dim() - 2:
            return _Poison("op 'scaled_dot_product_attention' mixes units or samples")
        return _Units(self.merged(values), axes, batch, values[0].moved)

    def getitem(self, src, index, out):
        v = self.info[id(src)]
        idx = index if isinstance(index, tuple) else (index,)
        if any(i is not None and i is not Ellipsis and (isinstance(i, bool) or not isinstance(i, (int, slice)))
               for i in idx):
            return _Poison("indexing other than by integers, slices and None (__getitem__)")
        used = sum(1 for i in idx if i is not None and i is not Ellipsis)
        k = next((n for n, i in enumerate(idx) if i is Ellipsis), len(idx))
        idx = idx[:k] + (slice(None),) * (src.dim() - used) + idx[k + 1:]
        where, d, e = {}, 0, 0  # input dim -> output dim
        for i in idx:
            if i is None:
                e += 1
                continue
            size = int(src.shape[d])
            if d == v.batch and isinstance(i, int):
                return _Poison("indexing one sample of the batch (__getitem__)")
            if d in v.unit_dims:
                start, stop, step = (i % size, i % size + 1, 1) if isinstance(i, int) else i.indices(size)
                if step != 1:
                    return _Poison("slicing the unit dimension with a step (__getitem__)")
                v = self.select(v, v.unit_dims[d], start, None if isinstance(i, int) else max(stop - start, 0),
                                "__getitem__")
                if isinstance(v, _Poison):
                    return v
            if not isinstance(i, int):
                where[d] = e
                e += 1
            d += 1
        axes = [(None if a is None else where[a], s) for a, s in v.axes]
        return v.relayout(axes, where[v.batch], "__getitem__")

    def pad(self, src, pad, mode):
        v = self.info[id(src)]
        nd = src.dim()
        for k in range(len(pad) // 2):
            d, left, right = nd - 1 - k, int(pad[2 * k]), int(pad[2 * k + 1])
            if left == 0 and right == 0:
                continue
            if d == v.batch:
                return _Poison("padding the batch dimension (pad)")
            if d in v.unit_dims:
                if mode != "constant":
                    return _Poison(f"non-constant padding of the unit dimension (pad, mode={mode})")
                if left < 0 or right < 0:
                    return _Poison("cropping the unit dimension (pad)")
                v = self.shift(v, v.unit_dims[d], left, left + right, "pad")
                if isinstance(v, _Poison):
                    return v
        return v

    def shift(self, v: _Units, k: int, offset: int, extra: int, op: str) -> _Units | _Poison:
        """Place the units at ``offset`` along unit axis ``k`` of a tensor ``extra`` units longer there."""
        if _spatial(v.maps):
            return _Poison(f"op '{op}' on the unit dimension of flattened conv features")
        if k != 0:
            return _Poison(f"op '{op}' on a unit dimension that is not the outermost")
        if any(o < 0 or o + u > v.units for _, o, _, u in v.maps):
            return _Poison(f"op '{op}' on units selected from a larger layer output")
        stride = v.stride(0)
        maps = frozenset((s, o + offset * stride, sp, u) for s, o, sp, u in v.maps)
        axes = ((v.axes[0][0], v.axes[0][1] + extra),) + v.axes[1:]
        return _Units(maps, axes, v.batch, v.moved)

    def cat(self, seq, dim, out):
        dim = dim % out.dim()
        parts = [(t, self.get(t)) for t in seq]
        if any(isinstance(v, _Poison) for _, v in parts):
            return next(v for _, v in parts if isinstance(v, _Poison))
        values = [v for _, v in parts if v is not None]
        if len({(tuple(d for d, _ in v.axes), v.batch) for v in values}) > 1:
            return _Poison("concatenation of tensors whose units lie in different dimensions (cat)")
        first = values[0]
        if dim == first.batch:
            return _Poison("concatenation along the batch dimension (cat)")
        if dim not in first.unit_dims:
            if len({v.axes for v in values}) > 1:
                return _Poison("concatenation of tensors with different units (cat)")
            return _Units(self.merged(values), first.axes, first.batch, first.moved)
        k = first.unit_dims[dim]
        if len({v.axes[k + 1:] for v in values}) > 1:
            return _Poison("concatenation of tensors with different units (cat)")
        result: set = set()
        offset = 0
        for t, v in parts:
            if v is not None:
                shifted = self.shift(v, k, offset, int(out.shape[dim]) - int(t.shape[dim]), "cat")
                if isinstance(shifted, _Poison):
                    return shifted
                result |= shifted.maps
            offset += int(t.shape[dim])
        axes = list(first.axes)
        axes[k] = (dim, int(out.shape[dim]))
        return _Units(frozenset(result), tuple(axes), first.batch, first.moved)

    # layers
    def on_layer(self, op, args, kwargs, out):
        weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
        x = kwargs.get("input", args[0] if args else None)
        name = self.growable.get(id(weight))
        value = self.get(x)
        if name is None:
            if isinstance(value, _Units) or isinstance(value, _Poison):
                weight_name = self.names.get(id(weight))
                which = f" '{weight_name}'" if weight_name else ""
                self.set(out, _Poison(f"{op} whose weight{which} is not growable"))
            return
        if value is None:
            raise UnsupportedTopologyError(
                f"layer '{name}' reads a tensor that depends on neither the network input nor a growable layer")
        if isinstance(value, _Poison):
            raise UnsupportedTopologyError(
                f"layer '{name}' is reached through an unsupported {value.reason}; only Linear/Conv2d layers "
                "joined by activations, normalisation, dropout, pooling, slicing, flatten, additions, channel "
                "concatenation/padding and attention (reshape/permute/unbind into heads, matmul, softmax) are "
                "supported")
        moved = f" (after op '{value.moved}')" if value.moved else ""
        if value.batch != 0:
            raise UnsupportedTopologyError(
                f"layer '{name}' reads a tensor whose batch is dimension {value.batch}, not the first{moved}")
        if op == "conv2d":
            groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
            if groups != 1:
                raise UnsupportedTopologyError(
                    f"layer '{name}' is a grouped convolution (groups={groups}); "
                    "grouped and depthwise convolutions are not supported")
            if x.dim() != 4:
                raise UnsupportedTopologyError(
                    f"layer '{name}' (Conv2d) needs a 4-d (batch, channels, H, W) input, got {tuple(x.shape)}")
            if any(m[2] is not None for m in value.maps):
                raise UnsupportedTopologyError(f"layer '{name}' (Conv2d) reads flattened features")
            if value.axes != ((1, int(x.shape[1])),):
                raise UnsupportedTopologyError(
                    f"layer '{name}' (Conv2d) reads units that are not its input channels{moved}")
            kernel = tuple(int(k) for k in weight.shape[2:])
            layer = Layer(name, "conv2d", int(weight.shape[1]), int(weight.shape[0]), 1, kernel)
        else:
            if x.dim() < 2 or value.axes != ((x.dim() - 1, int(x.shape[-1])),):
                raise UnsupportedTopologyError(
                    f"layer '{name}' (Linear) needs its input's units in its last dimension (batch, ..., features), "
                    f"got shape {tuple(x.shape)} with units in dimensions {[d for d, _ in value.axes]}{moved}")
            if x.dim() != 2 and any(m[2] is not None for m in value.maps):
                raise UnsupportedTopologyError(f"layer '{name}' (Linear) reads flattened conv features in a "
                                               f"{x.dim()}-d tensor")
            groups_seen = {math.prod(m[2]) if m[2] is not None else 1 for m in value.maps}
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
        order = sorted(value.maps, key=lambda m: (position.get(m[0], -1), m[1], str(m[2]), m[3]))
        for s, offset, spatial, units in order:
            self.links[(s, name, offset, spatial, units)] = None
        units_dim = 1 if op == "conv2d" else out.dim() - 1
        self.set(out, _Units(frozenset({(name, 0, None, layer.out_units)}), ((units_dim, layer.out_units),)))


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
    tracer = _Tracer(growable, {id(p): n for n, p in params.items()})
    x = example_input.detach().clone()
    if x.dim() < 2:
        raise UnsupportedTopologyError(f"example_input needs a batch dimension, got shape {tuple(x.shape)}")
    tracer.set(x, _Units(frozenset({(None, 0, None, int(x.shape[1]))}), ((1, int(x.shape[1])),)))
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
        if isinstance(v, _Units):
            outputs |= {m for m in v.maps if m[0] is not None}
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
