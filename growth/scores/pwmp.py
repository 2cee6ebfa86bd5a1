"""PWMP scores: for every edge, present or absent, the |weight| product of the paths through it.

See METHOD.md, "The PWMP score". PWMP(i, j) = C(i) * G(j) equals dR/dW_eff, where R is the summed
output of a non-negative copy of the network fed all ones and W_eff = |W| * mask, so one forward
and one backward pass score every edge of every layer. With ``power=2`` every edge weight of the
copy is squared (|w|^2, BatchNorm's and the norms' scales squared, each pooling edge's 1/k
squared): the score is then the sum over the paths through an edge of the product of the other
edges' squared weights, the increment of the path-kernel trace (score ``path_kernel``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.overrides import TorchFunctionMode

from growth.errors import DivergedError

_MAX_TO_AVG = {
    nn.MaxPool1d: nn.AvgPool1d,
    nn.MaxPool2d: nn.AvgPool2d,
    nn.MaxPool3d: nn.AvgPool3d,
}
_ADAPTIVE_MAX_TO_AVG = {
    nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d,
}


_RELUS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.leaky_relu, F.leaky_relu_})


class _ReluAsIdentity(TorchFunctionMode):
    """Run ReLU (module or functional) as the identity.

    On the non-negative activations of the scoring pass ReLU is the identity anyway, but autograd
    gives it derivative 0 at 0: a unit whose in-edges are all absent would then block G and give
    its absent in-edges score 0, although paths through them exist.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            return args[0]
        return func(*args, **(kwargs or {}))


class _Scale(nn.Module):
    """Stand-in for a per-sample normalisation: multiply by its (already absolute) gamma only.

    Normalising an all-ones input would erase every path, so the norm is read as a diagonal edge
    weight |gamma|. ``channel_dim=None`` broadcasts gamma over the trailing dims (LayerNorm);
    ``channel_dim=1`` scales channels (GroupNorm, InstanceNorm).
    """

    def __init__(self, weight: nn.Parameter | None, channel_dim: int | None):
        super().__init__()
        self.weight = weight
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return x
        if self.channel_dim is None:
            return x * self.weight
        return x * self.weight.view(-1, *([1] * (x.dim() - 2)))


