"""Strategies: which channels to remove.

The classic callables pick indices from one weight tensor::

    tp.strategy.L1Strategy()(model.conv1.weight, amount=0.4, round_to=16)

``amount`` below 1 is a fraction of the channels, an ``int`` of at least 1 a count;
``round_to`` keeps the *remaining* count a multiple (hardware-friendly widths). Scoring
functions (``SCORERS``) rate every channel of a whole coupled group (see ``groups``).
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from typing import Sequence

import torch

from .errors import InvalidAmountError
from .index_mapping import round_remaining


def resolve_amount(amount, n: int, round_to: int | None = 1, where: str = "the layer") -> int:
    """How many of ``n`` channels ``amount`` means, after ``round_to``. Validates both."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise InvalidAmountError(f"amount for {where} must be a number (a fraction in (0, 1) "
                                 f"or a count), got {amount!r}")
    if isinstance(amount, float) and math.isnan(amount):
        raise InvalidAmountError(f"amount for {where} is NaN; pass a fraction in (0, 1) such "
                                 f"as 0.3")
    if amount <= 0:
        raise InvalidAmountError(f"amount for {where} must be positive, got {amount}; pass a "
                                 f"fraction in (0, 1) or a count of channels >= 1")
    if isinstance(amount, float) and amount >= 1:
        if float(amount).is_integer() and amount > 1:
            amount = int(amount)
        else:
            raise InvalidAmountError(
                f"amount {amount} as a fraction would remove every channel of {where}; pass a "
                f"fraction below 1 (e.g. 0.3) or an int count of channels")
    round_to = int(round_to or 1)
    if round_to < 1:
        raise InvalidAmountError(f"round_to must be >= 1, got {round_to}")
    if round_to > n:
        raise InvalidAmountError(
            f"round_to={round_to} is larger than the {n} channels of {where}; use a round_to "
            f"of at most {n}")
    k = int(amount * n) if isinstance(amount, float) else int(amount)
    if k >= n:
        raise InvalidAmountError(
            f"amount {amount} would remove all {n} channels of {where}; keep at least one")
    return round_remaining(n, k, round_to)


class BaseStrategy(ABC):
    def __call__(self, weights: torch.Tensor, amount=0.0, round_to: int = 1) -> list[int]:
        return self.apply(weights, amount=amount, round_to=round_to)

    def apply(self, weights: torch.Tensor, amount=0.0, round_to: int = 1) -> list[int]:
        if isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount == 0:
            return []  # as 0.2.x: nothing asked, nothing picked
        n = len(weights)
        k = resolve_amount(amount, n, round_to, f"a weight of shape {list(weights.shape)}")
        if k <= 0:
            return []
        scores = self.scores(weights)
        order = torch.argsort(scores, stable=True)
        return sorted(int(i) for i in order[:k].tolist())

    @abstractmethod
    def scores(self, weights: torch.Tensor) -> torch.Tensor:
        """One importance score per output channel (dim 0); lower is pruned first."""


class RandomStrategy(BaseStrategy):
    """Random channels. Without a seed it draws from Python's global ``random`` (so
    ``random.seed(0)`` makes a classic script repeatable); with one, from its own stream."""

    def __init__(self, seed: int | None = None):
        self.rng = random.Random(seed) if seed is not None else random

    def scores(self, weights):
        return torch.tensor([self.rng.random() for _ in range(len(weights))])


class LNStrategy(BaseStrategy):
    def __init__(self, p: float):
        self.p = p

    def scores(self, weights):
        w = weights.detach().reshape(len(weights), -1).float()
        return torch.linalg.vector_norm(w, ord=self.p, dim=1)


class L1Strategy(LNStrategy):
    def __init__(self):
        super().__init__(p=1)


class L2Strategy(LNStrategy):
    def __init__(self):
        super().__init__(p=2)


def round_pruning_amount(total_parameters: int, n_to_prune: int, round_to: int) -> int:
    """Classic helper: adjust ``n_to_prune`` so the remaining count is a multiple of round_to."""
    return round_remaining(total_parameters, n_to_prune, round_to)


STRATEGIES = {"random": RandomStrategy, "l1": L1Strategy, "l2": L2Strategy}


def pick_lowest(scores: Sequence[float], k: int) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return sorted(order[:k])
