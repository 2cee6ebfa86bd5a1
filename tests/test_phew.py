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
from growth.models.vit import ViT
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


def edges_on_paths(graph: LayerGraph, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per layer: (out unit, grouped in unit) pairs with an active edge on a path from the network input to
    its output, following the graph's links (PHEW's walks are whole paths: every active pair is on one)."""
    pairs = {n: masks[n].reshape(l.out_units, l.grouped_in_units, -1).any(2) for n, l in graph.layers.items()}
    reach_in, reach_out = {}, {}  # input units reached from the network input; output units reaching its output
    for name in graph.order:
        reached = torch.zeros(graph.layers[name].grouped_in_units, dtype=torch.bool)
        for link in graph.links_into(name):
            lo, hi = max(0, link.offset), min(len(reached), link.offset + link.src_units)
            if link.src is None:
                reached[lo:hi] = True
            elif hi > lo:
                reached[lo:hi] |= (pairs[link.src] & reach_in[link.src]).any(1)[lo - link.offset:hi - link.offset]
        reach_in[name] = reached
    for name in reversed(graph.order):
        reaching = torch.zeros(graph.layers[name].out_units, dtype=torch.bool)
        for link in graph.links_from(name):
            if link.dst is None:
                reaching[:] = True
                continue
            consumer = (pairs[link.dst] & reach_out[link.dst].unsqueeze(1)).any(0)
            lo, hi = max(0, -link.offset), min(len(reaching), len(consumer) - link.offset)
            if hi > lo:
                reaching[lo:hi] |= consumer[lo + link.offset:hi + link.offset]
        reach_out[name] = reaching
    return {n: pairs[n] & reach_in[n].unsqueeze(0) & reach_out[n].unsqueeze(1) for n in graph.order}


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


class ProjectionNet(nn.Module):
    """stem -> block (c1 stride 2 -> c2) + 1x1 projection shortcut -> identity block -> Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.c1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(8, 16, 1, stride=2, bias=False)
        self.d1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.d2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(self.c2(F.relu(self.c1(h))) + self.proj(h))
        h = F.relu(self.d2(F.relu(self.d1(h))) + h)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def walked_layers(model: nn.Module, x: torch.Tensor, n: int, forward: bool) -> list[tuple[str, ...]]:
    """The layers each of n walks takes an edge in, in layer order."""
    from growth.seeds.phew import _Walker

    graph = layer_graph(model, x)
    walker = _Walker(graph, growable_parameters(model), torch.device("cpu"))
    edges, owner = walker.walks(n, 0, forward, gen(3))
    starts = torch.tensor(walker.offset)
    layer = torch.searchsorted(starts, edges, right=True) - 1
    return [tuple(walker.order[i] for i in sorted(layer[owner == w].tolist())) for w in range(n)]


@pytest.mark.parametrize("forward", [True, False])
def test_walks_follow_the_main_branch_past_identity_shortcuts(forward):
    # Every layer of these nets is on the main branch: a walk that took an identity shortcut would
    # miss a block (before, a walk picked uniformly among an add's producers and 96% of the forward
    # walks through the Option A ResNet skipped at least one block).
    for model, x in ((SmallResNet(), torch.randn(1, 3, 8, 8)), (OptionANet(), torch.randn(1, 3, 16, 16)),
                     (small_vit(), vit_input())):
        every = tuple(layer_graph(model, x).order)
        assert set(walked_layers(model, x, 300, forward)) == {every}, type(model).__name__


@pytest.mark.parametrize("forward", [True, False])
def test_walks_choose_between_main_branch_and_projection_shortcut(forward):
    torch.manual_seed(0)
    model, x = ProjectionNet(), torch.randn(1, 3, 8, 8)
    main = ("stem.weight", "c1.weight", "c2.weight", "d1.weight", "d2.weight", "fc.weight")
    shortcut = ("stem.weight", "proj.weight", "d1.weight", "d2.weight", "fc.weight")
    taken = walked_layers(model, x, 400, forward)
    assert set(taken) == {main, shortcut}  # the identity block is never skipped
    # uniform between the two (400 draws: 6 standard deviations either side of 200)
    assert 140 < taken.count(shortcut) < 260


