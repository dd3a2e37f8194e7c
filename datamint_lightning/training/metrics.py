"""Segmentation metrics of label maps (background + K labels), accumulated over an epoch and synchronised
across DDP ranks by torchmetrics: per-patient Dice/IoU over whole volumes (``PerPatientDice``, fed slice batches
with a patient index) and per-label Dice/IoU of torchmetrics (``SegmentationScores``: pooled, or per item for
whole 3D volumes), named ``<stage>/dice``, ``<stage>/dice_<label>``, ``<stage>/iou``, ``<stage>/iou_<label>``."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


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
        # after a DDP sync torchmetrics has already concatenated the list states into tensors
        empty = isinstance(self.patients, list) and not self.patients
        patients = torch.zeros(0, dtype=torch.long) if empty else dim_zero_cat(self.patients)
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

    def compute_iou(self) -> torch.Tensor:
        """Per-class IoU averaged over patients, from the same sums (IoU = Dice / (2 - Dice) per patient)."""
        dice = self.per_patient()[1]
        if not len(dice):
            return torch.full((self.num_classes - 1,), torch.nan)
        return (dice / (2 - dice)).nanmean(dim=0)


class SegmentationScores(torch.nn.Module):
    """Dice and IoU per label, from ``update(preds, target)`` with integer label maps (N, ...) of any rank.

    ``per_sample=False`` (2D slices): intersections and sizes are summed over the whole epoch, so empty slices
    cannot inflate the score. ``per_sample=True`` (whole 3D volumes): each volume is scored on its own and the
    scores are averaged over volumes (per-patient Dice). A label absent from prediction and target is left out
    of the means and logged as 0.
    """

    def __init__(self, labels: list[str], per_sample: bool = False):
        super().__init__()
        from torchmetrics.classification import MulticlassJaccardIndex
        from torchmetrics.segmentation import DiceScore, MeanIoU

        self.labels = list(labels)
        classes = len(self.labels) + 1
        self.dice = DiceScore(
            num_classes=classes,
            include_background=False,
            average="none",
            aggregation_level="samplewise" if per_sample else "global",
            input_format="index",
        )
        # MeanIoU averages per sample (skipping samples where a label is absent); the Jaccard index is global.
        self.iou = (
            MeanIoU(num_classes=classes, include_background=False, per_class=True, input_format="index")
            if per_sample
            else MulticlassJaccardIndex(classes, average="none", zero_division=float("nan"))
        )
        self.per_sample = per_sample

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.dice.update(preds, target)
        self.iou.update(preds, target)

    def compute(self, stage: str) -> dict[str, torch.Tensor]:
        """``{stage}/dice``, ``{stage}/iou`` (means over the labels scored) and one value per label."""
        results = {}
        iou = self.iou.compute().reshape(-1).float()
        iou = torch.where(iou < 0, torch.nan, iou) if self.per_sample else iou[1:]  # MeanIoU: -1 = never present
        for name, values in (("dice", self.dice.compute().reshape(-1).float()), ("iou", iou)):
            valid = values[~values.isnan()]
            results[f"{stage}/{name}"] = valid.mean() if len(valid) else torch.tensor(0.0)
            for label, value in zip(self.labels, values):
                results[f"{stage}/{name}_{label}"] = torch.nan_to_num(value, nan=0.0)
        return results

    def reset(self) -> None:
        self.dice.reset()
        self.iou.reset()
