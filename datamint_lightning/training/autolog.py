"""``autolog()``: any plain ``Trainer.fit`` is tracked in the active project's experiment.

Patched through MLflow's own autologging machinery (``autologging_integration`` + ``safe_patch``): calling
``autolog()`` again re-patches instead of patching twice, ``autolog(disable=True)`` restores ``Trainer.fit``,
and an error in the logging code is reported as a warning while the user's ``fit`` runs (errors raised by
``fit`` itself propagate unchanged).

For the duration of one ``fit`` the trainer gets an MLflow logger for the run (the active run, else a new run
in the active project's experiment, unless the trainer already has an ``MLFlowLogger``), an
``MLflowModelCheckpoint`` (unless it has one; it mirrors the monitor/mode/top-k of the trainer's own checkpoint
callback, and replaces Lightning's default one) and a callback logging the trainer's and the optimizer's
params and, when the datamodule describes its splits (``DatamintDataModule``), the dataset inputs. Afterwards
the trainer's loggers and callbacks are as they were. With ``log_models``, the best checkpoint is packaged as a
Datamint model: one of our modules (``SegmentationModule`` with our datamodule) through the registration gate
(``training/gate.py``: reloaded, compared with the checkpoint, registered only with ``register_model=True``),
any other LightningModule that defines ``datamint_model(self) -> BaseDatamintModel`` by calling it on a copy
holding the best checkpoint's weights.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.utils.autologging_utils import autologging_integration, get_autologging_config, safe_patch

logger = logging.getLogger(__name__)

INTEGRATION = "datamint_lightning"
MODEL_HOOK = "datamint_model"


@autologging_integration(INTEGRATION)
def autolog(
    log_checkpoints: bool = True,
    log_datasets: bool = True,
    log_models: bool = True,
    register_model: bool = False,
    disable: bool = False,
    silent: bool = False,
) -> None:
    """Track every ``lightning.pytorch.Trainer.fit`` (see the module docstring); ``disable=True`` reverts."""
    safe_patch(INTEGRATION, pl.Trainer, "fit", _patched_fit)


def _config(key: str, default: Any) -> Any:
    return get_autologging_config(INTEGRATION, key, default)


def _patched_fit(original, trainer, *args, **kwargs):
    session = FitSession(
        trainer, args[0] if args else kwargs.get("model"), kwargs.get("datamodule", args[3] if len(args) > 3 else None)
    )
    try:
        session.start()
    except BaseException:  # safe_patch warns and runs the original fit untouched; no run is left open
        session.abandon()
        raise
    try:
        result = original(trainer, *args, **kwargs)
    except BaseException:
        session.finish("FAILED")
        raise
    session.finish("FINISHED")
    return result


def _explicit_experiment() -> bool:
    import mlflow.tracking.fluent as fluent

    return bool(
        fluent._active_experiment_id
        or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        or os.environ.get("MLFLOW_EXPERIMENT_ID")
    )


class FitSession:
    """What one tracked ``fit`` adds to the trainer, and takes away again."""

    def __init__(self, trainer, module, datamodule):
        self.trainer, self.module, self.datamodule = trainer, module, datamodule
        self.owned_run = None
        self.saved_loggers: list | None = None
        self.saved_callbacks: list | None = None
        self.checkpoint = None
        self.run_id: str | None = None
        self.tracking_uri: str | None = None

    def start(self) -> None:
        import mlflow
        from lightning.pytorch.callbacks import ModelCheckpoint

        from datamint_lightning.tracking.model_checkpoint import MLflowModelCheckpoint

        trainer = self.trainer
        loggers, callbacks = list(trainer.loggers), list(trainer.callbacks)
        existing = next((lg for lg in loggers if isinstance(lg, MLFlowLogger)), None)
        if existing is not None:
            self.run_id, self.tracking_uri = existing.run_id, existing._tracking_uri
        else:
            run = mlflow.active_run()
            if run is None:
                run = self.owned_run = mlflow.start_run(experiment_id=self._project_experiment())
            self.run_id, self.tracking_uri = run.info.run_id, mlflow.get_tracking_uri()
            loggers.append(_RunLogger(tracking_uri=self.tracking_uri, run_id=self.run_id, log_model=False))
        if _config("log_checkpoints", True) and not any(isinstance(c, MLflowModelCheckpoint) for c in callbacks):
            own = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
            if own is not None and own.monitor is None and own.dirpath is None and not own.save_last:
                callbacks.remove(own)  # Lightning's default checkpoint: ours takes its place for this fit
            self.checkpoint = MLflowModelCheckpoint(
                dirpath=Path(trainer.default_root_dir) / "checkpoints" / self.run_id,
                monitor=getattr(own, "monitor", None),
                mode=getattr(own, "mode", "min"),
                save_top_k=getattr(own, "save_top_k", 1),
                tracking_uri=self.tracking_uri,
                run_id=self.run_id,
            )
            callbacks.append(self.checkpoint)
        else:
            self.checkpoint = next((c for c in callbacks if isinstance(c, MLflowModelCheckpoint)), None)
        callbacks.append(_ParamsAndInputs(self))
        # Everything above may fail without side effects on the trainer; from here on it is changed.
        self.saved_loggers, self.saved_callbacks = list(trainer.loggers), list(trainer.callbacks)
        trainer.loggers, trainer.callbacks = loggers, callbacks

    def abandon(self) -> None:
        import mlflow

        if self.owned_run is not None:
            mlflow.end_run("FAILED")

    @staticmethod
    def _project_experiment() -> str | None:
        from datamint_lightning.tracking.experiment_provider import DatamintExperimentProvider

        provider = DatamintExperimentProvider()
        return provider.get_experiment_id() if provider.in_context() and not _explicit_experiment() else None

    def finish(self, status: str) -> None:
        """Restore the trainer, package the best checkpoint, end the run we started; never raises."""
        import mlflow

        if self.saved_loggers is not None:
            self.trainer.loggers, self.trainer.callbacks = self.saved_loggers, self.saved_callbacks
        try:
            client = mlflow.MlflowClient(self.tracking_uri)
            client.set_tag(self.run_id, "datamint.autolog", "true")
            if status == "FINISHED" and _config("log_models", True):
                self.package_best(client)
        except Exception as error:  # logging must never break the user's training
            logger.warning("datamint_lightning autolog could not finish logging run %s: %s", self.run_id, error)
        finally:
            if self.owned_run is not None:
                mlflow.end_run(status)

    def package_best(self, client) -> None:
        """The best checkpoint of one of our modules goes through the registration gate (packaged, reloaded and
        compared; registered only with ``autolog(register_model=True)``); a module with the
        ``datamint_model()`` hook is logged from a copy holding the best checkpoint's weights."""
        import torch

        from datamint_lightning.packaging.flavor import log_model

        task = _gate_task(self.module, self.datamodule or self.trainer.datamodule)
        best = getattr(self.checkpoint, "best_model_path", "") or getattr(self.checkpoint, "last_model_path", "")
        if task is not None and best:
            from datamint_lightning.training.gate import package_verify_register

            package_verify_register(
                task,
                best,
                self.module,
                self.datamodule or self.trainer.datamodule,
                _GateRun(client, self.run_id, self.tracking_uri),
                self.checkpoint,
                {},
            )
            return
        hook = getattr(self.module, MODEL_HOOK, None)
        if not callable(hook):
            return
        module = copy.deepcopy(self.module).cpu()
        if best:
            module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        step = getattr(self.checkpoint, "best_model_step", None) or self.trainer.global_step
        info = log_model(getattr(module, MODEL_HOOK)(), name="model", run_id=self.run_id, step=int(step))
        client.set_tag(self.run_id, "datamint.model_uri", info.model_uri)


