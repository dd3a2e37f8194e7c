"""``datamint_lightning.mlflow``: the official Datamint SDK's ``datamint.mlflow`` API, offline.

Code written against the SDK's documentation runs with ``import datamint.mlflow`` changed to
``import datamint_lightning.mlflow``. Every name is the project's own implementation (re-exported here and at the
package root), loaded on first use so that importing this module stays cheap. Unlike the SDK, importing it
configures nothing: MLflow finds the active project's experiment through entry points, and
``setup_mlflow_environment()`` / ``ensure_mlflow_configured()`` are explicit.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ensure_mlflow_configured": "datamint_lightning.tracking.mlflow_setup",
    "setup_mlflow_environment": "datamint_lightning.tracking.mlflow_setup",
    "EnvVars": "datamint_lightning.tracking.mlflow_setup",
    "set_project": "datamint_lightning.tracking.mlflow_setup",
    "DatamintExperimentProvider": "datamint_lightning.tracking.experiment_provider",
    "DatamintStore": "datamint_lightning.tracking.datamint_store",
    "DatamintArtifactsRepository": "datamint_lightning.tracking.datamint_store",
    "MLflowModelCheckpoint": "datamint_lightning.tracking.model_checkpoint",
    "DatamintMLflowDataset": "datamint_lightning.data.lineage",
    "BaseDatamintModel": "datamint_lightning.serving.base_model",
    "DatamintModel": "datamint_lightning.serving.datamint_model",
    "ModelSettings": "datamint_lightning.serving.settings",
    "TaskType": "datamint_lightning.serving.enums",
    "PredictionMode": "datamint_lightning.serving.enums",
    "ModeSpec": "datamint_lightning.serving.modes",
    "PredictionRouter": "datamint_lightning.serving.modes",
    "prediction_mode": "datamint_lightning.serving.modes",
    "save_model": "datamint_lightning.packaging.flavor",
    "log_model": "datamint_lightning.packaging.flavor",
    "load_model": "datamint_lightning.packaging.flavor",
    "autolog": "datamint_lightning.training.autolog",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'datamint_lightning.mlflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