def _window_lengths(in_size: int, out_size: int) -> list[int]:
    """The window lengths of an adaptive pool along one dimension (PyTorch's start/end rule)."""
    return [-(-((i + 1) * in_size) // out_size) - (i * in_size) // out_size for i in range(out_size)]


class _PowerPool(nn.Module):
    """An average pool whose edges weigh w**power instead of w: every input of an output
    position's window has the same weight w (1/k, 1/divisor_override, 1/the in-bounds count or
    1/the adaptive window's size), so the output is scaled by w**(power - 1)."""

    def __init__(self, pool: nn.Module, power: int):
        super().__init__()
        self.pool, self.power = pool, power

    def edge_weight(self, x: torch.Tensor) -> torch.Tensor | float:
        pool = self.pool
        adaptive = {cls: nd + 1 for nd, cls in enumerate(_ADAPTIVE_MAX_TO_AVG.values())}
        if type(pool) in adaptive:
            nd = adaptive[type(pool)]
            sizes = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * nd
            count = torch.ones((), dtype=x.dtype, device=x.device)
            for i, o in zip(x.shape[-nd:], sizes):
                lengths = torch.tensor(_window_lengths(int(i), int(i) if o is None else int(o)), dtype=x.dtype, device=x.device)
                count = count.unsqueeze(-1) * lengths  # outer product over the pooled dimensions
            return 1.0 / count
        if getattr(pool, "divisor_override", None):
            return 1.0 / pool.divisor_override
        kernel = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * (x.dim() - 2)
        area = float(torch.tensor(kernel).prod())
        if pool.count_include_pad:
            return 1.0 / area
        # the in-bounds inputs of each window: k times what counting the padding gives for ones
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        with_pad = type(pool)(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode, count_include_pad=True)
        return 1.0 / (with_pad(ones) * area)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) * self.edge_weight(x) ** (self.power - 1)


def _replacement(module: nn.Module, name: str, power: int = 1) -> nn.Module | None:
    replaced = _replacement_for_paths(module, name)
    if power == 1:
        return replaced
    pool = replaced if replaced is not None else module
    if isinstance(pool, (*_MAX_TO_AVG.values(), *_ADAPTIVE_MAX_TO_AVG.values())):
        return _PowerPool(pool, power)
    return replaced


def _replacement_for_paths(module: nn.Module, name: str) -> nn.Module | None:
    for max_cls, avg_cls in _MAX_TO_AVG.items():
        if type(module) is max_cls:
            if module.return_indices:
                raise ValueError(f"PWMP scoring cannot substitute {name or 'model'}: max pool with return_indices")
            dilation = module.dilation if isinstance(module.dilation, tuple) else (module.dilation,)
            if any(d != 1 for d in dilation):
                raise ValueError(f"PWMP scoring cannot substitute {name or 'model'}: dilated max pool has no avg-pool equivalent")
            return avg_cls(module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode, count_include_pad=True)
    for max_cls, avg_cls in _ADAPTIVE_MAX_TO_AVG.items():
        if type(module) is max_cls:
            if module.return_indices:
                raise ValueError(f"PWMP scoring cannot substitute {name or 'model'}: adaptive max pool with return_indices")
            return avg_cls(module.output_size)
    if isinstance(module, nn.LayerNorm):
        return _Scale(module.weight, channel_dim=None)
    if isinstance(module, (nn.GroupNorm, _InstanceNorm)):
        return _Scale(module.weight, channel_dim=1)
    return None


def _swap_modules(net: nn.Module, power: int = 1) -> nn.Module:
    root = _replacement(net, "", power)
    if root is not None:
        return root
    done: dict[int, nn.Module | None] = {}  # shared submodules get one shared replacement
    for parent_name, parent in list(net.named_modules()):
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) not in done:
                done[id(child)] = _replacement(child, f"{parent_name}.{child_name}" if parent_name else child_name, power)
            if done[id(child)] is not None:
                parent._modules[child_name] = done[id(child)]
    return net


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _scoring_network(model: nn.Module, masks: Mapping[str, torch.Tensor], device: torch.device,
                     power: int = 1) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """A float64, eval-mode, non-negative copy of ``model`` whose masked weights are fresh leaves
    (every edge weight raised to ``power``)."""
    net = copy.deepcopy(model)  # Parameter.__deepcopy__ does not copy .grad
    net.to(dtype=torch.float64)
    net.eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.requires_grad_(False)
            if name.rsplit(".", 1)[-1].endswith("bias"):
                p.zero_()  # shifts carry no input-to-output paths
            else:
                p.abs_().pow_(power)
        for module in net.modules():
            if isinstance(module, _BatchNorm):
                if module.running_var is None:
                    # no running statistics: read as unit variance rather than normalising the ones input
                    module.running_mean = torch.zeros(module.num_features, dtype=torch.float64, device=device)
                    module.running_var = torch.ones(module.num_features, dtype=torch.float64, device=device)
                    module.track_running_stats = True
                else:
                    module.running_mean.zero_()
                if power != 1:  # 1 / sqrt(var' + eps) = (1 / sqrt(var + eps)) ** power
                    module.running_var.copy_((module.running_var + module.eps) ** power - module.eps)

        net_params = dict(net.named_parameters())
        new_leaf: dict[int, nn.Parameter] = {}
        leaves: dict[str, nn.Parameter] = {}
        for name, mask in masks.items():
            p = net_params[name]
            keep = mask.to(device=p.device, dtype=torch.bool)
            leaf = nn.Parameter(torch.where(keep, p, torch.zeros((), dtype=p.dtype, device=p.device)))
            new_leaf[id(p)] = leaf
            leaves[name] = leaf
        # swap in every owning module so tied weights stay tied
        for module in net.modules():
            for pname, p in module._parameters.items():
                if p is not None and id(p) in new_leaf:
                    module._parameters[pname] = new_leaf[id(p)]
    return _swap_modules(net, power), leaves