def _gate_task(module, datamodule):
    """The ``TaskTrainer`` whose gate packages ``module`` (one of ours, with our datamodule), else None."""
    from datamint_lightning.training.segmentation_module import SegmentationModule

    if not isinstance(module, SegmentationModule) or not hasattr(datamodule, "raw_examples"):
        return None
    from datamint_lightning.training.segmentation_trainer import UNetPPTrainer

    # the gate reads only the packaging options of the task's recipe (its defaults), and the task's hooks
    return UNetPPTrainer(project=datamodule.open_project().id, register_model=bool(_config("register_model", False)))


class _GateRun:
    """What the gate needs of a run (``TrackedRun``'s interface) for a run autolog tracks."""

    def __init__(self, client, run_id: str, tracking_uri: str):
        self.client, self.run_id, self.tracking_uri = client, run_id, tracking_uri
        self.experiment_id = client.get_run(run_id).info.experiment_id

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))


class _ParamsAndInputs(Callback):
    """Logs the trainer's and optimizer's params and the dataset inputs once training starts."""

    def __init__(self, session: FitSession):
        self.session = session

    def on_train_start(self, trainer, pl_module) -> None:
        try:
            _log_params_and_inputs(self.session, trainer)
        except Exception as error:  # logging must never break the user's training
            logger.warning("datamint_lightning autolog could not log params/inputs: %s", error)


def _log_params_and_inputs(session: FitSession, trainer) -> None:
    import mlflow
    from mlflow.entities import DatasetInput, InputTag, Param

    if not trainer.is_global_zero:
        return
    client = mlflow.MlflowClient(session.tracking_uri)
    params = {
        "max_epochs": trainer.max_epochs,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "precision": trainer.precision,
        "gradient_clip_val": trainer.gradient_clip_val,
    }
    if trainer.optimizers:
        optimizer = trainer.optimizers[0]
        params["optimizer_name"] = type(optimizer).__name__
        params.update(
            {
                f"optimizer.{k}": v
                for k, v in optimizer.param_groups[0].items()
                if k != "params" and isinstance(v, (int, float, str, bool))
            }
        )
    logged = client.get_run(session.run_id).data.params
    client.log_batch(
        session.run_id, params=[Param(k, str(v)) for k, v in params.items() if v is not None and k not in logged]
    )
    describe = getattr(session.datamodule or trainer.datamodule, "mlflow_datasets", None)
    if _config("log_datasets", True) and callable(describe):
        inputs = [
            DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
            for context, dataset in describe().items()
        ]
        if inputs:
            client.log_inputs(session.run_id, datasets=inputs)


class _RunLogger(MLFlowLogger):
    """Lightning's MLflow logger that leaves ending the run to the session (or to whoever started it)."""

    def finalize(self, status: str = "success") -> None:
        pass
