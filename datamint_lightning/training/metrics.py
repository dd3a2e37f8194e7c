"""Per-label Dice and IoU of label maps (background + K labels) over an epoch, synchronised across DDP ranks by
torchmetrics, and named the way every segmentation module logs them: ``<stage>/dice``, ``<stage>/dice_<label>``,
``<stage>/iou``, ``<stage>/iou_<label>``."""

from __future__ import annotations

import torch


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
        self.dice = DiceScore(num_classes=classes, include_background=False, average="none",
                              aggregation_level="samplewise" if per_sample else "global", input_format="index")
        # MeanIoU averages per sample (skipping samples where a label is absent); the Jaccard index is global.
        self.iou = (MeanIoU(num_classes=classes, include_background=False, per_class=True, input_format="index")
                    if per_sample else
                    MulticlassJaccardIndex(classes, average="none", zero_division=float("nan")))
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
