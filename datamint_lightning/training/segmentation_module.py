"""The LightningModule for 2D semantic segmentation (background + K labels, softmax)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from datamint_lightning.training.metrics import DiceScore, PerPatientDice
from datamint_lightning.networks import build_network


class SegmentationModule(L.LightningModule):
    """Network, Dice + cross-entropy loss, AdamW with cosine decay, and ``val/dice`` style metrics.

    Customise by subclassing and overriding ``build_network``, ``compute_loss`` or ``configure_optimizers``.
    Only plain values are saved as hyperparameters, so checkpoints load with ``weights_only=True``.
    """

    def __init__(self, network: dict[str, Any], labels: list[str], lr: float = 1e-3, weight_decay: float = 1e-4,
                 dice_weight: float = 1.0, ce_weight: float = 1.0, scheduler: str = "cosine"):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the full config is logged already
        self.labels = list(labels)
        self.network_config = {"in_channels": 1, **dict(network), "classes": len(self.labels) + 1}
        self.net = self.build_network(self.network_config)
        # ``<stage>/dice``: per-patient Dice over whole volumes, averaged over patients; ``<stage>/dice_pooled``:
        # every voxel of the split pooled into one Dice.
        metrics = {f"{stage}_dice": PerPatientDice(len(self.labels) + 1) for stage in ("val", "test")}
        metrics |= {f"{stage}_dice_pooled": DiceScore(len(self.labels) + 1) for stage in ("val", "test")}
        self.dice = torch.nn.ModuleDict(metrics)

    def build_network(self, config: dict[str, Any]) -> torch.nn.Module:
        return build_network(config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target)
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
        dims = (0, 2, 3)
        soft_dice = (2 * (probs * onehot).sum(dims) + 1.0) / (probs.sum(dims) + onehot.sum(dims) + 1.0)
        return self.hparams.ce_weight * ce + self.hparams.dice_weight * (1 - soft_dice[1:].mean())

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        target = batch["label"][:, 0]
        loss = self.compute_loss(self(batch["image"]), target)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(target))
        return loss

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        target = batch["label"][:, 0]
        logits = self(batch["image"])
        self.log(f"{stage}/loss", self.compute_loss(logits, target), on_epoch=True, sync_dist=True,
                 batch_size=len(target))
        preds = logits.argmax(dim=1)
        patients = batch.get("patient_index", torch.zeros(len(target), dtype=torch.long))  # absent: one patient
        self.dice[f"{stage}_dice"].update(preds, target, patients)
        self.dice[f"{stage}_dice_pooled"].update(preds, target)

    def _log_dice(self, stage: str) -> None:
        metric = self.dice[f"{stage}_dice"]
        per_class = metric.compute().reshape(-1)  # torchmetrics squeezes a single class to 0-d
        valid = per_class[~per_class.isnan()]
        self.log(f"{stage}/dice", valid.mean() if len(valid) else torch.tensor(0.0), prog_bar=True)
        for name, value in zip(self.labels, per_class):
            self.log(f"{stage}/dice_{name}", torch.nan_to_num(value, nan=0.0))
        metric.reset()
        pooled = self.dice[f"{stage}_dice_pooled"].compute().reshape(-1)
        pooled = pooled[~pooled.isnan()]
        self.log(f"{stage}/dice_pooled", pooled.mean() if len(pooled) else torch.tensor(0.0))
        self.dice[f"{stage}_dice_pooled"].reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_dice("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_dice("test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.scheduler == "none":
            return optimizer
        max_epochs = self.trainer.max_epochs if self.trainer and self.trainer.max_epochs and self.trainer.max_epochs > 0 else 100
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
