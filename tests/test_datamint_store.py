"""Project-scoped experiments (embedded store and ``datamint://``), the Datamint store's credentials, and the
MLflow entry points a fresh process relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import mlflow
import pytest
from mlflow import MlflowClient

from datamint_lightning.errors import TrackingError
from datamint_lightning.mlflow import DatamintArtifactsRepository, DatamintStore, EnvVars
from datamint_lightning.tracking.experiment_provider import project_experiment_id

SECRET = "dm-key-do-not-record-4f1c9e"


def registered(group: str, name: str) -> bool:
    return any(e.name == name for e in entry_points(group=group))


needs_entry_points = pytest.mark.skipif(
    not registered("mlflow.tracking_store", "datamint+http"),
    reason="the installed datamint-lightning metadata predates the entry points: reinstall (pip install -e .)",
)


def fresh_python(code: str, env: dict[str, str], timeout: float = 300) -> str:
    """Run ``code`` in a new interpreter (MLflow discovers plugins there through entry points only)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATAMINT_PROJECT", "DATAMINT_API"))}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout + result.stderr


def test_two_projects_with_one_name_never_share_an_experiment(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    first = project_experiment_id(client, "Liver CT", "p-1", "Liver CT")
    second = project_experiment_id(client, "Liver CT", "p-2", "Liver CT")
    assert first != second
    assert project_experiment_id(client, "Liver CT", "p-1", "Liver CT") == first  # found again by id
    assert project_experiment_id(client, "Liver CT", "p-2", "Liver CT") == second
    one, two = client.get_experiment(first), client.get_experiment(second)
    assert (one.name, one.tags["datamint.project_id"]) == ("Liver CT", "p-1")  # not overwritten by p-2
    assert (two.name, two.tags["datamint.project_id"]) == ("Liver CT (p-2)", "p-2")
    assert two.tags["datamint.experiment_name"] == "Liver CT"
    # MLflow 3's UI shows a model-training experiment in its training view, not the GenAI one
    assert one.tags["mlflow.experimentKind"] == two.tags["mlflow.experimentKind"] == "custom_model_development"


def test_env_vars_are_the_sdk_names():
    assert EnvVars.DATAMINT_PROJECT_ID == "DATAMINT_PROJECT_ID" and EnvVars("DATAMINT_PROJECT_NAME")


def test_datamint_uris_need_an_api_key_and_keep_it_out_of_the_uri(monkeypatch):
    monkeypatch.delenv("DATAMINT_API_KEY", raising=False)
    with pytest.raises(
        TrackingError,
        match=r"'datamint\+http://127.0.0.1:9' needs a Datamint API key: set the "
        r"DATAMINT_API_KEY",
    ):
        DatamintStore("datamint+http://127.0.0.1:9")
    monkeypatch.setenv("DATAMINT_API_KEY", SECRET)
    with pytest.raises(TrackingError, match="not in the tracking URI"):
        DatamintStore("datamint://user:pw@datamint.example")
    monkeypatch.delenv("DATAMINT_API_URL", raising=False)
    with pytest.raises(TrackingError, match="names no server"):
        DatamintStore("datamint://")
    store = DatamintStore("datamint://datamint.example/mlflow")
    assert store.get_host_creds().host == "https://datamint.example/mlflow"
    assert store.get_host_creds().token == SECRET  # sent as a bearer token
    monkeypatch.setenv("DATAMINT_API_URL", "http://127.0.0.1:5000")
    assert DatamintStore("datamint://").get_host_creds().host == "http://127.0.0.1:5000"
    assert (
        DatamintArtifactsRepository.resolve_uri("datamint:/3/abc/artifacts", "datamint+http://127.0.0.1:5000")
        == "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/3/abc/artifacts"
    )


@needs_entry_points
def test_a_datamint_uri_without_credentials_is_one_clear_error_in_mlflow_itself():
    code = (
        "import mlflow\ntry:\n    mlflow.MlflowClient('datamint+http://127.0.0.1:9').search_experiments()\n"
        "except Exception as error:\n    print(type(error).__name__, error)\n"
    )
    output = fresh_python(code, {})
    assert "TrackingError Tracking URI 'datamint+http://127.0.0.1:9' needs a Datamint API key" in output


@needs_entry_points
def test_dataset_source_resolves_in_a_fresh_process(tmp_path):
    from datamint_lightning.mlflow import DatamintMLflowDataset

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("lineage"))
    dataset = DatamintMLflowDataset("p-9", "Chest", "train", ["r-1", "r-2"], extra_params={"fold": 3})
    client.log_inputs(run.info.run_id, [mlflow.entities.DatasetInput(dataset._to_mlflow_entity())])
    assert json.loads(dataset.to_dict()["profile"])["extra_params"] == {"fold": 3}
    code = (
        f"import mlflow\nrun = mlflow.MlflowClient({uri!r}).get_run({run.info.run_id!r})\n"
        "source = mlflow.data.get_source(run.inputs.dataset_inputs[0].dataset)\n"
        "print(type(source).__module__, type(source).__name__, source.project_id, source.uri)\n"
    )
    output = fresh_python(code, {"MLFLOW_TRACKING_URI": uri})
    assert "datamint_lightning.data.lineage DatamintProjectSource p-9 datamint-project://p-9" in output


