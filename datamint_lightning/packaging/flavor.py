"""The ``datamint`` MLflow flavor: a pyfunc model plus Datamint metadata in the MLmodel file.

The MLmodel carries ``flavors.datamint`` with the official Datamint SDK's key names (``task_type``,
``supported_modes``, ``model_settings``, ``linked_models``, ``annotation_specs``, ``datamint_version``), and the
same keys as ``python_function.config``. Weights and network config are artifacts; the pickled python model is
a small object whose class lives in this package.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

FLAVOR_NAME = "datamint"


def package_version() -> str:
    try:
        return metadata.version("datamint-lightning")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def default_pip_requirements() -> list[str]:
    """Exact pins for what the model needs at load time (inferring them costs ~15 s per save)."""
    pins = []
    for package in ("torch", "segmentation-models-pytorch", "safetensors", "numpy", "pillow", "pydicom", "nibabel",
                    "mlflow", "datamint-lightning"):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def default_signature():
    """Inputs are free-form (paths and arrays); the params the model understands are declared with defaults."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    return ModelSignature(inputs=None, outputs=None, params=ParamSchema([
        ParamSpec("mode", "string", "default"),
        ParamSpec("confidence_threshold", "double", 0.0),
        ParamSpec("batch_size", "long", 16),
    ]))


def _model_code(model_class: type, folder: str) -> str:
    """A models-from-code script that builds ``model_class``: MLflow stores it instead of a pickle."""
    path = Path(folder) / "datamint_model.py"
    path.write_text("from mlflow.models import set_model\n\n"
                    f"from {model_class.__module__} import {model_class.__qualname__}\n\n"
                    f"set_model({model_class.__qualname__}())\n")
    return str(path)


def flavor_config(python_model, annotation_specs: list[dict[str, Any]], model_settings: dict[str, Any] | None,
                  linked_models: dict[str, str] | None) -> dict[str, Any]:
    return {"task_type": python_model.task_type, "supported_modes": python_model.get_supported_modes(),
            "model_settings": dict(model_settings or {"need_gpu": False}), "linked_models": dict(linked_models or {}),
            "annotation_specs": list(annotation_specs), "datamint_version": package_version()}


def save_model(path: str | os.PathLike, python_model: type, artifacts: dict[str, str],
               annotation_specs: list[dict[str, Any]], model_settings: dict[str, Any] | None = None,
               linked_models: dict[str, str] | None = None, mlflow_model=None, signature=None,
               pip_requirements: list[str] | None = None, metadata: dict[str, Any] | None = None, **kwargs) -> None:
    """Save a Datamint model directory (``python_function`` + ``datamint`` flavors).

    ``python_model`` is a ``BaseDatamintModel`` subclass; it is saved as code that constructs it, not pickled.
    """
    import tempfile
    import warnings

    import mlflow.pyfunc
    from mlflow.models import Model

    mlflow_model = mlflow_model or Model()
    config = flavor_config(python_model, annotation_specs, model_settings, linked_models)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(input_example|type hints).*")
        mlflow.pyfunc.save_model(path, python_model=_model_code(python_model, folder), artifacts=artifacts,
                                 mlflow_model=mlflow_model, signature=signature or default_signature(),
                                 model_config=config, pip_requirements=pip_requirements or default_pip_requirements(),
                                 metadata=metadata, **kwargs)
    mlflow_model.add_flavor(FLAVOR_NAME, **config)
    mlflow_model.save(str(Path(path) / "MLmodel"))


def log_model(python_model: type, artifacts: dict[str, str], annotation_specs: list[dict[str, Any]], name: str = "model",
              registered_model_name: str | None = None, run_id: str | None = None, **kwargs):
    """Log a Datamint model to a run (MLflow 3 ``name=``); returns MLflow's ``ModelInfo``."""
    from mlflow import MlflowClient
    from mlflow.models import Model

    model_id = None
    if run_id:  # MLflow would file the LoggedModel under the active experiment, not the run's
        client = MlflowClient()
        experiment_id = client.get_run(run_id).info.experiment_id
        model_id = client.create_logged_model(experiment_id, name=name, source_run_id=run_id,
                                              tags={"mlflow.datamint.flavor": FLAVOR_NAME}).model_id
    return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__],
                     registered_model_name=registered_model_name, run_id=run_id, model_id=model_id,
                     python_model=python_model, artifacts=artifacts, annotation_specs=annotation_specs, **kwargs)


@contextmanager
def _prediction_device(device: str | None):
    from datamint_lightning.serving.base_model import DEVICE_ENV

    previous = os.environ.get(DEVICE_ENV)
    if device:
        os.environ[DEVICE_ENV] = device
    try:
        yield
    finally:
        if device:
            if previous is None:
                os.environ.pop(DEVICE_ENV, None)
            else:
                os.environ[DEVICE_ENV] = previous


def load_model(model_uri: str, device: str | None = None):
    """Load a Datamint model as pyfunc; ``device`` (``"cpu"``, ``"cuda:1"``) is where its network runs."""
    import mlflow.pyfunc

    with _prediction_device(device):
        return mlflow.pyfunc.load_model(model_uri)
