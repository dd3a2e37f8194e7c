"""The training job, in one screen: build → validate → fit → test the best checkpoint → gate → register.

``train(cfg)`` runs the ``TaskTrainer`` named by ``cfg.task._target_``; its hooks build and check everything,
``TrackedRun`` owns the MLflow run (its final status is always set), and ``gate`` packages, verifies and registers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datamint_lightning.errors import ConfigError

log = logging.getLogger("datamint_lightning")


def train(cfg) -> dict[str, Any]:
    """Run the task trainer named by ``cfg.task._target_`` on ``cfg``; returns its results dict."""
    from hydra.utils import get_class

    return run_task(get_class(cfg.task._target_)(cfg))


def run_task(task) -> dict[str, Any]:
    import lightning as L

    from datamint_lightning.tracking.session import TrackedRun
    from datamint_lightning.training.gate import package_verify_register

    cfg = task.cfg
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    uri = checked_tracking_uri(cfg)  # a malformed or unreachable store fails first
    datamodule = task.build_datamodule()
    module = task.build_module(datamodule)
    task.validate(datamodule, module)  # everything that needs no run, before one exists
    plan = plan_run(task, datamodule, module, uri)  # names, config record, resume target checked
    with TrackedRun(plan) as run:  # FINISHED / FAILED (error tagged) / KILLED, always
        announce_store(run)
        trainer = task.build_lightning_trainer(run.logger, task.build_callbacks())
        checkpoint = trainer.checkpoint_callback
        trainer.fit(module, datamodule=datamodule, ckpt_path=plan.resume_checkpoint)
        best = checkpoint.best_model_path or checkpoint.last_model_path
        if not best:
            raise ConfigError(
                "No checkpoint was saved (callbacks.model_checkpoint), so nothing can be tested or packaged."
            )
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        test_results = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
        results = {
            "run_id": run.run_id,
            "experiment_id": run.experiment_id,
            "tracking_uri": run.tracking_uri,
            "test_results": test_results,
            "best_checkpoint": best,
            "output_dir": str(cfg.paths.output_dir),
            "best_score": None if checkpoint.best_model_score is None else float(checkpoint.best_model_score),
            "trainer": trainer,
            "module": module,
            "datamodule": datamodule,
            "model_uri": None,
            "registered_model_name": None,
            "registered_model_version": None,
            "champion": None,
        }
        if trainer.is_global_zero and cfg.packaging.enabled:
            checkpoint.flush()
            if run.recorder.reconnect(force=True):  # replays what was journaled while the store was away
                results.update(package_verify_register(task, best, module, datamodule, run, checkpoint, test_results))
            else:
                log.warning(
                    "MLflow store unreachable at the end of training: the model was not packaged or "
                    "registered; checkpoints are in %s.",
                    checkpoint.dirpath,
                )
        results["journal"] = str(run.recorder.journal.path) if run.recorder.pending else None
        results["tracking_failures"] = list(run.recorder.failures)
    results["run_status"] = run.status
    return results


def announce_store(run) -> None:
    """Where the run is, and how to open it, at the start (the end-of-run summary repeats it)."""
    from datamint_lightning.tracking.store_guide import describe_store

    log.info(
        "MLflow: %s\n  %s", run.describe(), "\n  ".join(describe_store(run.tracking_uri, run.experiment_id, run.run_id))
    )


def checked_tracking_uri(cfg) -> str:
    from datamint_lightning.tracking.tracking_uri import check_tracking_uri, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking.get("uri"))
    check_tracking_uri(uri)
    return uri


def plan_run(task, datamodule, module, uri: str):
    """The ``RunPlan``: names, config recorded with secrets redacted, resume target found and checked."""
    from datamint_lightning.packaging.registry import validate_model_name
    from datamint_lightning.tracking.session import RunPlan

    cfg = task.cfg
    if cfg.packaging.enabled and cfg.packaging.register:
        validate_model_name(task.registered_model_name(datamodule))
    config, config_yaml, overrides = config_record(cfg)
    project = datamodule.open_project()
    plan = RunPlan(
        tracking_uri=uri,
        experiment_name=task.experiment_name(datamodule),
        project_id=project.id,
        project_name=project.name,
        run_name=task.run_name(module),
        task=type(task).__name__,
        output_dir=str(Path(cfg.paths.output_dir).resolve()),
        config=config,
        config_yaml=config_yaml,
        overrides=overrides,
        description=task.description(datamodule, module),
        datasets=getattr(datamodule, "mlflow_datasets", None),
        retry_interval=float(cfg.tracking.get("retry_interval") or 30),
    )
    if cfg.get("resume"):
        resume_into(plan, task, module, str(cfg.resume))
    Path(plan.output_dir).mkdir(parents=True, exist_ok=True)
    return plan


def resume_into(plan, task, module, target: str) -> None:
    """Point ``plan`` at the run and checkpoint that ``resume=<run id | .ckpt>`` continues, after checking the
    checkpoint fits this task and network; training goes on in the original checkpoint folder, so top-k state
    and evictions continue."""
    import torch
    from omegaconf import open_dict

    from datamint_lightning.tracking.resume import check_checkpoint, check_same_data, find_resume_point
    from datamint_lightning.tracking.tracking_uri import split_credentials

    name = type(task).__name__
    uri = split_credentials(plan.tracking_uri)[0]
    download_dir = Path(task.cfg.paths.output_dir) / "resume_from"
    if target.endswith(".ckpt"):
        if not Path(target).is_file():
            raise ConfigError(f"resume={target!r}: no such checkpoint file.")
        state = check_checkpoint(target, module, name)
        run_ids = [s.get("datamint_run_id") for s in (state.get("callbacks") or {}).values() if isinstance(s, dict)]
        run_id = next((r for r in run_ids if r), None)
        if not run_id:
            raise ConfigError(f"Checkpoint {target} does not name its MLflow run; resume with resume=<run id>.")
        find_resume_point(uri, run_id, name, download_dir)  # the run exists and belongs to this task
        checkpoint, folder = target, str(Path(target).parent)
    else:
        point = find_resume_point(uri, target, name, download_dir)
        check_checkpoint(point.checkpoint_path, module, name, target)
        run_id, checkpoint, folder = target, point.checkpoint_path, point.checkpoint_dir
    check_same_data(uri, run_id, plan.project_id, plan.project_name, plan.datasets() if plan.datasets else {})
    plan.resume_run_id, plan.resume_checkpoint = run_id, checkpoint
    plan.resume_step = int(
        torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0)
    )
    if folder:
        with open_dict(task.cfg):
            task.cfg.paths.checkpoint_dir = folder


def config_record(cfg) -> tuple[dict[str, Any], str, list[str]]:
    """The resolved config, its YAML and the command-line overrides, with every secret redacted."""
    from omegaconf import OmegaConf

    from datamint_lightning.tracking.tracking_uri import redact_text

    resolved = OmegaConf.to_container(cfg, resolve=True)
    redacted = OmegaConf.create(_redact_values(resolved, redact_text))
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # composed from Python, not run by Hydra
        pass
    return (OmegaConf.to_container(redacted), OmegaConf.to_yaml(redacted), [redact_text(o) for o in overrides])


def _redact_values(value: Any, redact) -> Any:
    if isinstance(value, dict):
        return {k: _redact_values(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_values(v, redact) for v in value]
    return redact(value) if isinstance(value, str) else value
