"""A classifier's test report in its MLflow run: per-class metrics table, confusion matrix and ROC curves.

Artifacts (under ``test/``): ``per_class_metrics.json`` (an MLflow table: label, support, precision, recall, f1,
auroc), ``confusion_matrix.json`` (rows: true label) and ``confusion_matrix.png``, ``roc_curves.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

ARTIFACT_DIR = "test"


@dataclass
class ClassificationReport:
    labels: list[str]
    multilabel: bool
    confusion: torch.Tensor  # (K, K) multi-class, rows = true class; (K, 2, 2) multi-label
    roc: tuple[Any, Any, Any]  # torchmetrics ROC: per-class fpr, tpr, thresholds
    per_class: dict[str, torch.Tensor]  # metric name -> (K,)

    def table(self) -> dict[str, list]:
        """Columns of the per-class table; support counts the test items holding each label."""
        confusion = self.confusion.cpu()
        support = confusion[:, 1, :].sum(dim=1) if self.multilabel else confusion.sum(dim=1)
        columns: dict[str, list] = {"label": list(self.labels), "support": [int(v) for v in support]}
        for name, values in self.per_class.items():
            columns[name] = [round(float(v), 6) for v in values.reshape(-1).cpu()]
        return columns

    def confusion_table(self) -> dict[str, list]:
        if self.multilabel:  # per label: [[TN, FP], [FN, TP]]
            return {
                "label": list(self.labels),
                **{
                    key: [int(c[i, j]) for c in self.confusion.cpu()]
                    for key, (i, j) in {"tn": (0, 0), "fp": (0, 1), "fn": (1, 0), "tp": (1, 1)}.items()
                },
            }
        return {
            "true": list(self.labels),
            **{f"predicted_{name}": [int(v) for v in self.confusion[:, j].cpu()] for j, name in enumerate(self.labels)},
        }

    def figures(self) -> dict[str, Any]:
        from torchmetrics.utilities.plot import plot_confusion_matrix, plot_curve

        figure, _ = plot_confusion_matrix(self.confusion.cpu(), labels=list(self.labels))
        figure.suptitle("Test confusion matrix" + (" (per label)" if self.multilabel else " (rows: true class)"))
        roc, _ = plot_curve(
            tuple(self._cpu(part) for part in self.roc),
            score=self.per_class.get("auroc"),
            label_names=("False positive rate", "True positive rate"),
            labels=list(self.labels),
            name="Test ROC curves",
        )
        return {"confusion_matrix.png": figure, "roc_curves.png": roc}

    @staticmethod
    def _cpu(part):
        return [p.cpu() for p in part] if isinstance(part, (list, tuple)) else part.cpu()

    def log_to(self, loggers: list) -> bool:
        """Log the report to the run of the first MLflow logger in ``loggers``; False when there is none or
        the store refuses (the metrics themselves are logged already, so a report never fails a run)."""
        from lightning.pytorch.loggers import MLFlowLogger
        from lightning.pytorch.utilities import rank_zero_warn

        logger = next((lg for lg in loggers if isinstance(lg, MLFlowLogger) and lg.run_id), None)
        if logger is None:
            return False
        import matplotlib.pyplot as plt

        figures = {}
        try:
            client, run_id = logger.experiment, logger.run_id
            client.log_table(run_id, self.table(), f"{ARTIFACT_DIR}/per_class_metrics.json")
            client.log_table(run_id, self.confusion_table(), f"{ARTIFACT_DIR}/confusion_matrix.json")
            figures = self.figures()
            for name, figure in figures.items():
                client.log_figure(run_id, figure, f"{ARTIFACT_DIR}/{name}")
            return True
        except Exception as error:  # a report is a convenience; the tracked metrics are what count
            rank_zero_warn(f"Could not log the test report to MLflow run {logger.run_id}: {error}")
            return False
        finally:
            for figure in figures.values():
                plt.close(figure)
