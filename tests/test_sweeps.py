"""Hydra multirun sweeps: one parent MLflow run, children nested under it, a comparison table at the end."""

from __future__ import annotations

import json
import os

import mlflow
import pytest
from conftest import TINY_OVERRIDES
from helpers import run_cli

from datamint_lightning.config import compose_config
from datamint_lightning.tracking.session import RunPlan, TrackedRun
from datamint_lightning.tracking.sweep_callback import PARENT_RUN_ENV, SweepParentRun


def child_run(uri: str, project, output_dir) -> TrackedRun:
    """A training's run as TrackedRun opens it (in the project's experiment, under the sweep's parent)."""
    plan = RunPlan(
        tracking_uri=uri,
        experiment_name=project.name,
        project_id=project.id,
        project_name=project.name,
        run_name=None,
        task="UNetPPTrainer",
        output_dir=str(output_dir),
        config={},
        config_yaml="",
        overrides=[],
    )
    return TrackedRun(plan)


def test_children_are_nested_and_compared_with_the_best_tagged(tiny_demo, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config("liver_seg", [f"tracking.uri={uri}"])
    callback = SweepParentRun()
    callback.on_multirun_start(cfg)
    parent = os.environ[PARENT_RUN_ENV]
    client = mlflow.MlflowClient(uri)
    experiment = client.get_run(parent).info.experiment_id
    for index, (lr, dice) in enumerate((("0.001", 0.61), ("0.0003", 0.74))):  # what two sweep jobs leave
        with child_run(uri, tiny_demo, tmp_path / str(index)) as child:
            assert child.experiment_id == experiment
            client.log_param(child.run_id, "model.lr", lr)
            client.log_param(child.run_id, "seed", "42")
            client.log_metric(child.run_id, "val/dice", dice)
            client.set_tag(child.run_id, "datamint.registered_model", f"liver/{index + 1}")  # what the gate tags
    callback.on_multirun_end(cfg)
    assert PARENT_RUN_ENV not in os.environ
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["sweep.children"] == "2"
    assert run.data.metrics["best/val/dice"] == pytest.approx(0.74)
    best = client.get_run(run.data.tags["sweep.best_run_id"])
    assert best.data.params["model.lr"] == "0.0003" and best.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["sweep.best_model"] == "liver/2"  # the best trial's registered version
    table = json.loads(open(client.download_artifacts(parent, "sweep_comparison.json", str(tmp_path))).read())
    assert "params.model.lr" in table["columns"] and "params.seed" not in table["columns"]  # only what varies
    assert len(table["data"]) == 2 and "val/dice" in table["columns"]


@pytest.mark.slow
def test_cli_multirun_groups_the_jobs_under_one_parent(tiny_demo, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli(
        "-m",
        "recipe=liver_seg",
        *TINY_OVERRIDES,
        "packaging.enabled=false",
        f"tracking.uri={uri}",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "model.lr=0.001,0.002",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    [parent] = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id], "tags.`datamint.sweep` = 'parent'")
    ]
    children = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    ]
    assert len(children) == 2 and parent.info.status == "FINISHED"
    assert {c.data.params["model.lr"] for c in children} == {"0.001", "0.002"}
    assert "sweep_comparison.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
