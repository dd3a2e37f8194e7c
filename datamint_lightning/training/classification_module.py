"""The LightningModule for 2D image classification: multi-class (softmax) or multi-label (sigmoid)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from datamint_lightning.errors import ConfigError
from datamint_lightning.networks import build_network


class ClassificationModule(L.LightningModule):
    """A torchvision or timm classifier, cross-entropy (multi-class) or BCE with logits (multi-label), AdamW with
    cosine decay; logs ``val/accuracy``, ``val/f1`` (macro), ``val/auroc`` and ``val/auroc_<label>`` (and
    ``test/...``), and at test time a per-class table, the confusion matrix and ROC curves to the MLflow run.

    ``network``: ``{"library": "torchvision" | "timm", "arch": ..., "in_channels": 1, "pretrained": false, ...}``;
    ``pretrained: true`` copies ImageNet weights from the local cache (never downloaded) and fails at once,
    naming the file it looked for, when they are not there. Only plain values are saved as hyperparameters, so
    checkpoints load with ``weights_only=True``. Customise by subclassing (``build_network``, ``compute_loss``,
    ``configure_optimizers``).
    """

    def __init__(
        self,
        network: dict[str, Any],
        labels: list[str],
        multilabel: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the full config is logged already
        self.labels, self.multilabel = list(labels), bool(multilabel)
        if len(self.labels) < 2 and not self.multilabel:
            raise ConfigError(f"Multi-class classification needs at least 2 labels; got {self.labels}.")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels={self.labels} must be distinct.")
        if scheduler not in ("cosine", "none"):
            raise ConfigError(f"model.scheduler={scheduler!r} is not one of cosine, none.")
        network = dict(network)
        pretrained = bool(network.pop("pretrained", False))
        # The architecture alone: serving rebuilds it and loads the trained weights, whatever initialised them.
        self.network_config = {"library": "torchvision", "in_channels": 1, **network, "num_classes": len(self.labels)}
        self.net = self.build_network(self.network_config)
        if pretrained:
            from datamint_lightning.networks.classifiers import load_pretrained

            load_pretrained(self.net, self.network_config)
        self.metrics = torch.nn.ModuleDict({stage: self._metrics() for stage in ("val", "test")})
        self.test_curves = self._curves()

    # ---- network and loss ---------------------------------------------------------------------------------
    def build_network(self, config: dict[str, Any]) -> torch.nn.Module:
        return build_network(config, library="torchvision").train()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class scores as the packaged model gives them: sigmoid (multi-label) or softmax (multi-class)."""
        return logits.sigmoid() if self.multilabel else logits.softmax(dim=1)

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, target.float())
        return F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)

    # ---- metrics ------------------------------------------------------------------------------------------
    def _task_args(self) -> dict[str, Any]:
        count = len(self.labels)
        return (
            {"task": "multilabel", "num_labels": count}
            if self.multilabel
            else {"task": "multiclass", "num_classes": count}
        )

    def _metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import AUROC, Accuracy, F1Score

        args = self._task_args()
        return MetricCollection(
            {
                "accuracy": Accuracy(average="micro", **args),
                "f1": F1Score(average="macro", **args),
                "auroc": AUROC(average=None, **args),
            }
        )

    def _curves(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import ROC, ConfusionMatrix, F1Score, Precision, Recall

        args = self._task_args()
        return MetricCollection(
            {
                "confusion": ConfusionMatrix(**args),
                "roc": ROC(**args),
                "precision": Precision(average=None, **args),
                "recall": Recall(average=None, **args),
                "f1": F1Score(average=None, **args),
            }
        )

    @staticmethod
    def _target(batch: dict[str, Any]) -> torch.Tensor:
        return batch["label"]  # (B,) class indices, or (B, K) multi-hot floats for multi-label

    # ---- steps --------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        target = self._target(batch)
        loss = self.compute_loss(self(batch["image"]), target)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(target))
        return loss

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        target = self._target(batch)
        logits = self(batch["image"])
        self.log(
            f"{stage}/loss", self.compute_loss(logits, target), on_epoch=True, sync_dist=True, batch_size=len(target)
        )
        probs, target = self.probabilities(logits.float()), target.long()
        self.metrics[stage].update(probs, target)
        if stage == "test":
            self.test_curves.update(probs, target)

    def _log_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        values = self.metrics[stage].compute()
        per_class = values["auroc"].reshape(-1)
        self.log(f"{stage}/accuracy", values["accuracy"], prog_bar=True)
        self.log(f"{stage}/f1", values["f1"], prog_bar=stage == "val")
        self.log(f"{stage}/auroc", per_class.nanmean())
        for name, value in zip(self.labels, per_class):
            self.log(f"{stage}/auroc_{name}", value)
        self.metrics[stage].reset()
        return values

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        from datamint_lightning.training.classification_report import ClassificationReport

        auroc = self._log_metrics("test")["auroc"].reshape(-1)
        curves = self.test_curves.compute()
        self.test_curves.reset()
        baseline = self.majority_accuracy(curves["confusion"])
        if baseline is not None:
            self.log("test/majority_accuracy", baseline)
        if self.trainer.is_global_zero:  # metric states are synchronised already: one report, from rank zero
            report = ClassificationReport(
                self.labels,
                self.multilabel,
                curves["confusion"],
                curves["roc"],
                {"precision": curves["precision"], "recall": curves["recall"], "f1": curves["f1"], "auroc": auroc},
            )
            report.log_to(self.trainer.loggers)

    def majority_accuracy(self, confusion: torch.Tensor) -> torch.Tensor | None:
        """The trivial baseline: test accuracy of always answering the training split's most frequent class
        (multi-class, when the datamodule counted its classes)."""
        counts = (getattr(getattr(self.trainer, "datamodule", None), "label_counts", None) or {}).get("train")
        if self.multilabel or not counts:
            return None
        majority = max(range(len(self.labels)), key=lambda i: counts.get(self.labels[i], 0))
        support = confusion.sum(dim=1).float()
        return support[majority] / support.sum().clamp(min=1)

    def configure_optimizers(self):
        from datamint_lightning.training.optimizers import adamw_cosine

        return adamw_cosine(self)
