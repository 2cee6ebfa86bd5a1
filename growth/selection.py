"""Choosing the edges to grow: how many (a growth step), and which, from the scores of the absent ones."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from growth.masks import Masks, count_active, count_total
from growth.sampling import sample_without_replacement, topk_indices, uniform_without_replacement


def select_edges(
    candidate_scores: torch.Tensor | None,
    n_candidates: int,
    k: int,
    selection: str,
    temperature: float,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, int]:
    """Indices into the candidate list, and how many of them were drawn with zero score.

    ``sample`` draws proportional to score^(1/temperature) without replacement; edges of score 0
    (no path through them) cannot be drawn by that law, so when fewer positive-score edges remain
    than requested, the rest are drawn uniformly among the zero-score ones (recorded).

    The work runs where the scores are (on ``device``, default the CPU, when there are none).
    Every random draw comes from ``generator``; with the run's CPU generator the uniforms are
    drawn on the host and copied to the device, so the stream (and, but for the last bit of the
    device's log in the sampling keys, the edges drawn) is the same on every device.
    """
    if candidate_scores is None:
        device = torch.device("cpu") if device is None else torch.device(device)
        return uniform_without_replacement(n_candidates, k, generator, generator.device).to(device), 0
    # Softmax attention (kept in the ViT's scoring pass) has a derivative of either sign, so a
    # few path sums come out negative; such edges count as score 0 (no positive path through them).
    scores = candidate_scores.detach().to(torch.float64).clamp(min=0.0)
    if selection == "topk":
        return topk_indices(scores, k), 0
    # Normalise before the power: PWMP scores reach 1e51 and would overflow for temperature < 1.
    top = scores.max() if len(scores) else scores.new_zeros(())
    weights = (scores / top).pow(1.0 / temperature) if top > 0 else torch.zeros_like(scores)
    positive = int((weights > 0).sum())
    take = min(k, positive)
    chosen = (
        sample_without_replacement(weights, take, generator)
        if take
        else torch.empty(0, dtype=torch.long, device=scores.device)
    )
    fill = k - take
    if fill:
        zero = torch.nonzero(weights <= 0).squeeze(1)
        picks = uniform_without_replacement(len(zero), fill, generator, generator.device).to(scores.device)
        chosen = torch.cat([chosen, zero[picks]])
    return chosen, fill


def grow_masks(
    masks: Masks, scores: Mapping[str, torch.Tensor] | None, k: int, selection: str, temperature: float, generator
) -> tuple[Masks, int]:
    """New masks with k absent edges added, chosen globally over all layers.

    Runs on the scores' device (the masks' for random growth): nothing of the size of the network
    goes to the host. The new masks are on the devices of the old ones."""
    names = list(masks)
    if not names:
        return {}, 0
    source = scores[names[0]] if scores is not None else masks[names[0]]
    device = source.device
    flat_mask = torch.cat([masks[n].detach().flatten().to(device) for n in names])
    candidates = torch.nonzero(~flat_mask).squeeze(1)
    cand_scores = None
    if scores is not None:
        flat_scores = torch.cat([scores[n].detach().flatten().to(device, torch.float64) for n in names])
        cand_scores = flat_scores[candidates]
    chosen, zero_filled = select_edges(cand_scores, len(candidates), k, selection, temperature, generator, device)
    flat_mask[candidates[chosen]] = True
    out, offset = {}, 0
    for n in names:
        size = masks[n].numel()
        out[n] = flat_mask[offset : offset + size].view_as(masks[n]).to(masks[n].device)
        offset += size
    return out, zero_filled


def edges_to_grow(masks: Masks, growth_ratio: float, max_density: float) -> int:
    active, total = count_active(masks), count_total(masks)
    cap = min(total, math.floor(max_density * total + 1e-9)) - active
    n_new = round((growth_ratio - 1.0) * active)
    return max(0, min(max(n_new, 1), cap))


def nearest_rounds(round_densities: list[float], wanted: list[float]) -> list[int]:
    """The rounds whose density is nearest (in log density) to each wanted density, in order, once each."""
    if not round_densities:
        return []
    picked = {min(range(len(round_densities)), key=lambda r: abs(math.log(round_densities[r] / d))) for d in wanted}
    return sorted(picked)
