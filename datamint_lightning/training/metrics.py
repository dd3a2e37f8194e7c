"""Dice accumulated over an epoch (pooled, or per patient over whole volumes), synchronised across DDP ranks
by torchmetrics."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


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


class PerPatientDice(Metric):
    """Per-class Dice of each patient's whole volume(s), averaged over patients: the 3D Dice a reader would
    compute per case, accumulated slice batch by slice batch (or volume by volume).

    ``update(preds, target, patient_index)``: label maps (N, ...) and one integer per item naming its patient.
    Intersections and sizes are summed per (patient, class) over the epoch, so a patient's slices may arrive in
    any batches and on any DDP rank. A class absent from both a patient's prediction and target is left out of
    that patient's mean (NaN); predicted but absent scores 0, so false positives on empty slices count.
    ``compute`` returns the per-class mean over patients (NaN where no patient has the class either way).
    """

    full_state_update = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.add_state("patients", [], dist_reduce_fx="cat")
        self.add_state("intersection", [], dist_reduce_fx="cat")
        self.add_state("total", [], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, patient_index: torch.Tensor) -> None:
        patient_index = torch.as_tensor(patient_index, device=preds.device).reshape(-1).long()
        if len(patient_index) != len(preds):
            raise ValueError(f"patient_index has {len(patient_index)} entries for {len(preds)} predictions.")
        preds, target = preds.reshape(len(preds), -1), target.reshape(len(target), -1)
        intersection, total = [], []
        for index in range(1, self.num_classes):  # one class at a time: whole volumes stay cheap
            predicted, actual = preds == index, target == index
            intersection.append((predicted & actual).sum(1))
            total.append(predicted.sum(1) + actual.sum(1))
        self.patients.append(patient_index)
        self.intersection.append(torch.stack(intersection, 1).double())
        self.total.append(torch.stack(total, 1).double())

    def per_patient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(patient indices (P,), Dice (P, num_classes - 1) with NaN where a class is absent for a patient)."""
        patients = dim_zero_cat(self.patients) if self.patients else torch.zeros(0, dtype=torch.long)
        if not len(patients):
            return patients, torch.full((0, self.num_classes - 1), torch.nan)
        known, rows = torch.unique(patients, return_inverse=True)
        sums = torch.zeros(2, len(known), self.num_classes - 1, dtype=torch.float64, device=patients.device)
        sums[0].index_add_(0, rows, dim_zero_cat(self.intersection))
        sums[1].index_add_(0, rows, dim_zero_cat(self.total))
        dice = torch.where(sums[1] > 0, 2 * sums[0] / sums[1].clamp(min=1), torch.nan)
        return known, dice.float()

    def compute(self) -> torch.Tensor:
        dice = self.per_patient()[1]
        if not len(dice):
            return torch.full((self.num_classes - 1,), torch.nan)
        return dice.nanmean(dim=0)
