"""Masks: one bool tensor per growable weight, keyed by parameter name.

A model may declare its growable weights with a ``growable_weights()`` method returning
parameter names; otherwise every Linear and Conv2d weight is growable.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

Masks = dict[str, torch.Tensor]


def growable_weight_names(model: nn.Module) -> list[str]:
    declared = getattr(model, "growable_weights", None)
    if callable(declared):
        names = list(declared())
        params = dict(model.named_parameters())
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"{type(model).__name__}.growable_weights() names unknown parameters {unknown}")
        return names
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            names.append(f"{module_name}.weight" if module_name else "weight")
    return names


def growable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    return {name: params[name] for name in growable_weight_names(model)}


def dense_masks(model: nn.Module) -> Masks:
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in growable_parameters(model).items()}


def count_active(masks: Mapping[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in masks.values()))


def count_total(masks: Mapping[str, torch.Tensor]) -> int:
    return int(sum(m.numel() for m in masks.values()))


def density(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of growable edges that are present (density, never sparsity)."""
    total = count_total(masks)
    return count_active(masks) / total if total else 1.0


def layer_densities(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(m.sum()) / m.numel() for name, m in masks.items()}


# Per model: the masks the lists below were made from, their identity and version, the masked
# parameters and the masks as 0/1 tensors of each parameter's dtype, device and memory format.
_PAIRS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _mask_key(masks: Mapping[str, torch.Tensor]) -> tuple:
    # A replaced mask changes its id, one changed in place its version counter.
    return tuple((name, id(m), m._version) for name, m in masks.items())


def masked_pairs(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
    """The masked parameters of `model` and their masks as 0/1 tensors shaped, typed and laid out
    like the parameters (so one fused multiply applies them), cached until the masks change (a
    new dict, a replaced mask, a mask changed in place) or a parameter moves or changes dtype."""
    hit = _PAIRS.get(model)
    key = _mask_key(masks)
    if hit is not None and hit[0] is masks and hit[1] == key:
        params, factors = hit[2], hit[3]
        if all(p.device == f.device and p.dtype == f.dtype for p, f in zip(params, factors)):
            return params, factors
    named = dict(model.named_parameters())
    params = [named[name] for name in masks]
    with torch.no_grad():
        # x * 1.0 is x and x * 0.0 is what x * False gives: the bool masks' exact semantics.
        factors = [torch.empty_like(p).copy_(m) for p, m in zip(params, masks.values())]
    # The mask tensors are held too, so that no new tensor can take the id of a cached one.
    _PAIRS[model] = (masks, key, params, factors, tuple(masks.values()))
    return params, factors


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every absent weight in place (one fused multiply over all masked weights)."""
    if not masks:
        return
    params, factors = masked_pairs(model, masks)
    torch._foreach_mul_(params, factors)


@torch.no_grad()
def mask_gradients(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the gradient of every absent weight in place (parameters without a gradient are skipped)."""
    if not masks:
        return
    params, factors = masked_pairs(model, masks)
    grads = [p.grad for p in params]
    if all(g is not None for g in grads):
        torch._foreach_mul_(grads, factors)
        return
    present = [(g, f) for g, f in zip(grads, factors) if g is not None]
    if present:
        torch._foreach_mul_([g for g, _ in present], [f for _, f in present])


@torch.no_grad()
def mask_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every optimizer-state tensor (momentum, Adam moments) at absent positions."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        state = optimizer.state.get(params[name])
        if not state:
            continue
        for value in state.values():
            if torch.is_tensor(value) and value.shape == mask.shape:
                value.mul_(mask)


def save_masks(path: str | Path, masks: Mapping[str, torch.Tensor]) -> None:
    from growth.records import atomic_torch_save

    atomic_torch_save({name: m.detach().to("cpu", torch.bool) for name, m in masks.items()}, path)


def load_masks(path: str | Path, model: nn.Module | None = None) -> Masks:
    """Load masks; with a model, check that names and shapes match its growable weights."""
    masks = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(masks, dict) or not all(torch.is_tensor(m) for m in masks.values()):
        raise ValueError(f"{path} does not hold a masks file (a dict of bool tensors)")
    masks = {name: m.to(torch.bool) for name, m in masks.items()}
    if model is not None:
        check_masks_fit(masks, model, source=str(path))
    return masks


def check_masks_fit(masks: Mapping[str, torch.Tensor], model: nn.Module, source: str = "masks") -> None:
    params = growable_parameters(model)
    missing = sorted(set(params) - set(masks))
    extra = sorted(set(masks) - set(params))
    if missing or extra:
        raise ValueError(f"{source} does not fit {type(model).__name__}: missing {missing}, unexpected {extra}")
    wrong = {n: (tuple(masks[n].shape), tuple(p.shape)) for n, p in params.items() if masks[n].shape != p.shape}
    if wrong:
        raise ValueError(f"{source} does not fit {type(model).__name__}: shape (mask, weight) mismatch {wrong}")


def _top(flat: torch.Tensor, density: float) -> torch.Tensor:
    """A bool vector marking the round(density x n) highest entries (at least one; ties by position)."""
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.sort(flat, descending=True, stable=True).indices[: min(flat.numel(), max(1, round(density * flat.numel())))]] = True
    return keep


def masks_keeping_highest(scores: Mapping[str, torch.Tensor], density: float, scope: str = "global") -> Masks:
    """Masks keeping the `density` fraction of edges with the highest scores: over all layers at
    once (`global`) or in every layer (`layer`); at least one edge per layer in either case, ties
    broken by position (stable), so the count is exact."""
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if scope == "layer":
        return {n: _top(s.flatten(), density).view_as(s) for n, s in scores.items()}
    keep = _top(torch.cat([s.flatten().double() for s in scores.values()]), density)
    out = dict(zip(scores, (part.view_as(s) for part, s in zip(keep.split([s.numel() for s in scores.values()]), scores.values()))))
    for name, s in scores.items():  # a layer left empty would cut every path: keep its best edge
        if not out[name].any():
            out[name] = _top(s.flatten(), 0.0).view_as(s)
    return out
