"""Dice accumulated over an epoch (global, per class), synchronised across DDP ranks by torchmetrics."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class DiceScore(Metric):
    """Per-class Dice of label maps, from intersections and sizes summed over the whole epoch.

    A class absent from both prediction and target over the epoch scores NaN and is left out of the mean.
    """

    full_state_update = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.add_state("intersection", torch.zeros(num_classes - 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_classes - 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        for index in range(1, self.num_classes):
            predicted, actual = preds == index, target == index
            self.intersection[index - 1] += (predicted & actual).sum()
            self.total[index - 1] += predicted.sum() + actual.sum()

    def compute(self) -> torch.Tensor:
        return torch.where(self.total > 0, 2 * self.intersection / self.total.clamp(min=1), torch.nan).float()