def pwmp_scores(model: nn.Module, masks: Mapping[str, torch.Tensor], example_input: torch.Tensor,
                power: int = 1) -> dict[str, torch.Tensor]:
    """PWMP score of every edge (present or absent) of each masked weight, as float64 tensors.

    The score of edge (i, j) is the sum over input-to-output paths through it of the product of
    |w| of the path's other edges, C(i) * G(j); it is dR/dW_eff of one forward/backward pass on a
    deep copy of ``model`` (the caller's model, mode, grads and buffers are untouched) in float64,
    eval mode and outside autocast, fed all ones of ``example_input``'s shape (batch forced to 1;
    its values and dtype are ignored), with R = output.sum(). In the copy:

    - each masked weight is the leaf |W| * mask; every other non-bias parameter is |p| and every
      bias (any parameter whose name ends in "bias") is 0;
    - BatchNorm runs in eval mode with running_mean 0 and running_var kept, so it is a per-channel
      edge weight |gamma| / sqrt(var + eps); without running stats the variance is taken as 1;
    - LayerNorm is |gamma| scaling without normalisation (GroupNorm/InstanceNorm: per-channel
      |gamma| scaling), shift 0;
    - MaxPool is replaced by AvgPool with the same kernel/stride/padding/ceil_mode and
      count_include_pad=True: each window position is an edge of weight 1/k (k the window size),
      so every input a window could pick carries paths; AdaptiveMaxPool likewise becomes
      AdaptiveAvgPool. Only pooling modules are replaced: a functional max pool in ``forward``
      stays a max.

    ReLU (nn.ReLU, F.relu, Tensor.relu, leaky ReLU) runs as the identity: it is on these
    non-negative activations, and autograd's derivative 0 at 0 would otherwise hide the paths
    through a unit whose in-edges are all absent. Residual additions are weight-1 edges counted by
    autograd. The score is not multiplied by the weight (that would be SynFlow, 0 on absent edges).
    ``power=2`` squares every edge weight named above (the path-kernel score).

    Raises ValueError naming a mask key that is not a parameter of ``model`` or whose shape
    differs, and DivergedError naming the layers whose scores are non-finite.
    """
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask {name!r} is not a parameter of {type(model).__name__}")
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)}, but the parameter has shape {tuple(params[name].shape)}")
    if not masks:
        return {}
    if example_input.dim() == 0:
        raise ValueError("example_input must have a batch dimension")
    device = _model_device(model)
    shape = (1, *example_input.shape[1:])

    # the caller may be inside no_grad, inference_mode or autocast: none may apply here
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type=device.type, enabled=False):
        net, leaves = _scoring_network(model, masks, device, power)
        with _ReluAsIdentity():
            output = net(torch.ones(shape, dtype=torch.float64, device=device))
        if not torch.is_tensor(output):
            raise TypeError(f"PWMP scoring needs {type(model).__name__} to return a tensor, got {type(output).__name__}")
        total = output.sum()
        names = list(leaves)
        if total.requires_grad:
            grads = torch.autograd.grad(total, [leaves[n] for n in names], allow_unused=True)
        else:
            grads = [None] * len(names)
    scores = {n: (torch.zeros_like(leaves[n]) if g is None else g.detach()) for n, g in zip(names, grads)}

    finite = torch.stack([torch.isfinite(s).all() for s in scores.values()]).tolist()  # one sync
    bad = [n for n, ok in zip(names, finite) if not ok]
    if bad:
        raise DivergedError(
            f"non-finite PWMP scores (inf/nan) in layer(s) {bad}: path sums overflow float64",
            where={"layers": bad},
        )
    return scores
