"""Scaling paths: Hydra multirun sweeps and Lightning DDP (two CPU processes with gloo) through the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES
from helpers import run_cli, session_env


def _runs(client, since_ms: int):
    # the demo project's experiment, found by project id (another project may hold the same name)
    from datamint_lightning.data.demo import ensure_demo_project
    from datamint_lightning.data.projects import ProjectStore

    project_id = ensure_demo_project(ProjectStore()).id
    experiments = client.search_experiments(filter_string=f"tags.`datamint.project_id` = '{project_id}'")
    assert len(experiments) == 1, [(e.name, e.tags) for e in client.search_experiments()]
    experiment = experiments[0]
    return client.search_runs([experiment.experiment_id], f"attributes.start_time >= {since_ms}")


@pytest.fixture()
def client(tiny_demo):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{Path(os.environ['DATAMINT_LIGHTNING_HOME']) / 'mlflow.db'}")


def test_multirun_sweep_gives_one_run_per_job(client, tmp_path):
    import time

    since = int(time.time() * 1000)
    result = run_cli(
        "-m",
        "recipe=liver_seg",
        *TINY_OVERRIDES,
        "model.lr=1e-3,3e-4",
        "packaging.register=false",
        f"hydra.sweep.dir={tmp_path}",
        env=session_env(),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    [parent] = [r for r in _runs(client, since) if r.data.tags.get("datamint.sweep") == "parent"]
    runs = [r for r in _runs(client, since) if r.info.run_id != parent.info.run_id]
    assert sorted(r.data.params["model.lr"] for r in runs) == ["0.0003", "0.001"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs)  # nested under the sweep
    assert {p.name for p in tmp_path.iterdir()} >= {"0", "1"}
    assert all((tmp_path / job / "checkpoints" / "last.ckpt").exists() for job in ("0", "1"))


@pytest.mark.slow
def test_ddp_two_processes_share_one_run(client, tmp_path):
    import time

    since = int(time.time() * 1000)
    result = run_cli(
        "recipe=liver_seg",
        *TINY_OVERRIDES,
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp_find_unused_parameters_true",
        "packaging.registered_model_name=ddp-liver",
        f"hydra.run.dir={tmp_path}",
        env=session_env(),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "GLOBAL_RANK: 1" in result.stdout + result.stderr
    runs = _runs(client, since)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 1 joined rank 0's run
    assert "test/dice" in runs[0].data.metrics
    assert len(client.search_model_versions("name = 'ddp-liver'")) == 1  # packaged once, by rank 0
