"""The MLflow run a Lightning trainer logs to, found from its ``MLFlowLogger`` (so callbacks work in any script)."""

from __future__ import annotations


def trainer_run(trainer):
    """``(MlflowClient, run_id)`` of the trainer's first MLflow logger with a run, else ``(None, None)``."""
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger) and logger.run_id:
            from mlflow import MlflowClient

            return MlflowClient(logger._tracking_uri), logger.run_id
    return None, None
