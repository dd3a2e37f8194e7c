"""An end of fit interrupted at any point converges, on resume, to one READY registered version with the right
aliases and a FINISHED run; stale PENDING logged models are marked FAILED."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
from conftest import TINY_OVERRIDES
from helpers import REPO, session_env, session_store_uri

from datamint_lightning.packaging.registry import register


def client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(session_store_uri(), registry_uri=session_store_uri())


def test_a_version_left_without_aliases_is_completed_not_duplicated(tiny_demo, tmp_path):
    """The state a kill right after version creation leaves: a version of the run, no alias, no tags."""
    name = "half-registered"
    experiment = client().create_experiment("recovery-unit", artifact_location=(tmp_path / "a").as_uri())
    run_id = client().create_run(experiment).info.run_id
    model = client().create_logged_model(experiment, name="model", source_run_id=run_id)
    client().create_registered_model(name)
    client().create_model_version(name, model.artifact_location, run_id=run_id, model_id=model.model_id)
    again = register(
        session_store_uri(),
        f"models:/{model.model_id}",
        model.model_id,
        name,
        {"run_id": run_id},
        score=0.7,
        metric="val/dice",
        run_id=run_id,
        description="card",
    )
    versions = client().search_model_versions(f"name='{name}'")
    assert len(versions) == 1 and again.version == "1" and again.champion
    assert str(client().get_model_version_by_alias(name, "champion").version) == "1"
    version = client().get_model_version(name, "1")
    assert version.tags["score"] == "0.7" and version.description == "card"
    # the same call once more (a replayed end of fit) changes nothing
    register(
        session_store_uri(),
        f"models:/{model.model_id}",
        model.model_id,
        name,
        {},
        score=0.7,
        metric="val/dice",
        run_id=run_id,
    )
    assert len(client().search_model_versions(f"name='{name}'")) == 1


@pytest.mark.slow
def test_a_kill_during_packaging_resumes_to_one_ready_version(tiny_demo, tmp_path):
    name = "killed-in-packaging"
    env = session_env(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
    args = [
        sys.executable,
        "-m",
        "datamint_lightning",
        "recipe=liver_seg",
        *TINY_OVERRIDES,
        "task._target_=kill_points.KillAtEndOfFit",
        f"packaging.registered_model_name={name}",
    ]
    killed = subprocess.run(
        [*args, f"hydra.run.dir={tmp_path / 'killed'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**env, "DATAMINT_TEST_KILL_AT": "packaging"},
        timeout=900,
    )
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-3000:]
    experiments = [e.experiment_id for e in client().search_experiments()]
    run = client().search_runs(experiments, f"tags.output_dir = '{tmp_path / 'killed'}'")[0]
    assert run.info.status == "RUNNING"
    pending = client().search_logged_models(experiments, f"source_run_id = '{run.info.run_id}'")
    assert [str(m.status) for m in pending] == ["PENDING"]

    resumed = subprocess.run(
        [*args, f"hydra.run.dir={tmp_path / 'resumed'}", f"resume={run.info.run_id}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert client().get_run(run.info.run_id).info.status == "FINISHED"
    models = client().search_logged_models(experiments, f"source_run_id = '{run.info.run_id}'")
    assert sorted(str(m.status) for m in models) == ["FAILED", "READY"]
    versions = client().search_model_versions(f"name='{name}'")
    assert len(versions) == 1 and str(versions[0].status) == "READY"
    assert client().get_model_version_by_alias(name, "champion").version == versions[0].version
