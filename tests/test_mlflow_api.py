"""``datamint_lightning.mlflow`` has every public name of the SDK's ``datamint.mlflow`` with the documented
parameters and defaults, and they are the project's own objects (the package root exports the same ones)."""

from __future__ import annotations

import inspect

import pytest

import datamint_lightning
import datamint_lightning.mlflow as api

# name -> the documented parameters (name, default; inspect.Parameter.empty when required), "self" left out
EMPTY = inspect.Parameter.empty
DOCUMENTED = {
    "ensure_mlflow_configured": [],
    "setup_mlflow_environment": [("overwrite", False), ("set_mlflow", True)],
    "DatamintMLflowDataset": [
        ("project_id", EMPTY),
        ("project_name", EMPTY),
        ("split", EMPTY),
        ("resources", EMPTY),
        ("extra_params", None),
    ],
    "BaseDatamintModel": [("settings", None)],
    "DatamintModel": [
        ("settings", None),
        ("mlflow_torch_models_uri", None),
        ("mlflow_models_uri", None),
        ("torch_model", None),
    ],
    "ModeSpec": [("mode", EMPTY), ("param_keys", ()), ("fallback_to_default", True)],
    "PredictionRouter": [("model_instance", EMPTY), ("base_class", None)],
    "prediction_mode": [("mode", EMPTY), ("param_keys", ()), ("fallback_to_default", True)],
    "load_model": [("model_uri", EMPTY), ("device", None)],
    "log_model": [
        ("datamint_model", EMPTY),
        ("task_type", None),
        ("supported_modes", None),
        ("name", "datamint_model"),
        ("data_path", None),
        ("code_paths", None),
        ("infer_code_paths", False),
        ("artifacts", None),
        ("registered_model_name", None),
        ("signature", None),
        ("input_example", None),
        ("pip_requirements", None),
        ("extra_pip_requirements", None),
        ("metadata", None),
        ("model_config", None),
    ],
    "save_model": [
        ("datamint_model", EMPTY),
        ("path", EMPTY),
        ("task_type", None),
        ("supported_modes", None),
        ("data_path", None),
        ("code_paths", None),
        ("infer_code_paths", False),
        ("conda_env", None),
        ("mlflow_model", None),
        ("artifacts", None),
        ("signature", None),
        ("input_example", None),
        ("pip_requirements", None),
        ("extra_pip_requirements", None),
        ("metadata", None),
        ("model_config", None),
        ("streamable", None),
    ],
    "set_project": [("project", EMPTY)],
    "DatamintStore": [("store_uri", EMPTY), ("artifact_uri", None), ("force_valid", True)],
    "DatamintArtifactsRepository": [("artifact_uri", EMPTY), ("tracking_uri", None), ("registry_uri", None)],
}
METHODS = {
    ("BaseDatamintModel", "get_supported_modes"): [],
    ("BaseDatamintModel", "load_context"): [("context", EMPTY)],
    ("BaseDatamintModel", "predict"): [("model_input", EMPTY), ("params", None)],
    ("DatamintModel", "get_mlflow_models"): [],
    ("DatamintModel", "get_mlflow_torch_models"): [],
    ("DatamintModel", "get_pytorch_model"): [],
    ("PredictionRouter", "dispatch"): [("model_input", EMPTY), ("params", EMPTY)],
    ("PredictionRouter", "supported_modes"): [],
    ("PredictionRouter", "update_registry"): [("model_instance", EMPTY), ("base_class", None), ("overwrite", False)],
    ("DatamintStore", "create_experiment"): [
        ("name", EMPTY),
        ("artifact_location", None),
        ("tags", None),
        ("project_id", None),
    ],
    ("DatamintStore", "get_experiment_by_name"): [("experiment_name", EMPTY), ("project_id", None)],
    ("DatamintExperimentProvider", "get_experiment_id"): [],
    ("DatamintExperimentProvider", "in_context"): [],
    ("DatamintMLflowDataset", "to_dict"): [],
}
NAMES = sorted(
    {
        *DOCUMENTED,
        "EnvVars",
        "ModelSettings",
        "TaskType",
        "PredictionMode",
        "MLflowModelCheckpoint",
        "DatamintExperimentProvider",
        "autolog",
    }
)


def documented_part(function, count: int) -> list[tuple[str, object]]:
    parameters = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
    return [(p.name, p.default) for p in parameters[:count]]


@pytest.mark.parametrize("name", NAMES)
def test_every_documented_name_is_the_projects_own(name):
    assert getattr(api, name) is getattr(datamint_lightning, name)
    assert getattr(api, name).__module__.startswith("datamint_lightning.") and name in api.__all__


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_parameters_and_defaults(name):
    assert documented_part(getattr(api, name), len(DOCUMENTED[name])) == DOCUMENTED[name]


@pytest.mark.parametrize("owner, method", sorted(METHODS))
def test_documented_methods(owner, method):
    assert documented_part(getattr(getattr(api, owner), method), len(METHODS[owner, method])) == METHODS[owner, method]


def test_properties_and_constants():
    for owner, prop in (
        ("BaseDatamintModel", "settings"),
        ("BaseDatamintModel", "inference_device"),
        ("DatamintModel", "mlflow_models_uri"),
        ("DatamintModel", "mlflow_torch_models_uri"),
        ("DatamintMLflowDataset", "profile"),
        ("DatamintMLflowDataset", "schema"),
    ):
        assert isinstance(inspect.getattr_static(getattr(api, owner), prop), property), (owner, prop)
    assert api.DatamintModel.LINKED_MODELS_DIR == "linked_models" and api.BaseDatamintModel.task_type is None
    assert {m.name for m in api.EnvVars} == {"DATAMINT_PROJECT_ID", "DATAMINT_PROJECT_NAME"}
    assert callable(api.DatamintArtifactsRepository.resolve_uri)
