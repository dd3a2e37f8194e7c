"""datamint_lightning: Lightning-first training for medical imaging, tracked and packaged with MLflow.

Heavy libraries (torch, lightning, mlflow, monai) load on first use of a name, so importing the package is fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "train": "datamint_lightning.training.pipeline",
    "TaskTrainer": "datamint_lightning.training.task_trainer",
    "SegmentationTrainer": "datamint_lightning.training.segmentation_trainer",
    "UNetPPTrainer": "datamint_lightning.training.segmentation_trainer",
    "SegmentationModule": "datamint_lightning.training.segmentation_module",
    "ClassificationTrainer": "datamint_lightning.training.classification_trainer",
    "ClassificationModule": "datamint_lightning.training.classification_module",
    "VolumeSegmentationTrainer": "datamint_lightning.training.volume_segmentation_trainer",
    "VolumeSegmentationModule": "datamint_lightning.training.volume_segmentation_module",
    "DatamintDataModule": "datamint_lightning.data.datamodule",
    "ProjectStore": "datamint_lightning.data.projects",
    "Project": "datamint_lightning.data.projects",
    "Resource": "datamint_lightning.data.projects",
    "Preprocessing": "datamint_lightning.data.preprocessing",
    "DEMO_PROJECT_NAME": "datamint_lightning.data.demo",
    "BaseDatamintModel": "datamint_lightning.serving.base_model",
    "DatamintModel": "datamint_lightning.serving.datamint_model",
    "DatamintSegmentationModel": "datamint_lightning.serving.segmentation_model",
    "DatamintVolumeSegmentationModel": "datamint_lightning.serving.volume_model",
    "DatamintClassificationModel": "datamint_lightning.serving.classification_model",
    "DatamintMultilabelClassificationModel": "datamint_lightning.serving.classification_model",
    "inference_device": "datamint_lightning.serving.base_model",
    "compose_config": "datamint_lightning.config",
    "DatamintLightningError": "datamint_lightning.errors",
    "ConfigError": "datamint_lightning.errors",
    "DataError": "datamint_lightning.errors",
    "ProjectNotFoundError": "datamint_lightning.errors",
    "TrackingError": "datamint_lightning.errors",
    "PackagingError": "datamint_lightning.errors",
    "PredictionError": "datamint_lightning.errors",
}
# The official SDK's datamint.mlflow names (see datamint_lightning/mlflow.py), one implementation.
_EXPORTS.update(
    dict.fromkeys(
        (
            "ensure_mlflow_configured",
            "setup_mlflow_environment",
            "EnvVars",
            "set_project",
            "DatamintExperimentProvider",
            "DatamintStore",
            "DatamintArtifactsRepository",
            "MLflowModelCheckpoint",
            "DatamintMLflowDataset",
            "ModelSettings",
            "TaskType",
            "PredictionMode",
            "ModeSpec",
            "PredictionRouter",
            "prediction_mode",
            "save_model",
            "log_model",
            "load_model",
            "autolog",
        ),
        "datamint_lightning.mlflow",
    )
)
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'datamint_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # pragma: no cover
    from datamint_lightning.data.datamodule import DatamintDataModule
    from datamint_lightning.training.segmentation_trainer import SegmentationTrainer, UNetPPTrainer
