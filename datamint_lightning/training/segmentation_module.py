"""The LightningModule for 2D semantic segmentation (background + K labels, softmax)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from monai.losses import DiceCELoss

from datamint_lightning.networks import build_network
from datamint_lightning.training.metrics import PerPatientDice, SegmentationScores


class SegmentationModule(L.LightningModule):
    """Network, Dice + cross-entropy loss, AdamW with cosine decay, and ``val/dice`` style metrics.

    Customise by subclassing and overriding ``build_network``, ``compute_loss`` or ``configure_optimizers``.
    Only plain values are saved as hyperparameters, so checkpoints load with ``weights_only=True``.
    """

    def __init__(
        self,
        network: dict[str, Any],
        labels: list[str],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        scheduler: str = "cosine",
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the full config is logged already
        self.labels = list(labels)
        self.network_config = {"in_channels": 1, **dict(network), "classes": len(self.labels) + 1}
        self.net = self.build_network(self.network_config)
        self.loss = DiceCELoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            smooth_nr=1.0,
            smooth_dr=1.0,
            lambda_dice=dice_weight,
            lambda_ce=ce_weight,
        )
        # ``<stage>/dice``, ``<stage>/iou`` (and per label): per-patient values over whole volumes, averaged over
        # patients; ``<stage>/dice_pooled``: every voxel of the split pooled into one Dice (torchmetrics).
        metrics = {f"{stage}_dice": PerPatientDice(len(self.labels) + 1) for stage in ("val", "test")}
        metrics |= {f"{stage}_dice_pooled": SegmentationScores(self.labels) for stage in ("val", "test")}
        self.dice = torch.nn.ModuleDict(metrics)

    def build_network(self, config: dict[str, Any]) -> torch.nn.Module:
        return build_network(config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MONAI's Dice + cross-entropy: soft Dice over the foreground labels (pooled over the batch), CE over all."""
        return self.loss(logits, target[:, None])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        target = batch["label"][:, 0]
        loss = self.compute_loss(self(batch["image"]), target)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(target))
        return loss

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        target = batch["label"][:, 0]
        logits = self(batch["image"])
        self.log(
            f"{stage}/loss", self.compute_loss(logits, target), on_epoch=True, sync_dist=True, batch_size=len(target)
        )
        preds = logits.argmax(dim=1)
        patients = batch.get("patient_index", torch.zeros(len(target), dtype=torch.long))  # absent: one patient
        self.dice[f"{stage}_dice"].update(preds, target, patients)
        self.dice[f"{stage}_dice_pooled"].update(preds, target)

    def _log_dice(self, stage: str) -> None:
        metric = self.dice[f"{stage}_dice"]
        for kind, per_class in (("dice", metric.compute()), ("iou", metric.compute_iou())):
            per_class = per_class.reshape(-1)  # torchmetrics squeezes a single class to 0-d
            valid = per_class[~per_class.isnan()]
            self.log(f"{stage}/{kind}", valid.mean() if len(valid) else torch.tensor(0.0), prog_bar=kind == "dice")
            for name, value in zip(self.labels, per_class):
                self.log(f"{stage}/{kind}_{name}", torch.nan_to_num(value, nan=0.0))
        metric.reset()
        pooled = self.dice[f"{stage}_dice_pooled"]
        self.log(f"{stage}/dice_pooled", pooled.compute(stage)[f"{stage}/dice"])
        pooled.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_dice("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_dice("test")

    def configure_optimizers(self):
        from datamint_lightning.training.optimizers import adamw_cosine

        return adamw_cosine(self)
