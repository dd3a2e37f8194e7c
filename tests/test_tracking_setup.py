"""MLflow configuration, project experiments, the default-experiment entry point, URIs and secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import run_python

from datamint_lightning.errors import ConfigError, TrackingError
from datamint_lightning.tracking import mlflow_setup
from datamint_lightning.tracking.tracking_uri import check_tracking_uri, embedded_tracking_uri, redact


@pytest.fixture
def clean_env(monkeypatch):
    for key in ("MLFLOW_TRACKING_URI", "DATAMINT_PROJECT_ID", "DATAMINT_PROJECT_NAME"):
        monkeypatch.setenv(key, "x")  # records the original value (or its absence) for the undo
        monkeypatch.delenv(key)
    return monkeypatch


def test_setup_writes_the_embedded_default_and_keeps_an_existing_uri(clean_env, tmp_path):
    assert mlflow_setup.setup_mlflow_environment(set_mlflow=False) is True
    assert os.environ["MLFLOW_TRACKING_URI"] == embedded_tracking_uri()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert mlflow_setup.setup_mlflow_environment(set_mlflow=False, tracking_uri=other) is True
    assert os.environ["MLFLOW_TRACKING_URI"] == embedded_tracking_uri()  # kept
    assert mlflow_setup.setup_mlflow_environment(overwrite=True, set_mlflow=False, tracking_uri=other) is True
    assert os.environ["MLFLOW_TRACKING_URI"] == other
    assert mlflow_setup.setup_mlflow_environment(overwrite=True, set_mlflow=False, tracking_uri="ftp://x") is False
    assert os.environ["MLFLOW_TRACKING_URI"] == other  # unchanged


def test_ensure_configured_names_what_is_missing(clean_env):
    with pytest.raises(ValueError, match="DATAMINT_PROJECT_ID or DATAMINT_PROJECT_NAME") as error:
        clean_env.setenv("MLFLOW_TRACKING_URI", embedded_tracking_uri())
        mlflow_setup.ensure_mlflow_configured()
    assert "MLFLOW_TRACKING_URI" not in str(error.value).split("missing")[1]
    clean_env.setenv("DATAMINT_PROJECT_NAME", "Some Project")
    assert mlflow_setup.ensure_mlflow_configured() == embedded_tracking_uri()
    clean_env.setenv("MLFLOW_TRACKING_URI", "ftp://nowhere")
    with pytest.raises(ValueError, match="unsupported scheme 'ftp'"):
        mlflow_setup.ensure_mlflow_configured()


def test_ensure_configured_without_anything_lists_both():
    code = (
        "import os\nfor k in ('MLFLOW_TRACKING_URI','DATAMINT_PROJECT_ID','DATAMINT_PROJECT_NAME'): "
        "os.environ.pop(k, None)\nfrom datamint_lightning.tracking.mlflow_setup import ensure_mlflow_configured\n"
        "try:\n    ensure_mlflow_configured()\nexcept ValueError as e:\n    print(e)\n"
    )
    result = run_python(code)
    assert "MLFLOW_TRACKING_URI" in result.stdout and "DATAMINT_PROJECT_NAME" in result.stdout, result.stderr


def test_set_project_accepts_a_store_name(clean_env, tiny_demo):
    active = mlflow_setup.set_project(tiny_demo.name)
    assert (active.id, active.name) == (tiny_demo.id, tiny_demo.name)
    assert os.environ["DATAMINT_PROJECT_ID"] == tiny_demo.id
    with pytest.raises(LookupError):
        mlflow_setup.set_project("No Such Project")


def test_plain_start_run_lands_in_the_active_project_experiment(tmp_path):
    """The entry point is discovered by MLflow itself, in a fresh process (no import of our package)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "import mlflow, json\nwith mlflow.start_run() as run:\n    mlflow.log_metric('m', 1.0)\n"
        "e = mlflow.get_experiment(run.info.experiment_id)\n"
        "print(json.dumps({'name': e.name, 'tags': e.tags}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # other tests may leak some
    env |= {"MLFLOW_TRACKING_URI": uri, "DATAMINT_PROJECT_ID": "p-123", "DATAMINT_PROJECT_NAME": "Lung CT"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = json.loads(result.stdout.strip().splitlines()[-1])
    assert experiment["name"] == "Lung CT"
    assert experiment["tags"]["datamint.project_id"] == "p-123"
    assert experiment["tags"]["datamint.project_name"] == "Lung CT"


def test_importing_the_package_changes_nothing_in_mlflow():
    code = (
        "import os, sys\nos.environ.pop('MLFLOW_TRACKING_URI', None)\nimport datamint_lightning\nassert 'mlflow' not in sys.modules, 'mlflow imported eagerly'\n"
        "import mlflow\nprint(mlflow.is_tracking_uri_set(), mlflow.get_tracking_uri())\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("False"), result.stdout


@pytest.mark.parametrize("uri", ["ftp://x", "sqlite://relative.db", "http://", "http://host:notaport", "nonsense"])
def test_malformed_tracking_uris_are_rejected(uri):
    with pytest.raises(TrackingError, match="malformed|unsupported"):
        check_tracking_uri(uri)


def test_unreachable_server_fails_fast():
    with pytest.raises(TrackingError, match="Cannot reach"):
        check_tracking_uri("http://127.0.0.1:9", timeout=2)


def test_secrets_are_redacted():
    assert (
        redact("https://bob:hunter2@mlflow.example.com/?token=abc&x=1")
        == "https://bob:***@mlflow.example.com/?token=***&x=1"
    )
    assert redact("sqlite:////abs/path/mlflow.db") == "sqlite:////abs/path/mlflow.db"


def test_registered_model_names_mlflow_rejects():
    from datamint_lightning.packaging.registry import validate_model_name

    validate_model_name("Liver CT Demo")
    for bad in ("", "a/b", "a:b"):
        with pytest.raises(ConfigError, match="registered_model_name"):
            validate_model_name(bad)


def test_champion_policies():
    from datamint_lightning.packaging.registry import beats

    assert beats(0.8, 0.7, "max", "better")[0] and not beats(0.7, 0.7, "max", "better")[0]
    assert beats(0.7, 0.7, "max", "better_or_equal")[0]
    assert beats(0.2, 0.3, "min", "better")[0] and not beats(0.4, 0.3, "min", "better")[0]
    assert beats(0.1, 0.9, "max", "always")[0] and not beats(0.9, 0.1, "max", "never")[0]
    assert beats(0.1, None, "max", "better")[0]  # nothing comparable: the new version takes the alias
    with pytest.raises(ConfigError):
        beats(0.1, 0.2, "max", "sometimes")
