"""The training job as one function over a ``TaskTrainer``: track, fit, test the best, package, register."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datamint_lightning.errors import ConfigError


def _announce(message: str) -> None:
    from lightning.pytorch.utilities import rank_zero_info

    rank_zero_info(message)


def _open_tracking(cfg) -> str:
    import mlflow

    from datamint_lightning.tracking.tracking_uri import (check_tracking_uri, embedded_tracking_uri, redact,
                                                          resolve_tracking_uri)

    uri = resolve_tracking_uri(cfg.tracking.get("uri"))
    check_tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    if uri == embedded_tracking_uri():
        _announce(f"MLflow: embedded store {uri}\n  browse it with: mlflow ui --backend-store-uri {uri}")
    else:
        _announce(f"MLflow: tracking to {redact(uri)}")
    return uri


def _config_record(cfg) -> tuple[dict[str, Any], str, list[str]]:
    from omegaconf import OmegaConf

    from datamint_lightning.tracking.tracking_uri import redact

    resolved = OmegaConf.to_container(cfg, resolve=True)
    if resolved.get("tracking", {}).get("uri"):
        resolved["tracking"]["uri"] = redact(resolved["tracking"]["uri"])
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # composed from Python, not run by Hydra
        pass
    return resolved, OmegaConf.to_yaml(OmegaConf.create(resolved)), overrides


def _log_dataset_inputs(datamodule, run) -> None:
    """Log each split as an MLflow dataset input (context train/val/test) when the datamodule describes them."""
    describe = getattr(datamodule, "mlflow_datasets", None)
    if describe is None:
        return
    import mlflow
    from mlflow.entities import InputTag

    datamodule.setup("fit")
    for context, dataset in describe().items():
        mlflow.MlflowClient(run.tracking_uri).log_inputs(run.run_id, datasets=[mlflow.entities.DatasetInput(
            dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])


def run_task(task) -> dict[str, Any]:
    """Run ``task`` end to end; the MLflow run ends FINISHED, FAILED (with the error) or KILLED."""
    import lightning as L
    from lightning.pytorch.loggers import MLFlowLogger

    from datamint_lightning.tracking.model_checkpoint import MLflowModelCheckpoint
    from datamint_lightning.tracking.training_run import RUN_ID_ENV, join_or_start_run

    cfg = task.cfg
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    datamodule = task.build_datamodule()
    module = task.build_module(datamodule)
    task.validate(datamodule, module)
    callbacks = task.build_callbacks()
    checkpoints = [c for c in callbacks if isinstance(c, MLflowModelCheckpoint)]
    if len(checkpoints) != 1:
        raise ConfigError("callbacks must hold exactly one MLflowModelCheckpoint (callbacks.model_checkpoint).")
    checkpoint = checkpoints[0]

    uri = _open_tracking(cfg)
    project = datamodule.open_project()
    resolved, yaml_text, overrides = _config_record(cfg)
    run, owner = join_or_start_run(
        uri, task.experiment_name(datamodule), cfg.tracking.get("run_name"),
        experiment_tags={"datamint.project_id": project.id, "datamint.project_name": project.name},
        run_tags={"datamint.project_id": project.id, "datamint.project_name": project.name,
                  "task": type(task).__name__, "output_dir": str(cfg.paths.output_dir)})
    if owner:
        run.log_config(resolved, yaml_text, overrides)
        _log_dataset_inputs(datamodule, run)
        _announce(f"MLflow: {run.describe()}")
    status, failure = "FAILED", None
    try:
        checkpoint.attach(uri, run.run_id)
        logger = MLFlowLogger(tracking_uri=uri, run_id=run.run_id, log_model=False)
        trainer = task.build_lightning_trainer(callbacks, logger)
        trainer.fit(module, datamodule=datamodule)
        best = checkpoint.best_model_path or checkpoint.last_model_path
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        results: dict[str, Any] = {
            "run_id": run.run_id, "experiment_id": run.experiment_id, "tracking_uri": uri,
            "test_results": {k: float(v) for k, v in (tested[0] if tested else {}).items()},
            "best_checkpoint": best, "best_score": float(checkpoint.best_model_score)
            if checkpoint.best_model_score is not None else None, "output_dir": str(cfg.paths.output_dir),
            "model_uri": None, "registered_model_name": None, "registered_model_version": None}
        if trainer.is_global_zero and cfg.packaging.enabled:
            if not best:
                raise ConfigError("No checkpoint was saved, so there is nothing to package.")
            results.update(task.package(best, datamodule, module, run))
        status = "FINISHED"
        return results
    except KeyboardInterrupt as interrupt:
        status, failure = "KILLED", interrupt
        raise
    except BaseException as error:
        failure = error
        raise
    finally:
        if owner:
            run.finish(status, failure)
            os.environ.pop(RUN_ID_ENV, None)


def train(cfg) -> dict[str, Any]:
    """Run the task trainer named by ``cfg.task._target_`` on ``cfg``; returns its results dict."""
    from hydra.utils import get_class

    return get_class(cfg.task._target_)(cfg).fit()
