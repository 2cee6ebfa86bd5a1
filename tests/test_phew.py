"""PHEW random-walk masks and the traced layer graph they walk on."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.phew import phew_masks
from growth.masks import count_active, count_total, density, growable_parameters
from growth.models.mlp import MLP
from growth.topology import LayerGraph, UnsupportedTopologyError, layer_graph


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit_activity(graph: LayerGraph, masks: dict[str, torch.Tensor]):
    """Per layer: out units with an active incoming edge, grouped in units with an active outgoing edge."""
    out_active, in_active = {}, {}
    for name, layer in graph.layers.items():
        m = masks[name]
        out_active[name] = m.reshape(layer.out_units, -1).any(1)
        in_active[name] = m.reshape(layer.out_units, layer.grouped_in_units, -1).any(2).any(0)
    return out_active, in_active


def dangling_units(graph: LayerGraph, masks: dict[str, torch.Tensor]) -> list[str]:
    """Units with an incoming edge but no outgoing one, or the reverse, following the graph's links."""
    out_active, in_active = unit_activity(graph, masks)
    problems = []
    for name, layer in graph.layers.items():
        feeds = torch.zeros(layer.out_units, dtype=torch.bool)  # unit v sends an active edge on
        for link in graph.links_from(name):
            if link.dst is None:
                feeds[:] = True
                continue
            consumer = in_active[link.dst]
            for v in range(layer.out_units):
                if 0 <= v + link.offset < len(consumer):
                    feeds[v] |= bool(consumer[v + link.offset])
        for v in torch.nonzero(out_active[name] & ~feeds).flatten().tolist():
            problems.append(f"{name} unit {v}: incoming edge, no outgoing")
        fed = torch.zeros(layer.grouped_in_units, dtype=torch.bool)  # grouped input unit u is reached
        for link in graph.links_into(name):
            for u in range(layer.grouped_in_units):
                if link.covers(u):
                    fed[u] |= True if link.src is None else bool(out_active[link.src][u - link.offset])
        for u in torch.nonzero(in_active[name] & ~fed).flatten().tolist():
            problems.append(f"{name} input unit {u}: outgoing edge, no incoming")
    return problems


def within_one_edge_per_layer(masks, requested: float) -> bool:
    target = requested * count_total(masks)
    return target - 1 <= count_active(masks) <= target + len(masks)


class ReversedMLP(nn.Module):
    """Layers registered in the reverse of the order the forward pass uses them."""

    def __init__(self):
        super().__init__()
        self.c = nn.Linear(40, 10)
        self.b = nn.Linear(50, 40)
        self.a = nn.Linear(64, 50)

    def forward(self, x):
        return self.c(F.relu(self.b(F.relu(self.a(x)))))


class SmallResNet(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN -> + identity -> ReLU -> pool -> flatten -> Linear."""

    def __init__(self, channels: int = 8, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(channels * 4 * 4, classes)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(h)) + h)
        return self.fc(torch.flatten(self.pool(out), 1))


class OptionABlock(nn.Module):
    """CIFAR ResNet block whose shortcut subsamples and zero-pads channels (option A)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2

    def forward(self, x):
        out = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class OptionANet(nn.Module):
    def __init__(self, blocks_per_stage: int = 1, widths=(16, 32, 64)):
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for w in widths:
            for _ in range(blocks_per_stage):
                layers.append(OptionABlock(cin, w) if w != cin else _IdentityBlock(w))
                cin = w
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1], 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class _IdentityBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + x)


# --- layer graph -----------------------------------------------------------------------------


def test_mlp_graph_is_a_chain_from_input_to_output():
    g = layer_graph(MLP((1, 8, 8), 10, (30, 20)), torch.randn(1, 1, 8, 8))
    names = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    assert g.order == names
    assert g.predecessors == {names[0]: (), names[1]: (names[0],), names[2]: (names[1],)}
    assert g.successors == {names[0]: (names[1],), names[1]: (names[2],), names[2]: ()}
    assert g.input_layers == (names[0],) and g.output_layers == (names[2],)
    # the flattened image input: its units are the first layer's 64 features
    assert g.link(None, names[0]).src_units == 64 and g.layers[names[0]].in_group == 1


