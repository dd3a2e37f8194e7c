"""``MLflowModelCheckpoint``: Lightning's ModelCheckpoint that logs every checkpoint to the MLflow run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class MLflowModelCheckpoint(ModelCheckpoint):
    """Keeps ``ModelCheckpoint``'s monitor/mode/save_top_k/save_last semantics and mirrors the files to MLflow.

    Each checkpoint is uploaded to ``<artifact_dir>/`` of the run as soon as it is written (so a crash loses
    nothing already saved); files that top-k evicts are deleted from the run too. The best score, its step and
    file name are kept as run tags (``checkpoint.best_*``). Only global rank zero talks to MLflow.
    """

    def __init__(self, *args: Any, tracking_uri: str | None = None, run_id: str | None = None,
                 artifact_dir: str = "checkpoints", **kwargs: Any):
        kwargs.setdefault("auto_insert_metric_name", False)  # '=' and '/' make awkward artifact names
        super().__init__(*args, **kwargs)
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.artifact_dir = artifact_dir
        self.uploaded: list[str] = []

    def attach(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri, self.run_id = tracking_uri, run_id

    @property
    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and self.run_id:
            self._upload(filepath)
            self._record_best(trainer.global_step if filepath == self.best_model_path else None)

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero and self.run_id and Path(filepath).name in self.uploaded:
            self._delete_uploaded(Path(filepath).name)

    def _upload(self, filepath: str) -> None:
        try:
            self._client.log_artifact(self.run_id, filepath, self.artifact_dir)
            if Path(filepath).name not in self.uploaded:
                self.uploaded.append(Path(filepath).name)
        except Exception as error:  # keep training; the file stays on disk
            log.warning("Could not upload checkpoint %s to MLflow run %s: %s", filepath, self.run_id, error)

    def _delete_uploaded(self, name: str) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            run = self._client.get_run(self.run_id)
            get_artifact_repository(run.info.artifact_uri).delete_artifacts(f"{self.artifact_dir}/{name}")
            self.uploaded.remove(name)
        except Exception as error:
            log.warning("Could not delete evicted checkpoint %s from MLflow run %s: %s", name, self.run_id, error)

    def _record_best(self, step: int | None) -> None:
        if not self.best_model_path:
            return
        tags = {} if step is None else {"checkpoint.best_step": str(step)}
        tags |= {"checkpoint.best": f"{self.artifact_dir}/{Path(self.best_model_path).name}",
                "checkpoint.monitor": str(self.monitor), "checkpoint.mode": self.mode}
        if self.best_model_score is not None:
            tags["checkpoint.best_score"] = f"{float(self.best_model_score):.6g}"
        try:
            for key, value in tags.items():
                self._client.set_tag(self.run_id, key, value)
        except Exception as error:
            log.warning("Could not tag MLflow run %s with the best checkpoint: %s", self.run_id, error)
