"""The LightningModule for 3D semantic segmentation (background + K labels, softmax) with a MONAI network:
trained on random patches, validated and tested on whole volumes by sliding-window inference."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from datamint_lightning.networks import build_network
from datamint_lightning.training.metrics import SegmentationScores


class VolumeSegmentationModule(L.LightningModule):
    """MONAI network (``network = {"arch": "UNet" | "SegResNet" | ..., **constructor arguments}``), MONAI
    ``DiceCELoss``, AdamW with cosine decay; ``val/dice`` and ``val/dice_<label>`` are per-volume Dice averaged
    over volumes, computed on whole volumes with the sliding window the packaged model uses.

    ``roi_size`` is the sliding-window size (null: the training patch size, filled in by the trainer).
    Customise by subclassing and overriding ``build_network``, ``build_loss``, ``infer`` or ``configure_optimizers``.
    """

    def __init__(
        self,
        network: dict[str, Any],
        labels: list[str],
        roi_size: list[int] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        scheduler: str = "cosine",
        sw_batch_size: int = 4,
        overlap: float = 0.25,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the full config is logged already
        self.labels = list(labels)
        self.network_config = {
            "spatial_dims": 3,
            "in_channels": 1,
            **dict(network),
            "out_channels": len(self.labels) + 1,
        }
        self.net = self.build_network(self.network_config)
        self.loss = self.build_loss()
        self.scores = torch.nn.ModuleDict(
            {stage: SegmentationScores(self.labels, per_sample=True) for stage in ("val", "test")}
        )

    @property
    def roi_size(self) -> list[int]:
        if not self.hparams.roi_size:
            from datamint_lightning.errors import ConfigError

            raise ConfigError(
                "model.roi_size is not set: give the sliding-window size (z, y, x), or train through "
                "VolumeSegmentationTrainer, which uses data.patch_size."
            )
        return [int(s) for s in self.hparams.roi_size]

    def build_network(self, config: dict[str, Any]) -> torch.nn.Module:
        return build_network(config, library="monai")

    def build_loss(self) -> torch.nn.Module:
        from monai.losses import DiceCELoss

        # Dice over the labels only (background would dominate it); cross-entropy over every class.
        return DiceCELoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            lambda_dice=self.hparams.dice_weight,
            lambda_ce=self.hparams.ce_weight,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def infer(self, volume: torch.Tensor) -> torch.Tensor:
        """Logits of whole (N, 1, Z, Y, X) volumes, window by window, as ``serving.volume_segmentation`` does."""
        from monai.inferers import sliding_window_inference

        logits = sliding_window_inference(
            volume,
            roi_size=self.roi_size,
            sw_batch_size=self.hparams.sw_batch_size,
            predictor=self.net,
            overlap=self.hparams.overlap,
            mode="gaussian",
        )
        return torch.as_tensor(logits)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def _evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        logits = self.infer(batch["image"])
        target = batch["label"]
        self.log(f"{stage}/loss", self.loss(logits, target), on_epoch=True, sync_dist=True, batch_size=len(target))
        preds = logits.argmax(dim=1)
        self.scores[stage].update(preds, target[:, 0])
        return {"preds": preds}  # for callbacks (validation overlays), so they need no second inference

    def _log_scores(self, stage: str) -> None:
        results = self.scores[stage].compute(stage)
        self.log(f"{stage}/dice", results.pop(f"{stage}/dice"), prog_bar=True)
        self.log_dict(results)
        self.scores[stage].reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def configure_optimizers(self):
        from datamint_lightning.training.optimizers import adamw_cosine

        return adamw_cosine(self)
