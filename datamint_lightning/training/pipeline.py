"""The training job as one function over a ``TaskTrainer``: track, fit, test the best, package, register."""

from __future__ import annotations

import contextlib
import os
import re
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
    inputs = [mlflow.entities.DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
              for context, dataset in describe().items()]
    if inputs:
        mlflow.MlflowClient(run.tracking_uri).log_inputs(run.run_id, datasets=inputs)


@contextlib.contextmanager
def _bounded_http_retries():
    """MLflow retries a failing HTTP call for ~4 minutes by default; during training a dead server must cost
    seconds (records go to the offline journal instead). Explicit user settings are kept."""
    bounds = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
    added = [key for key in bounds if key not in os.environ]
    os.environ.update({key: bounds[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _resume_point(task, uri: str, module):
    """Where ``cfg.resume`` (a run id or a checkpoint path) continues from, checked before training starts."""
    from datamint_lightning.tracking.resume import check_checkpoint, find_resume_point

    target = str(task.cfg.get("resume") or "")
    if not target:
        return None
    name = type(task).__name__
    if target.endswith(".ckpt"):
        if not Path(target).is_file():
            raise ConfigError(f"resume={target!r}: no such checkpoint file.")
        state = check_checkpoint(target, module, name)
        run_ids = [s.get("datamint_run_id") for s in (state.get("callbacks") or {}).values() if isinstance(s, dict)]
        run_id = next((r for r in run_ids if r), None)
        if not run_id:
            raise ConfigError(f"Checkpoint {target} does not name its MLflow run; resume with resume=<run id>.")
        point = find_resume_point(uri, run_id, name, Path(task.cfg.paths.output_dir) / "resume_from")
        return type(point)(run_id, target, str(Path(target).parent))
    point = find_resume_point(uri, target, name, Path(task.cfg.paths.output_dir) / "resume_from")
    check_checkpoint(point.checkpoint_path, module, name, target)
    return point


def _use_checkpoint_dir(cfg, folder: str) -> None:
    # Continue in the original folder so ModelCheckpoint restores its top-k state and evicts old files.
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.paths.checkpoint_dir = folder


def _finish(recorder, status: str, failure: BaseException | None) -> None:
    if failure is not None:
        # Error texts may quote URLs: never let a user:password@ reach a tag.
        text = re.sub(r"://[^/@\s:]+:[^/@\s]+@", "://***:***@", f"{type(failure).__name__}: {failure}")
        recorder.set_tags({"error": text})
    recorder.set_terminated(status)


def run_task(task) -> dict[str, Any]:
    """Run ``task`` end to end; the MLflow run ends FINISHED, FAILED (with the error) or KILLED."""
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which outranks tracking.uri: restore the variable
    # so that a later training in this process follows its own config (mlflow's global URI stays, for loading).
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        return _run_task(task)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def _run_task(task) -> dict[str, Any]:
    import lightning as L

    from datamint_lightning.packaging.registry import validate_model_name
    from datamint_lightning.tracking.mlflow_logger import ResilientMLFlowLogger
    from datamint_lightning.tracking.model_checkpoint import MLflowModelCheckpoint
    from datamint_lightning.tracking.offline_journal import JOURNAL_NAME
    from datamint_lightning.tracking.resume import record_resume
    from datamint_lightning.tracking.run_recorder import RunRecorder
    from datamint_lightning.tracking.training_run import RUN_ID_ENV, flatten, join_or_start_run

    cfg = task.cfg
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    uri = _open_tracking(cfg)  # a malformed or unreachable store fails before anything is built
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    datamodule = task.build_datamodule()
    module = task.build_module(datamodule)
    task.validate(datamodule, module)
    if cfg.packaging.enabled and cfg.packaging.register:
        validate_model_name(task.registered_model_name(datamodule))
    resume = _resume_point(task, uri, module)
    if resume and resume.checkpoint_dir:
        _use_checkpoint_dir(cfg, resume.checkpoint_dir)
    callbacks = task.build_callbacks()
    checkpoints = [c for c in callbacks if isinstance(c, MLflowModelCheckpoint)]
    if len(checkpoints) != 1:
        raise ConfigError("callbacks must hold exactly one MLflowModelCheckpoint (callbacks.model_checkpoint).")
    checkpoint = checkpoints[0]

    project = datamodule.open_project()
    resolved, yaml_text, overrides = _config_record(cfg)
    run, owner = join_or_start_run(
        uri, task.experiment_name(datamodule), cfg.tracking.get("run_name"),
        experiment_tags={"datamint.project_id": project.id, "datamint.project_name": project.name},
        run_tags={"datamint.project_id": project.id, "datamint.project_name": project.name,
                  "task": type(task).__name__, "output_dir": str(cfg.paths.output_dir)},
        resume_run_id=resume.run_id if resume else None)
    if owner:
        if resume:
            import torch

            step = int(torch.load(resume.checkpoint_path, map_location="cpu", weights_only=True,
                                  mmap=True).get("global_step", 0))
            changed = record_resume(run.client, run.run_id, flatten(resolved), resume.checkpoint_path, step)
            count = run.client.get_run(run.run_id).data.tags["resume.count"]
            run.log_config(resolved, yaml_text, overrides, params=False, artifact_dir=f"resumes/{count}")
            _announce(f"MLflow: resuming {run.describe()} from {resume.checkpoint_path} (step {step}"
                      + (f"; changed params recorded in tag resume.{count}.changed_params)" if changed else ")"))
        else:
            run.log_config(resolved, yaml_text, overrides)
            _log_dataset_inputs(datamodule, run)
            _announce(f"MLflow: {run.describe()}")
        run.set_tags({"checkpoint.dir": str(Path(checkpoint.dirpath).resolve())})
    recorder = RunRecorder(uri, run.run_id, Path(cfg.paths.output_dir) / JOURNAL_NAME,
                           retry_interval=float(cfg.tracking.get("retry_interval") or 30))
    status, failure, trainer = "FAILED", None, None
    try:
        with _bounded_http_retries():
            checkpoint.attach(uri, run.run_id, recorder, task=type(task).__name__)
            logger = ResilientMLFlowLogger(recorder, experiment_id=run.experiment_id)
            trainer = task.build_lightning_trainer(callbacks, logger)
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume.checkpoint_path if resume else None)
            checkpoint.flush()
            online = recorder.reconnect(force=True)  # replays what was journaled while the store was away
            best = checkpoint.best_model_path or checkpoint.last_model_path
            tested = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
            results: dict[str, Any] = {
                "run_id": run.run_id, "experiment_id": run.experiment_id, "tracking_uri": uri,
                "test_results": {k: float(v) for k, v in (tested[0] if tested else {}).items()},
                "best_checkpoint": best, "best_score": float(checkpoint.best_model_score)
                if checkpoint.best_model_score is not None else None, "output_dir": str(cfg.paths.output_dir),
                "model_uri": None, "registered_model_name": None, "registered_model_version": None,
                "tracking_failures": list(recorder.failures), "journal": None}
            if trainer.is_global_zero and cfg.packaging.enabled:
                if not best:
                    raise ConfigError("No checkpoint was saved, so there is nothing to package.")
                if online and recorder.reconnect(force=True):
                    results.update(task.package(best, datamodule, module, run))
                else:
                    _announce("MLflow store unreachable at the end of training: the model was not packaged or "
                              f"registered; checkpoints are in {checkpoint.dirpath}.")
            status = "FINISHED"
            results["journal"] = str(recorder.journal.path) if recorder.pending else None
            return results
    except BaseException as error:
        failure = error
        # Lightning turns Ctrl+C into sys.exit(1) and SIGTERM into SIGTERMException (a SystemExit).
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            status = "KILLED"
        raise
    finally:
        checkpoint.flush()
        if owner:
            _finish(recorder, status, failure)
            if recorder.pending:
                _announce(f"MLflow: {recorder.pending} record(s) wait in {recorder.journal.path}; send them with "
                          f"`python -m datamint_lightning tracking replay {recorder.journal.path}`.")
            os.environ.pop(RUN_ID_ENV, None)


def train(cfg) -> dict[str, Any]:
    """Run the task trainer named by ``cfg.task._target_`` on ``cfg``; returns its results dict."""
    from hydra.utils import get_class

    return get_class(cfg.task._target_)(cfg).fit()
