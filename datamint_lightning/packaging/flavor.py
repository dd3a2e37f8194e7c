"""The ``datamint`` MLflow flavor: a pyfunc model plus Datamint metadata in the MLmodel file.

The MLmodel carries ``flavors.datamint`` with the official Datamint SDK's key names (``task_type``,
``supported_modes``, ``model_settings``, ``linked_models``, ``annotation_specs``, ``datamint_version``), and the
same keys (plus ``device``, so that ``load_model(device=...)`` can override it) as ``python_function.config``.
Weights and network config are artifacts; the python model is saved as code that constructs its class (no pickle).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

FLAVOR_NAME = "datamint"
BASE_REQUIREMENTS = ("torch", "safetensors", "numpy", "pillow", "pydicom", "nibabel", "pynrrd", "mlflow",
                     "datamint-lightning")
PARAM_TYPES_FALLBACK = "string"


def package_version() -> str:
    try:
        return metadata.version("datamint-lightning")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def default_pip_requirements(extra: tuple[str, ...] | list[str] = ("segmentation-models-pytorch",)) -> list[str]:
    """Exact pins for what the model needs at load time (inferring them costs ~15 s per save)."""
    pins = []
    for package in (*BASE_REQUIREMENTS[:1], *extra, *BASE_REQUIREMENTS[1:]):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def default_signature(python_model: type | None = None):
    """Inputs are free-form (paths, arrays, JSON dicts): no input schema. Params: ``mode``, ``mask_format`` and
    every param a handler of ``python_model`` accepts, each defaulting to None (the handler's own default)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from datamint_lightning.serving.modes import PARAM_TYPES

    names = python_model.declared_params() if python_model is not None else ["confidence_threshold", "batch_size"]
    specs = [ParamSpec("mode", "string", "default"), ParamSpec("mask_format", "string", None)]
    specs += [ParamSpec(name, PARAM_TYPES.get(name, PARAM_TYPES_FALLBACK), None) for name in names]
    return ModelSignature(inputs=None, outputs=None, params=ParamSchema(specs))


def _model_code(model_class: type, folder: str) -> str:
    """A models-from-code script that builds ``model_class``: MLflow stores it instead of a pickle."""
    if not isinstance(model_class, type):
        raise TypeError(f"python_model must be a BaseDatamintModel subclass (saved as code), got {model_class!r}; "
                        "pass linked nn.Modules as their own logged models and link their URIs.")
    path = Path(folder) / "datamint_model.py"
    path.write_text("from mlflow.models import set_model\n\n"
                    f"from {model_class.__module__} import {model_class.__qualname__}\n\n"
                    f"set_model({model_class.__qualname__}())\n")
    return str(path)


def flavor_config(python_model: type, annotation_specs: list[dict[str, Any]], model_settings: dict[str, Any] | None,
                  linked_models: dict[str, str] | None) -> dict[str, Any]:
    from datamint_lightning.serving.settings import ModelSettings

    for name, uri in (linked_models or {}).items():
        if not isinstance(uri, str):
            raise TypeError(f"linked_models[{name!r}] must be an MLflow model URI to be saved, got "
                            f"{type(uri).__name__}; log it as its own model first.")
    task_type = python_model.task_type
    return {"task_type": str(getattr(task_type, "value", task_type)),
            "supported_modes": python_model.get_supported_modes(),
            "model_settings": ModelSettings.from_dict(model_settings).to_dict(),
            "linked_models": dict(linked_models or {}),
            "annotation_specs": list(annotation_specs), "datamint_version": package_version()}


def save_model(path: str | os.PathLike, python_model: type, artifacts: dict[str, str],
               annotation_specs: list[dict[str, Any]], model_settings: dict[str, Any] | None = None,
               linked_models: dict[str, str] | None = None, mlflow_model=None, signature=None,
               pip_requirements: list[str] | None = None, metadata: dict[str, Any] | None = None,
               input_example: Any = None, **kwargs) -> None:
    """Save a Datamint model directory (``python_function`` + ``datamint`` flavors).

    ``python_model`` is a ``BaseDatamintModel`` subclass; it is saved as code that constructs it, not pickled.
    ``input_example`` (``(inputs, params)`` or inputs, in the JSON request form) is stored as is: MLflow's
    own check would load and run the model (slow) and cannot infer anything from free-form inputs.
    """
    import copy
    import tempfile
    import warnings

    import mlflow.pyfunc
    from mlflow.models import Model
    from mlflow.models.utils import _save_example

    kwargs.pop("validate_serving_input", None)
    mlflow_model = mlflow_model or Model()
    config = flavor_config(python_model, annotation_specs, model_settings, linked_models)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(input_example|type hints).*")
        mlflow.pyfunc.save_model(path, python_model=_model_code(python_model, folder), artifacts=artifacts,
                                 mlflow_model=mlflow_model, signature=signature or default_signature(python_model),
                                 model_config=copy.deepcopy({**config, "device": None}),  # no YAML anchors
                                 pip_requirements=pip_requirements or default_pip_requirements(),
                                 metadata=metadata, **kwargs)
    if input_example is not None:
        _save_example(mlflow_model, input_example, str(path))
    mlflow_model.add_flavor(FLAVOR_NAME, **config)
    mlflow_model.save(str(Path(path) / "MLmodel"))


def log_model(python_model: type, artifacts: dict[str, str], annotation_specs: list[dict[str, Any]],
              name: str = "model", registered_model_name: str | None = None, run_id: str | None = None, **kwargs):
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
                     python_model=python_model, artifacts=artifacts, annotation_specs=annotation_specs,
                     validate_serving_input=False, **kwargs)


def load_model(model_uri: str, device: str | None = None, dst_path: str | Path | None = None):
    """Load a Datamint model as pyfunc; ``device`` (``"cpu"``, ``"cuda:1"``) is where its networks run.

    The device reaches the model as its ``device`` config key, overriding ``MLFLOW_DEFAULT_PREDICTION_DEVICE``.
    ``dst_path``: where a remote model is downloaded (default: a new folder in the system temp folder that
    MLflow never removes; use ``reloaded_model`` for a load that cleans up).
    """
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri, model_config={"device": device} if device else None,
                                    dst_path=None if dst_path is None else str(dst_path))


@contextlib.contextmanager
def reloaded_model(model_uri: str, device: str | None = None) -> Iterator[Any]:
    """The model loaded for a check and its downloaded files removed afterwards.

    ``mlflow.pyfunc.load_model`` downloads a model held by a remote store (``mlflow server``) into
    ``tempfile.mkdtemp()`` and never deletes it: a copy of the whole package left behind per load.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="datamint-reload-") as folder:
        yield load_model(model_uri, device=device, dst_path=folder)
