"""``PerClassMetricsTable``: at the end of testing, one row per label with its test metrics, logged to the run as
an MLflow table (``log_table``), shown in the run's artifacts and comparable across runs in the UI."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn


class PerClassMetricsTable(L.Callback):
    """Rows ``label, dice, iou, ...`` from the ``test/<metric>_<label>`` values the module logged, plus a ``mean``
    row from ``test/<metric>``; saved as ``artifact_file`` in the trainer's MLflow run. Rank zero only."""

    def __init__(
        self,
        metrics: tuple[str, ...] | list[str] = ("dice", "iou"),
        artifact_file: str = "test/per_class_metrics.json",
        stage: str = "test",
    ):
        self.metrics = list(metrics)
        self.artifact_file = artifact_file
        self.stage = stage

    def table(self, labels: list[str], logged: dict) -> dict[str, list]:
        columns = [m for m in self.metrics if any(f"{self.stage}/{m}_{label}" in logged for label in labels)]
        rows = [*labels, "mean"]
        table: dict[str, list] = {"label": rows}
        for metric in columns:
            keys = [f"{self.stage}/{metric}_{label}" for label in labels] + [f"{self.stage}/{metric}"]
            table[metric] = [float(logged[k]) if k in logged else None for k in keys]
        return table

    def on_test_end(self, trainer, pl_module) -> None:
        from datamint_lightning.training.callbacks.mlflow_run import trainer_run

        labels = list(getattr(pl_module, "labels", []) or [])
        if not trainer.is_global_zero or not labels:
            return
        table = self.table(labels, trainer.callback_metrics)
        client, run_id = trainer_run(trainer)
        if client is None or len(table) == 1:
            return
        try:
            client.log_table(run_id, data=table, artifact_file=self.artifact_file)
        except Exception as error:  # reporting must never fail the run
            rank_zero_warn(f"Could not log the per-class metrics table to MLflow run {run_id}: {error}")
