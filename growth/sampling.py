"""Selecting which absent edges to grow: weighted sampling, top-k, uniform sampling.

All three work on a flat 1-D tensor of candidates (the caller concatenates every layer's absent
edges), stay on the tensor's device, and are one vectorised pass, so they scale to 25M+
candidates on a GPU.
"""

from __future__ import annotations

import operator

import torch

__all__ = ["sample_without_replacement", "topk_indices", "uniform_without_replacement"]


def _check_k(k, n: int, what: str) -> int:
    if isinstance(k, bool):
        raise TypeError(f"k must be an integer, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"k must be an integer, got {type(k).__name__} {k!r}") from None
    if k < 0:
        raise ValueError(f"k must be >= 0, got k={k}")
    if k > n:
        raise ValueError(f"cannot draw k={k} distinct indices: only {n} {what}")
    return k


def _check_generator(generator: torch.Generator, device: torch.device) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the candidates are on {device}; "
                         "create the generator on the candidates' device")


def _check_1d(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.is_complex():
        raise ValueError(f"{name} must be real, got dtype {t.dtype}")


def _empty(device: torch.device) -> torch.Tensor:
    return torch.empty(0, dtype=torch.long, device=device)


def sample_without_replacement(weights: torch.Tensor, k: int, generator: torch.Generator) -> torch.LongTensor:
    """Draw ``k`` distinct indices into ``weights`` by successive sampling proportional to weight.

    Successive sampling: draw one index with probability w_i / sum(w), remove it, repeat. Computed
    in one pass with Efraimidis-Spirakis keys u_i^(1/w_i), in their Gumbel form
    log(w_i) - log(-log(u_i)) (same order, but in the log domain, so tiny or huge weights neither
    underflow nor overflow), then top-k. Zero weights get key -inf and are drawn only after every
    positive weight, which the k check rules out. Keys are float64 for float64 weights, float32
    otherwise.

    Returns a LongTensor on ``weights.device`` in draw order: element 0 is the first draw.
    ``generator`` is a CPU generator (the uniforms are then drawn on the host, whatever the
    weights' device, and the keys computed on that device) or one on the weights' device.
    A temperature (probability proportional to score^(1/T)) is the caller's: pass score**(1/T).

    Raises ValueError for non-1-D, negative or non-finite weights, k < 0, or k larger than the
    number of positive weights; TypeError for a non-integer k.
    """
    _check_1d(weights, "weights")
    if not weights.is_floating_point():
        weights = weights.to(torch.float64)
    key_dtype = torch.float64 if weights.dtype == torch.float64 else torch.float32
    w = weights.to(key_dtype)
    if bool((~torch.isfinite(w)).any()):
        raise ValueError("weights contain non-finite values (inf or nan)")
    if bool((w < 0).any()):
        raise ValueError(f"weights must be non-negative; min is {float(w.min())}")
    n_pos = int((w > 0).sum())
    k = _check_k(k, n_pos, f"positive weights among {w.numel()} entries")
    if k == 0:
        return _empty(w.device)
    if not (isinstance(generator, torch.Generator) and generator.device.type == "cpu"):
        _check_generator(generator, w.device)
    # u in (0, 1): rand is [0, 1); clamping 0 away keeps every positive weight's key finite.
    # A CPU generator serves weights on any device: the uniforms are drawn on the host and
    # copied, so a run draws the same stream on every device (a run's generators are CPU ones).
    keys = torch.rand(w.shape, generator=generator, device=generator.device, dtype=key_dtype).to(w.device)
    keys.clamp_(min=torch.finfo(key_dtype).tiny)
    keys.log_().neg_().log_().neg_()  # Gumbel(0, 1) noise
    keys.add_(torch.log(w))  # log(0) = -inf: zero weights come last
    return keys.topk(k, sorted=True).indices


def topk_indices(scores: torch.Tensor, k: int) -> torch.LongTensor:
    """Indices of the ``k`` largest ``scores``, deterministic: descending score, ties by lower index.

    One topk pass finds the k-th largest value; everything above it is taken, and among the
    entries equal to it the lowest indices fill the rest (torch.topk alone breaks ties arbitrarily,
    differently on CPU and CUDA). Raises ValueError for non-1-D or non-finite scores, k < 0 or
    k > len(scores).
    """
    _check_1d(scores, "scores")
    k = _check_k(k, scores.numel(), "scores")
    if k == 0:
        return _empty(scores.device)
    if scores.is_floating_point() and bool((~torch.isfinite(scores)).any()):
        raise ValueError("scores contain non-finite values (inf or nan)")
    threshold = scores.topk(k, sorted=False).values.min()
    above = torch.nonzero(scores > threshold).flatten()
    at = torch.nonzero(scores == threshold).flatten()[: k - above.numel()]  # nonzero is ascending
    chosen = torch.cat([above, at])
    chosen, _ = chosen.sort()  # ascending index, so the stable sort below breaks ties by index
    order = torch.sort(scores[chosen], descending=True, stable=True).indices
    return chosen[order]


def uniform_without_replacement(n: int, k: int, generator: torch.Generator,
                                device: torch.device | str | None = None) -> torch.LongTensor:
    """``k`` distinct indices drawn uniformly from range(n), on ``device`` (default: the generator's)."""
    if isinstance(n, bool):
        raise TypeError(f"n must be an integer, got {n!r}")
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got n={n}")
    k = _check_k(k, n, "candidates")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = torch.device(device) if device is not None else generator.device
    if k == 0:
        return _empty(device)
    _check_generator(generator, device)
    return torch.randperm(n, generator=generator, device=device)[:k]