def test_graph_comes_from_the_forward_pass_not_parameter_order():
    model = ReversedMLP()
    assert list(growable_parameters(model)) == ["c.weight", "b.weight", "a.weight"]
    g = layer_graph(model, torch.randn(2, 64))
    assert g.order == ["a.weight", "b.weight", "c.weight"]
    assert g.predecessors == {"a.weight": (), "b.weight": ("a.weight",), "c.weight": ("b.weight",)}
    assert g.input_layers == ("a.weight",) and g.output_layers == ("c.weight",)
    reference = layer_graph(MLP((64,), 10, (50, 40)), torch.randn(2, 64))
    rename = dict(zip(reference.order, g.order))
    assert [rename[s] for s in reference.successors if reference.successors[s]] == ["a.weight", "b.weight"]
    assert {rename[n]: (l.in_units, l.out_units) for n, l in reference.layers.items()} == {
        n: (l.in_units, l.out_units) for n, l in g.layers.items()}


def test_conv_graph_residual_add_and_flatten():
    g = layer_graph(SmallResNet(), torch.randn(1, 3, 8, 8))
    assert g.order == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert g.predecessors["conv2.weight"] == ("conv1.weight",)
    # the add merges conv2's branch with the identity shortcut carrying conv1's output
    assert set(g.predecessors["fc.weight"]) == {"conv1.weight", "conv2.weight"}
    assert set(g.successors["conv1.weight"]) == {"conv2.weight", "fc.weight"}
    link = g.link("conv2.weight", "fc.weight")
    assert link.spatial == (4, 4) and link.group == 16
    assert g.layers["fc.weight"].in_group == 16 and g.layers["fc.weight"].grouped_in_units == 8
    assert g.input_layers == ("conv1.weight",) and g.output_layers == ("fc.weight",)
    model = SmallResNet().train()
    stats = model.bn1.running_mean.clone()
    layer_graph(model, torch.randn(4, 3, 8, 8))
    assert model.training and torch.equal(model.bn1.running_mean, stats)  # tracing changes nothing


def test_option_a_shortcut_padding_shifts_channels():
    g = layer_graph(OptionANet(), torch.randn(1, 3, 16, 16))
    block = "blocks.1"  # 16 -> 32 channels: the shortcut pads 8 channels on each side
    assert set(g.predecessors[f"{block}.c2.weight"]) == {f"{block}.c1.weight"}
    nxt = "blocks.2.c1.weight"
    assert set(g.predecessors[nxt]) == {"stem.weight", "blocks.0.c2.weight", f"{block}.c2.weight"}
    assert g.link("blocks.0.c2.weight", nxt).offset == 8
    assert g.link(f"{block}.c2.weight", nxt).offset == 0


def test_unsupported_structures_raise_naming_the_layer():
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    with pytest.raises(UnsupportedTopologyError, match=r"'0\.weight'.*group"):
        layer_graph(grouped, torch.randn(1, 4, 6, 6))

    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.b(self.a(x).t())

    with pytest.raises(ValueError, match=r"'b\.weight'.*'t'"):
        layer_graph(Transposed(), torch.randn(6, 6))


# --- PHEW masks ------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [(100, 100), (30,), (50, 20, 40)])
@pytest.mark.parametrize("requested", [0.01, 0.05, 0.2, 0.5])
def test_density_reached_within_one_edge_per_layer(hidden, requested):
    torch.manual_seed(0)
    model = MLP((64,), 10, hidden)
    masks = phew_masks(model, requested, gen(1), torch.randn(1, 64))
    assert set(masks) == set(growable_parameters(model))
    params = growable_parameters(model)
    assert all(masks[n].dtype == torch.bool and masks[n].shape == p.shape for n, p in params.items())
    assert density(masks) >= requested
    assert within_one_edge_per_layer(masks, requested)


@pytest.mark.parametrize("requested", [0.01, 0.1, 0.3])
def test_no_dangling_units_in_mlps(requested):
    torch.manual_seed(3)
    model = MLP((64,), 10, (100, 60, 100))
    masks = phew_masks(model, requested, gen(2), torch.randn(1, 64))
    ms = [masks[f"layers.{i}.weight"] for i in range(4)]
    for below, above in zip(ms[:-1], ms[1:]):
        incoming = below.any(1)  # hidden unit j has an active edge into it
        outgoing = above.any(0)  # hidden unit j has an active edge out of it
        assert incoming.any()
        assert torch.equal(incoming, outgoing)
    assert dangling_units(layer_graph(model, torch.randn(1, 64)), masks) == []


def test_walks_start_round_robin_from_every_input_and_output_unit():
    torch.manual_seed(0)
    model = MLP((64,), 10, (100, 100))
    masks = phew_masks(model, 0.2, gen(0), torch.randn(1, 64))
    assert masks["layers.0.weight"].any(0).all()  # every input unit starts some walk
    assert masks["layers.2.weight"].any(1).all()  # every output unit starts some walk


