"""``SweepParentRun``: a Hydra callback that groups a multirun's trainings under one parent MLflow run.

    python -m datamint_lightning -m recipe=liver_seg model.lr=1e-3,3e-4 data.batch_size=8,16

On ``on_multirun_start`` it creates the parent run in the project's experiment and exports its id in
``DATAMINT_LIGHTNING_PARENT_RUN_ID``; each training run started in the sweep is tagged ``mlflow.parentRunId``
with it (the MLflow UI nests them). On ``on_multirun_end`` it logs ``sweep_comparison.json`` (an MLflow table:
one row per child with the params that differ between children and the final metrics) and
``sweep_comparison.md``, tags the best child by the checkpoint's monitored metric and ends the parent run.
Single runs are untouched. Launchers that start jobs in other processes inherit the variable.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from hydra.experimental.callback import Callback

from datamint_lightning.tracking import tags as T

PARENT_RUN_ENV = "DATAMINT_LIGHTNING_PARENT_RUN_ID"
TABLE_FILE = "sweep_comparison.json"

log = logging.getLogger(__name__)


class SweepParentRun(Callback):
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.run_id: str | None = None
        self.tracking_uri: str | None = None

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from mlflow import MlflowClient

        from datamint_lightning.tracking.experiment_provider import project_experiment_id
        from datamint_lightning.tracking.tracking_uri import (
            check_tracking_uri,
            default_artifact_location,
            resolve_tracking_uri,
        )

        self.tracking_uri = resolve_tracking_uri(_get(config, "tracking.uri"))
        check_tracking_uri(self.tracking_uri)
        client = MlflowClient(self.tracking_uri)
        project = _project(config)
        name = _get(config, "tracking.experiment_name") or project.name
        # the project's own experiment (found by project id), where its trainings will start their runs
        experiment_id = project_experiment_id(
            client, name, project.id, project.name, default_artifact_location(self.tracking_uri)
        )
        monitor = _get(config, "callbacks.model_checkpoint.monitor")
        tags = {
            "datamint.sweep": "parent",
            "sweep.dir": str(_get(config, "hydra.sweep.dir")),
            "sweep.overrides": " ".join(_get(config, "hydra.overrides.task") or [])[:5000],
            "sweep.monitor": str(monitor),
            "sweep.mode": str(_get(config, "callbacks.model_checkpoint.mode")),
        }
        run = client.create_run(experiment_id, run_name=f"sweep-{_get(config, 'task_name') or 'train'}", tags=tags)
        self.run_id = run.info.run_id
        os.environ[PARENT_RUN_ENV] = self.run_id
        log.info("MLflow: sweep parent run %s in experiment %r", self.run_id, name)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        if not self.run_id:
            return
        from mlflow import MlflowClient

        client = MlflowClient(self.tracking_uri)
        try:
            children = client.search_runs(
                [client.get_run(self.run_id).info.experiment_id],
                f"tags.`mlflow.parentRunId` = '{self.run_id}'",
                order_by=["attributes.start_time ASC"],
                max_results=5000,
            )
            table = comparison_table(children)
            monitor = _get(config, "callbacks.model_checkpoint.monitor")
            best = best_child(children, monitor, _get(config, "callbacks.model_checkpoint.mode") or "max")
            if table["run_id"]:
                import mlflow

                mlflow.set_tracking_uri(self.tracking_uri)  # log_table goes through the fluent client
                mlflow.log_table(table, TABLE_FILE, run_id=self.run_id)
                client.log_text(self.run_id, markdown(table), "sweep_comparison.md")
            tags = {"sweep.children": str(len(children))}
            if best is not None:
                tags |= {"sweep.best_run_id": best.info.run_id, "sweep.best_run_name": best.info.run_name or ""}
                # Every trial that passes the gate is registered (champion moves only to a better one); the parent
                # names the best trial's version, or why it was not registered.
                registered = best.data.tags.get(T.REGISTERED_MODEL)
                tags["sweep.best_model"] = (
                    registered
                    or f"not registered: {best.data.tags.get(T.NOT_REGISTERED, 'packaging disabled or failed')}"
                )
                client.log_metric(self.run_id, f"best/{monitor}", best.data.metrics[monitor])
            for key, value in tags.items():
                client.set_tag(self.run_id, key, value)
            failed = any(c.info.status != "FINISHED" for c in children)
            client.set_terminated(self.run_id, "FAILED" if failed or not children else "FINISHED")
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)


def comparison_table(children: list) -> dict[str, list]:
    """Columns: run id/name/status, the params that differ between children, then every final metric."""
    params = sorted({k for c in children for k in c.data.params})
    varying = [k for k in params if len({c.data.params.get(k) for c in children}) > 1]
    metrics = sorted({k for c in children for k in c.data.metrics})
    table: dict[str, list] = {
        "run_id": [c.info.run_id for c in children],
        "run_name": [c.info.run_name for c in children],
        "status": [c.info.status for c in children],
    }
    for key in varying:
        table[f"params.{key}"] = [c.data.params.get(key) for c in children]
    for key in metrics:
        table[key] = [c.data.metrics.get(key) for c in children]
    return table


def best_child(children: list, monitor: str | None, mode: str):
    scored = [c for c in children if monitor and monitor in c.data.metrics and c.info.status == "FINISHED"]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda c: c.data.metrics[monitor])


def markdown(table: dict[str, list]) -> str:
    columns = list(table)
    rows = zip(*table.values())
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _get(config, key: str):
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(config, key, default=None)
    except Exception:  # an interpolation that only resolves inside a job
        return None


def _project(config):
    """The sweep's project (the demo is created on first use, as the trainings would)."""
    from datamint_lightning.data.demo import ensure_demo, is_demo_project
    from datamint_lightning.data.projects import ProjectStore

    store, name = ProjectStore(_get(config, "data.store_dir")), str(_get(config, "data.project"))
    return ensure_demo(store, name) if is_demo_project(name) else store.open(name)