CLIENT = """
import json, mlflow, numpy as np
from datamint_lightning.mlflow import load_model, log_model
from user_models import Untyped
with mlflow.start_run() as run:  # no experiment chosen: the active project's, created on the Datamint server
    mlflow.log_param("lr", 0.1)
    mlflow.log_metric("dice", 0.5)
    open("notes.txt", "w").write("hello")
    mlflow.log_artifact("notes.txt")
    if {register}:
        log_model(Untyped(), task_type="image_classification", registered_model_name="dm-e2e")
answer = load_model("models:/dm-e2e/1").predict([np.zeros((4, 4))]) if {register} else None
print(json.dumps({{"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                   "artifact_uri": run.info.artifact_uri, "answer": answer}}))
"""


@pytest.mark.slow
@needs_entry_points
def test_datamint_server_end_to_end(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1 stands in for the Datamint server behind ``datamint+http://``."""
    from test_server import MlflowServer

    server = MlflowServer(tmp_path)
    server.start()
    try:
        uri = f"datamint+http://127.0.0.1:{server.port}"
        tests = os.path.dirname(__file__)
        env = {
            "MLFLOW_TRACKING_URI": uri,
            "DATAMINT_API_KEY": SECRET,
            "DATAMINT_PROJECT_NAME": "Liver CT",
            "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), tests]),
        }
        workdir = tmp_path / "client"
        workdir.mkdir()
        outputs, results = [], []
        for project, register in (("p-1", True), ("p-2", False)):
            code = f"import os\nos.chdir({str(workdir)!r})\n" + CLIENT.format(register=register)
            outputs.append(fresh_python(code, {**env, "DATAMINT_PROJECT_ID": project}))
            results.append(json.loads(next(line for line in outputs[-1].splitlines() if line.startswith('{"run_id"'))))
        first, second = results
        assert first["answer"] == [[]]  # registered, downloaded through datamint:/ and loaded
        assert first["artifact_uri"].startswith("datamint:/")

        plain = MlflowClient(server.uri)  # what the server holds, read without our plugins
        one, two = plain.get_experiment(first["experiment_id"]), plain.get_experiment(second["experiment_id"])
        assert (one.name, one.tags["datamint.project_id"]) == ("Liver CT", "p-1")
        assert (two.name, two.tags["datamint.project_id"]) == ("Liver CT (p-2)", "p-2")
        assert [a.path for a in plain.list_artifacts(first["run_id"])] == ["notes.txt"]
        assert list((tmp_path / "artifacts").rglob("notes.txt"))  # uploaded through the server's proxy

        recorded = [json.dumps(e.tags) for e in (one, two)]
        for result in results:
            run = plain.get_run(result["run_id"])
            recorded += [json.dumps(run.data.params), json.dumps(run.data.tags)]
        for model in plain.search_logged_models(experiment_ids=[one.experiment_id]):
            recorded += [json.dumps(model.params), json.dumps(model.tags)]
        for path in (tmp_path / "artifacts").rglob("*"):
            if path.is_file():
                recorded.append(path.read_bytes().decode("utf-8", "replace"))
        recorded += [*outputs, (tmp_path / "server.log").read_text()]
        assert not [text for text in recorded if SECRET in text]
    finally:
        server.stop()
