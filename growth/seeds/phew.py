"""PHEW masks (Patil & Dovrolis 2021): data-free connectivity from random walks, the growth seed
and the PHEW baseline's masks alike (seed builder `phew`).

Walks are biased by the magnitude of the initial weights. Forward walks start from network-input
units (round-robin) and backward walks from output units (round-robin), alternating. At each layer a
walk picks the next unit with probability proportional to the L1 norm of the connecting kernel
(a Conv2d's kh x kw kernel; a Linear's single weight; behind a flatten, the H*W weights joining a
conv channel to a Linear unit), then one element of that kernel proportional to |w|, and activates
that edge. Where a unit feeds (or is fed by) several layers, the walk picks one of them uniformly,
except that it never jumps over a layer it could pass through: a candidate reachable from another
candidate (forward), or one that reaches another (backward), is not offered. At a residual merge the
walk therefore follows the main branch and never the identity shortcut, and chooses only between
the main branch and a projection shortcut (a layer of its own on the other side of the add), as
PHEW's code walks a ResNet along its main branch. (PHEW's code keeps 1x1 projection shortcuts
dense instead of walking them; here they are walked like every other layer, so the masks keep the
requested density exactly.) Walks continue until the requested density is reached. The connectivity comes from
``growth.topology.layer_graph``, i.e. from tracing the model.

Many walks run at once, but the result is that of running them one after another: within a batch
an edge counts as new only at its first walk, and the batch is cut after the first walk that
reaches the target. Only whole walks are kept, so the density overshoots by less than one edge per
layer and (for MLPs) no unit is left with an incoming edge but no outgoing one, or the reverse.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from growth.kinds import SEED_BUILDERS
from growth.masks import Masks, growable_parameters
from growth.topology import LayerGraph, layer_graph

_MIN_PAIRS = 64
_MAX_PAIRS = 32768
_STALL_BATCHES = 5  # batches of _MAX_PAIRS walks that find no new edge before giving up


class _RowSampler:
    """Samples a column from given rows of a non-negative matrix, proportional to the entries.

    Rows hold normalised cumulative sums; all-zero rows sample uniformly. Short rows (kernels,
    narrow layers) are gathered and compared against the draws; long rows are shifted by their row
    index into one sorted sequence, so a batch of draws is one ``searchsorted`` with no gather.
    """

    _SHORT = 64

    def __init__(self, weights: torch.Tensor):
        rows, self.n = weights.shape
        totals = weights.sum(1, keepdim=True)
        w = torch.where(totals > 0, weights, torch.ones_like(weights))
        cum = w.cumsum(1)
        cum = cum / cum[:, -1:]
        cum[:, -1] = 1.0
        if self.n <= self._SHORT:
            self.cum = cum
            self.seq = None
        else:
            self.cum = None
            self.seq = (cum + torch.arange(rows, device=weights.device, dtype=weights.dtype).unsqueeze(1)).reshape(-1)

    def sample(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.n == 1:
            return torch.zeros_like(rows)
        u = torch.rand(rows.shape, generator=generator, dtype=torch.float64, device=rows.device)
        if self.seq is None:
            # entry j is drawn when cum[j-1] <= u < cum[j]; zero entries have an empty interval
            return (self.cum[rows] <= u.unsqueeze(1)).sum(1).clamp_(max=self.n - 1)
        idx = torch.searchsorted(self.seq, rows.to(self.seq.dtype) + u, right=True)
        start = rows * self.n
        return torch.minimum(torch.maximum(idx, start), start + self.n - 1) - start


def _downstream(graph: LayerGraph, index: dict[str, int]) -> list[set[int]]:
    """For each layer (by index), the indices of every layer downstream of it."""
    below: list[set[int]] = [set() for _ in index]
    for name in reversed(graph.order):  # a topological order: successors are done first
        i = index[name]
        for succ in graph.successors.get(name, ()):
            below[i] |= {index[succ]} | below[index[succ]]
    return below


class _Walker:
    def __init__(self, graph: LayerGraph, params: dict[str, nn.Parameter], device: torch.device):
        self.device = device
        self.order = graph.order
        index = {name: i for i, name in enumerate(self.order)}
        self.numel = [params[n].numel() for n in self.order]
        self.offset = [0]
        for n in self.numel[:-1]:
            self.offset.append(self.offset[-1] + n)
        self.total = sum(self.numel)
        self.units_out, self.units_in, self.kernel = [], [], []
        self.fwd, self.bwd, self.elem = [], [], []
        for name in self.order:
            layer = graph.layers[name]
            out_units, in_units = layer.out_units, layer.grouped_in_units
            k = params[name].numel() // (out_units * in_units)
            a = params[name].detach().to(device=device, dtype=torch.float64).abs().reshape(out_units, in_units, k)
            norms = a.sum(-1)
            self.units_out.append(out_units)
            self.units_in.append(in_units)
            self.kernel.append(k)
            self.fwd.append(_RowSampler(norms.t().contiguous()))
            self.bwd.append(_RowSampler(norms))
            self.elem.append(_RowSampler(a.reshape(out_units * in_units, k)))

        def as_tensors(triples):
            cols = list(zip(*triples)) if triples else [(), (), ()]
            return tuple(torch.tensor(c, dtype=torch.long, device=device) for c in cols)

        # outgoing: (next layer or -1 for the output, unit offset, next layer's input units)
        # incoming: (previous layer or -1 for the input, unit offset, previous layer's units)
        # reaches[a][b]: layer b is downstream of layer a; -1 stands for the network input (upstream
        # of every layer) or output (downstream of every layer)
        reaches = _downstream(graph, index)
        self.out_links, self.in_links = [], []
        self.out_skips, self.in_skips = [], []
        for name in self.order:
            outs = [(index[lk.dst] if lk.dst is not None else -1, lk.offset,
                     self.units_in[index[lk.dst]] if lk.dst is not None else 1 << 62) for lk in graph.links_from(name)]
            ins = [(index[lk.src] if lk.src is not None else -1, lk.offset, lk.src_units)
                   for lk in graph.links_into(name)]
            self.out_links.append(as_tensors(outs))
            self.in_links.append(as_tensors(ins))
            # skips[j, k]: link j jumps over link k's layer (its end lies beyond k's, forward; before
            # k's, backward), so j is not offered where k is
            self.out_skips.append(self._skips([t for t, _, _ in outs], lambda j, k: k != -1 and (j == -1 or j in reaches[k])))
            self.in_skips.append(self._skips([t for t, _, _ in ins], lambda j, k: k != -1 and (j == -1 or k in reaches[j])))

        inputs = [link for link in graph.links if link.src is None]
        starts = []
        for link in inputs:
            i = index[link.dst]
            if any(i in reaches[index[other.dst]] for other in inputs):
                continue  # the input reaches this layer through another one too: start there
            lo, hi = max(0, link.offset), min(self.units_in[i], link.offset + link.src_units)
            starts += [(i, u) for u in range(lo, hi)]
        outputs = [index[n] for n in graph.output_layers]
        ends = [(i, u) for i in outputs if not any(o in reaches[i] for o in outputs) for u in range(self.units_out[i])]
        self.start_layer, self.start_unit = (torch.tensor(c, dtype=torch.long, device=device) for c in zip(*starts))
        self.end_layer, self.end_unit = (torch.tensor(c, dtype=torch.long, device=device) for c in zip(*ends))

    def _skips(self, ends: list[int], jumps) -> torch.Tensor | None:
        skips = torch.tensor([[j != k and jumps(j, k) for k in ends] for j in ends], dtype=torch.bool, device=self.device)
        return skips if bool(skips.any()) else None

    def _step(self, i, unit_from, forward, generator):
        """One layer of a batch of walks: returns (edge ids, next layer, next unit)."""
        if forward:
            u = unit_from
            o = self.fwd[i].sample(u, generator)
            reached = o
            targets, offsets, bounds = self.out_links[i]
            skips = self.out_skips[i]
        else:
            o = unit_from
            u = self.bwd[i].sample(o, generator)
            reached = u
            targets, offsets, bounds = self.in_links[i]
            skips = self.in_skips[i]
        pair = o * self.units_in[i] + u
        edges = self.offset[i] + pair * self.kernel[i] + self.elem[i].sample(pair, generator)
        if len(targets) == 0:  # a layer whose output reaches nothing growable nor the output
            return edges, torch.full_like(reached, -1), reached
        # a unit may continue into several layers: pick one uniformly among those it connects to
        shifted = reached.unsqueeze(1) + offsets if forward else reached.unsqueeze(1) - offsets
        eligible = (shifted >= 0) & (shifted < bounds)
        if skips is not None:  # drop a link that jumps over another this unit could take
            eligible &= ~(eligible.to(torch.float32) @ skips.t().to(torch.float32)).bool()
        count = eligible.sum(1)
        if len(targets) == 1:
            choice = torch.zeros_like(count)
        else:
            r = (torch.rand(count.shape, generator=generator, dtype=torch.float64, device=self.device) * count).long()
            choice = ((eligible.cumsum(1) - 1 == r.unsqueeze(1)) & eligible).int().argmax(1)
        nxt = torch.where(count > 0, targets[choice], torch.full_like(choice, -1))
        nxt_unit = shifted.gather(1, choice.unsqueeze(1)).squeeze(1)
        return edges, nxt, nxt_unit

    def walks(self, n: int, first: int, forward: bool, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Run walks number first..first+n-1 of one direction; return (edge ids, walk position)."""
        starts_layer, starts_unit = (self.start_layer, self.start_unit) if forward else (self.end_layer, self.end_unit)
        pick = (first + torch.arange(n, device=self.device)) % len(starts_layer)
        layer, unit = starts_layer[pick].clone(), starts_unit[pick].clone()
        edges, owners = [], []
        for i in range(len(self.order)) if forward else reversed(range(len(self.order))):
            sel = (layer == i).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            e, nxt, nxt_unit = self._step(i, unit[sel], forward, generator)
            edges.append(e)
            owners.append(sel)
            layer[sel] = nxt
            unit[sel] = nxt_unit
        return torch.cat(edges), torch.cat(owners)

    def run(self, target: int, generator: torch.Generator) -> torch.Tensor:
        active = torch.zeros(self.total, dtype=torch.bool, device=self.device)
        count = 0
        n_fwd = n_bwd = 0  # walks kept so far, to continue the round-robin over start units
        rate = 1.0 * len(self.order)  # new edges per walk, updated from each batch
        stalled = 0
        while count < target:
            if rate > 0:
                pairs = int(min(_MAX_PAIRS, max(_MIN_PAIRS, math.ceil(1.25 * (target - count) / (2 * rate)))))
            else:
                pairs = _MAX_PAIRS
            ef, of = self.walks(pairs, n_fwd, True, generator)
            eb, ob = self.walks(pairs, n_bwd, False, generator)
            # forward and backward walks alternate: positions 0, 2, 4, ... and 1, 3, 5, ...
            edges = torch.cat([ef, eb])
            owner = torch.cat([2 * of, 2 * ob + 1])
            unique, inverse = torch.unique(edges, return_inverse=True)
            first = torch.full(unique.shape, 2 * pairs, dtype=torch.long, device=self.device)
            first = first.scatter_reduce(0, inverse, owner, reduce="amin")
            new = ~active[unique]
            per_walk = torch.bincount(first[new], minlength=2 * pairs)
            cumulative = count + per_walk.cumsum(0)
            hit = (cumulative >= target).nonzero()
            cut = int(hit[0]) if hit.numel() else 2 * pairs - 1
            active[unique[new & (first <= cut)]] = True
            added = int(cumulative[cut]) - count
            count += added
            n_fwd += cut // 2 + 1
            n_bwd += (cut + 1) // 2
            rate = added / (cut + 1)
            stalled = stalled + 1 if added == 0 and pairs == _MAX_PAIRS else 0
            if stalled >= _STALL_BATCHES:
                raise ValueError(
                    f"PHEW walks stopped finding new edges at density {count / self.total:.4f} below the "
                    f"requested density {target / self.total:.4f}: edges with zero weight are never walked; "
                    "build the masks from non-zero initial weights or ask for a lower density")
        return active


def phew_masks(model: nn.Module, density: float, generator: torch.Generator, example_input: torch.Tensor) -> Masks:
    """PHEW masks at ``density`` (fraction of growable edges kept), from the model's current weights.

    ``example_input`` is one batch of inputs (a single sample is enough), used only to trace the
    model's layer graph. All randomness comes from ``generator``; the walks run on its device and the
    masks are returned on each weight's device.
    """
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    params = growable_parameters(model)
    density = float(density)
    if density == 1.0:
        return {name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()}
    graph = layer_graph(model, example_input)
    walker = _Walker(graph, params, generator.device)
    target = max(1, math.ceil(density * walker.total - 1e-9))
    active = walker.run(target, generator)
    masks = {}
    for name, start, numel in zip(walker.order, walker.offset, walker.numel):
        p = params[name]
        masks[name] = active[start:start + numel].reshape(p.shape).to(p.device)
    return {name: masks[name] for name in params}


@SEED_BUILDERS.register("phew")
def phew_seed(model: nn.Module, density: float, generator: torch.Generator, example_input: torch.Tensor) -> Masks:
    return phew_masks(model, density, generator, example_input)
