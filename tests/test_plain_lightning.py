"""Plain Lightning scripts: ``MLflowModelCheckpoint`` next to Lightning's stock ``MLFlowLogger`` (no extra call)."""

from __future__ import annotations

import lightning as L
import mlflow
from lightning.pytorch.loggers import MLFlowLogger
from test_checkpoint_uploads import Tiny

from datamint_lightning.mlflow import MLflowModelCheckpoint


def test_checkpoints_reach_the_stock_mlflow_loggers_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="plain", tracking_uri=uri, artifact_location=(tmp_path / "a").as_uri())
    checkpoint = MLflowModelCheckpoint(dirpath=tmp_path / "ckpt", filename="epoch{epoch:02d}", monitor="val/score",
                                       mode="max", save_top_k=1)
    trainer = L.Trainer(max_epochs=5, callbacks=[checkpoint], logger=logger, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(Tiny())

    client = mlflow.MlflowClient(uri)
    files = sorted(a.path for a in client.list_artifacts(logger.run_id, "checkpoints"))
    assert files == ["checkpoints/epoch03.ckpt", "checkpoints/last.ckpt"]  # top-1 (score 0.7) kept, others evicted
    tags = client.get_run(logger.run_id).data.tags
    assert tags["checkpoint.best"] == "checkpoints/epoch03.ckpt" and tags["checkpoint.best_score"] == "0.7"
    assert abs(client.get_run(logger.run_id).data.metrics["val/score"] - 0.2) < 1e-6  # the logger's own metrics, same run