def small_vit(**kw) -> ViT:
    torch.manual_seed(0)
    return ViT(**{"depth": 2, "dim": 64, "heads": 4, **kw})


def vit_input(size: int = 64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=gen(1))


def test_vit_graph_links_heads_mlp_and_residual_stream():
    d, depth = 64, 2
    g = layer_graph(small_vit(), vit_input())
    blocks = [[f"blocks.{b}.{n}.weight" for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")] for b in range(depth)]
    assert g.order == ["patch_embed.weight", *[n for blk in blocks for n in blk], "head.weight"]
    assert g.input_layers == ("patch_embed.weight",) and g.output_layers == ("head.weight",)
    # the patch conv's channels are the token features: a Linear on (batch, tokens, features) reads them
    assert g.link(None, "patch_embed.weight").src_units == 3 and g.layers["patch_embed.weight"].kernel == (8, 8)
    assert all(g.layers[n].in_group == 1 and g.layers[n].kind == "linear" for blk in blocks for n in blk)
    stream = ["patch_embed.weight"]  # the residual stream: every earlier proj and fc2 output
    for qkv, proj, fc1, fc2 in blocks:
        assert set(g.predecessors[qkv]) == set(stream)
        assert all(lk.offset == 0 and lk.spatial is None and lk.src_units == d for lk in g.links_into(qkv))
        # q, k and v features f of a head all feed attention output feature f, which proj reads
        assert sorted((lk.src, lk.offset, lk.src_units) for lk in g.links_into(proj)) == [
            (qkv, -2 * d, 3 * d), (qkv, -d, 3 * d), (qkv, 0, 3 * d)]
        assert set(g.predecessors[fc1]) == set(stream) | {proj}
        assert g.predecessors[fc2] == (fc1,) and g.link(fc1, fc2).offset == 0 and g.link(fc1, fc2).src_units == 2 * d
        stream += [proj, fc2]
    assert set(g.predecessors["head.weight"]) == set(stream)  # the class token carries the whole stream
    assert g.layers["head.weight"].out_units == 200 and g.layers["blocks.0.attn.qkv.weight"].out_units == 3 * d


def test_vit_attention_links_are_real_dependencies():
    """qkv output feature v influences proj input feature v + offset for every link; v's features only their own."""
    model = small_vit(image_size=(16, 16), depth=1, dim=16, heads=4).double()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=gen(2))
    g = layer_graph(model, x)
    attn, d, dh = model.blocks[0].attn, 16, 4
    tokens = model.num_patches + 1
    weights = torch.randn(tokens, d, dtype=torch.float64, generator=gen(3))  # no cancellation over tokens
    captured = {}

    def influence(delta):  # delta: (tokens, 3d) added to qkv's output
        h1 = attn.qkv.register_forward_hook(lambda m, i, o: o + delta)
        h2 = attn.proj.register_forward_pre_hook(lambda m, i: captured.__setitem__("x", i[0]))
        try:
            model(x)
        finally:
            h1.remove()
            h2.remove()
        return (captured["x"][0] * weights).sum(0)  # (d,)

    jac = torch.autograd.functional.jacobian(influence, torch.zeros(tokens, 3 * d, dtype=torch.float64))
    depends = jac.abs().sum(1) > 1e-12  # (proj input feature, qkv output feature)
    for link in g.links_into("blocks.0.attn.proj.weight"):
        for v in range(3 * d):
            if 0 <= v + link.offset < d:
                assert depends[v + link.offset, v], (link.offset, v)
    assert torch.equal(depends[:, 2 * d:], torch.eye(d, dtype=torch.bool))  # v: exactly feature to feature
    same_head = torch.block_diag(*[torch.ones(dh, dh, dtype=torch.bool)] * (d // dh))
    assert torch.equal(depends[:, :2 * d], torch.cat([same_head, same_head], 1))  # q, k: within their head


@pytest.mark.parametrize("requested", [0.01, 0.05, 0.2])
def test_small_vit_gets_valid_masks(requested):
    model, x = small_vit(), vit_input()
    masks = phew_masks(model, requested, gen(0), x)
    assert list(masks) == list(growable_parameters(model))
    assert all(m.any() for m in masks.values())
    assert within_one_edge_per_layer(masks, requested) and density(masks) >= requested
    graph = layer_graph(model, x)
    assert dangling_units(graph, masks) == []
    # every active edge lies on an input-to-output path, through every block's attention and MLP
    on_paths = edges_on_paths(graph, masks)
    for name, layer in graph.layers.items():
        pairs = masks[name].reshape(layer.out_units, layer.grouped_in_units, -1).any(2)
        assert torch.equal(on_paths[name], pairs), name
    for b in range(2):
        q, k, v = on_paths[f"blocks.{b}.attn.qkv.weight"].chunk(3)
        assert q.any() and k.any() and v.any()  # the walks pass through queries and keys too
    # walks start round-robin from every input channel and (given enough walks) every output unit
    assert masks["patch_embed.weight"].flatten(2).any(2).any(0).all()
    assert requested < 0.05 or masks["head.weight"].any(1).all()
    again = phew_masks(model, requested, gen(0), x)
    assert all(torch.equal(masks[n], again[n]) for n in masks)


def test_default_vit_graph_and_masks():
    torch.manual_seed(0)
    model, x = ViT(), vit_input()
    graph = layer_graph(model, x)
    assert set(graph.layers) == set(growable_parameters(model)) and len(graph.layers) == 2 + 4 * 6
    masks = phew_masks(model, 0.03, gen(0), x)
    assert within_one_edge_per_layer(masks, 0.03) and all(m.any() for m in masks.values())
    on_paths = edges_on_paths(graph, masks)
    for name, layer in graph.layers.items():
        assert torch.equal(on_paths[name], masks[name].reshape(layer.out_units, layer.grouped_in_units, -1).any(2))


class TokenNet(nn.Module):
    """Tokens through a Linear, then one of several ways of reading them."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear({"tokens_into_units": 5 * 8, "split": 4, "units_not_last": 5}.get(how, 8), 3)

    def forward(self, x):  # x: (batch, 6 channels, 5 positions), read as 5 tokens of 6 features
        h = self.a(x.transpose(1, 2))
        if self.how == "mean":
            return self.b(h.mean(1))
        if self.how == "split":  # a fused projection split into halves, added
            return self.b(h.chunk(2, -1)[1] + h[..., :4])
        if self.how == "split_cat":
            return self.b(torch.cat([h.chunk(2, -1)[1], h[..., :4]], -1))
        if self.how == "transposed":
            return self.b(h.transpose(1, 2).mean(-1, keepdim=True).transpose(1, 2)[:, 0])
        if self.how == "tokens_into_units":
            return self.b(h.flatten(1))
        if self.how == "units_not_last":
            return self.b(h.transpose(1, 2))
        raise ValueError(self.how)


def test_token_layouts():
    x = torch.randn(2, 6, 5)
    for how in ("mean", "transposed"):
        g = layer_graph(TokenNet(how), x)
        assert g.predecessors["b.weight"] == ("a.weight",) and g.link("a.weight", "b.weight").offset == 0
    g = layer_graph(TokenNet("split"), x)
    assert sorted(lk.offset for lk in g.links_into("b.weight")) == [-4, 0]  # a's 4..7 and 0..3 -> b's 0..3
    # a Link cannot bound a producer's units from above: selected units may not be placed in a wider tensor
    with pytest.raises(UnsupportedTopologyError, match=r"'b\.weight'.*'cat' on units selected"):
        layer_graph(TokenNet("split_cat"), x)
    # a flatten of (tokens, features) into features, and features that are not the last dimension, are refused
    with pytest.raises(UnsupportedTopologyError, match=r"'b\.weight'.*'flatten'"):
        layer_graph(TokenNet("tokens_into_units"), x)
    with pytest.raises(UnsupportedTopologyError, match=r"'b\.weight'.*last dimension.*'transpose'"):
        layer_graph(TokenNet("units_not_last"), x)


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
