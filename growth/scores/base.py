"""What a growth score receives and returns.

A score is registered on ``growth.kinds.SCORES`` (``method.score`` names it) as a function
``score(inputs: ScoreInputs) -> dict[str, Tensor] | None``: a non-negative float64 score for every
edge of every growable weight (absent edges are the candidates), or None for uniform selection.
It gets only what it needs, and charges what it computes to the ledger through `charge_flops`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from growth.masks import Masks


@dataclass
class ScoreInputs:
    model: nn.Module
    masks: Masks
    # One input batch (a single sample is enough), e.g. to trace the model or run one pass.
    example_input: torch.Tensor
    # Training batches as losses: each item is (loss of one batch through the training module,
    # samples in the global batch); backward() on it gives that batch's gradient on every rank.
    batch_losses: Callable[[], Iterator[tuple[torch.Tensor, int]]]
    # The weights the run started from (state dict on the CPU), e.g. for scores at initialisation.
    initial_weights: Callable[[], Mapping[str, torch.Tensor]]
    # Add FLOPs to the ledger (the current phase): what computing the score cost.
    charge_flops: Callable[[float], None]
    # FLOPs of one dense forward pass of one sample (to price passes in dense-run units).
    dense_forward_flops: float
    # The growth settings (e.g. growth.gradient_batches).
    settings: object