def test_same_seed_same_masks_other_seed_other_masks():
    torch.manual_seed(0)
    model = MLP((64,), 10, (100, 100))
    x = torch.randn(1, 64)
    a = phew_masks(model, 0.05, gen(7), x)
    b = phew_masks(model, 0.05, gen(7), x)
    c = phew_masks(model, 0.05, gen(8), x)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    conv = SmallResNet()
    xc = torch.randn(1, 3, 8, 8)
    assert all(torch.equal(u, v) for u, v in zip(phew_masks(conv, 0.05, gen(7), xc).values(),
                                                 phew_masks(conv, 0.05, gen(7), xc).values()))


def test_walks_prefer_large_weights():
    torch.manual_seed(0)
    model = MLP((20,), 5, (30,))
    w = model.layers[0].weight  # (30 hidden, 20 inputs)
    big = [(0, 0), (5, 3), (11, 7), (17, 12), (23, 18)]  # distinct rows and columns
    big_mask = torch.zeros_like(w, dtype=torch.bool)
    for r, c in big:
        big_mask[r, c] = True
    with torch.no_grad():
        w[big_mask] = 100 * w.abs().mean() * w[big_mask].sign()
    counts = torch.zeros_like(w)
    runs = 20
    for seed in range(runs):
        counts += phew_masks(model, 0.2, gen(seed), torch.randn(1, 20))["layers.0.weight"]
    freq = counts / runs
    assert freq[big_mask].min() >= 0.9
    assert freq[big_mask].mean() > 5 * freq[~big_mask].mean()


def test_reversed_registration_gets_valid_walks():
    torch.manual_seed(0)
    model = ReversedMLP()
    masks = phew_masks(model, 0.05, gen(0), torch.randn(1, 64))
    assert within_one_edge_per_layer(masks, 0.05)
    # unit j of a's output is unit j of b's input: walks follow the real chain
    assert torch.equal(masks["a.weight"].any(1), masks["b.weight"].any(0))
    assert torch.equal(masks["b.weight"].any(1), masks["c.weight"].any(0))
    assert dangling_units(layer_graph(model, torch.randn(1, 64)), masks) == []


@pytest.mark.parametrize("requested", [0.01, 0.1])
def test_small_conv_net_gets_valid_masks(requested):
    torch.manual_seed(0)
    model = SmallResNet()
    x = torch.randn(1, 3, 8, 8)
    masks = phew_masks(model, requested, gen(0), x)
    assert all(m.any() for m in masks.values())
    assert within_one_edge_per_layer(masks, requested) and density(masks) >= requested
    # channel c of the conv output feeds fc features c*16 .. c*16+15: active fc slices have live channels
    assert dangling_units(layer_graph(model, x), masks) == []


def test_option_a_resnet_masks_have_no_dangling_units():
    torch.manual_seed(0)
    model = OptionANet()
    x = torch.randn(1, 3, 16, 16)
    masks = phew_masks(model, 0.03, gen(0), x)
    assert all(m.any() for m in masks.values())
    assert within_one_edge_per_layer(masks, 0.03)
    assert dangling_units(layer_graph(model, x), masks) == []


def test_density_one_is_dense_and_bad_density_raises():
    model = MLP((64,), 10, (20,))
    x = torch.randn(1, 64)
    assert all(m.all() for m in phew_masks(model, 1.0, gen(), x).values())
    for bad in (0, 0.0, -0.1, 1.01, 2, float("nan")):
        with pytest.raises(ValueError, match="density"):
            phew_masks(model, bad, gen(), x)


def test_zero_weights_cannot_reach_density():
    model = MLP((8,), 2, (4,))
    with torch.no_grad():
        # zero all but input 0's column and hidden unit 0's row: the rest of layer 0 is never walked
        model.layers[0].weight[1:, 1:] = 0
    with pytest.raises(ValueError, match="density"):
        phew_masks(model, 0.9, gen(), torch.randn(1, 8))


def test_fast_enough():
    torch.manual_seed(0)
    mlp = MLP((64,), 10, (100, 100))
    x = torch.randn(1, 64)
    start = time.perf_counter()
    phew_masks(mlp, 0.01, gen(), x)
    phew_masks(mlp, 0.2, gen(), x)
    assert time.perf_counter() - start < 1.0
    conv = OptionANet(blocks_per_stage=5)  # ResNet-32 shape, about 0.46M weights
    assert 4e5 < count_total(phew_masks(conv, 1.0, gen(), torch.randn(1, 3, 32, 32))) < 6e5
    start = time.perf_counter()
    masks = phew_masks(conv, 0.01, gen(), torch.randn(1, 3, 32, 32))
    assert time.perf_counter() - start < 5.0
    assert math.isclose(density(masks), 0.01, abs_tol=len(masks) / count_total(masks))
