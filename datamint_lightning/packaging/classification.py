"""Packaging a trained 2D classifier as a Datamint ``image_classification`` (softmax) or
``multilabel_image_classification`` (sigmoid) model, and the scores the registration gate compares.

Both sides of the gate go through the serving code: the checkpoint's network answers through
``serving.classification.classify_slices`` on inputs decoded by ``serving.decode.load_input``, exactly what the
packaged model runs after reloading.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from datamint_lightning.errors import PackagingError

# The gate asks for every label's score: multi-class answers its top label, multi-label every label >= 0.
GATE_PARAMS = {"mode": "image", "confidence_threshold": 0.0}


def model_class(multilabel: bool) -> type:
    from datamint_lightning.serving.classification_model import (DatamintClassificationModel,
                                                                 DatamintMultilabelClassificationModel)

    return DatamintMultilabelClassificationModel if multilabel else DatamintClassificationModel


def classification_settings(preprocessing, model_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    from datamint_lightning.serving.settings import ModelSettings

    return ModelSettings.from_dict({"need_gpu": False, "batch_size": 16, "input_size": [preprocessing.image_size] * 2,
                                    **(model_settings or {})}).to_dict()


def log_classification(network, network_config: dict[str, Any], labels: list[str], preprocessing, run_id: str,
                       multilabel: bool = False, input_example: Any = None, metadata: dict[str, Any] | None = None,
                       model_settings: dict[str, Any] | None = None, registered_model_name: str | None = None):
    """Log ``network`` to ``run_id`` as a Datamint classification model; returns MLflow's ``ModelInfo``."""
    from datamint_lightning.networks.classifiers import PIP_PACKAGES
    from datamint_lightning.packaging.flavor import default_pip_requirements, log_model
    from datamint_lightning.packaging.packager import category_specs, classification_artifacts

    labels = list(labels)
    if not labels or len(set(labels)) != len(labels):
        raise PackagingError(f"labels={labels} must be distinct and non-empty.")
    settings = classification_settings(preprocessing, model_settings)
    library = PIP_PACKAGES.get(str(network_config.get("library", "torchvision")), "torchvision")
    with tempfile.TemporaryDirectory() as folder:
        artifacts = classification_artifacts(folder, network.eval().cpu(), network_config, labels, preprocessing,
                                             settings, multilabel)
        return log_model(model_class(multilabel), artifacts=artifacts, annotation_specs=category_specs(labels),
                         model_settings=settings, run_id=run_id, metadata=metadata, input_example=input_example,
                         pip_requirements=default_pip_requirements((library,)),
                         registered_model_name=registered_model_name)


def network_scores(network, preprocessing, examples: list[Any], multilabel: bool) -> list[np.ndarray]:
    """Every label's score (K,) per example from an in-memory network, decoded and run as the package does."""
    from datamint_lightning.serving.classification import classify_slices
    from datamint_lightning.serving.decode import load_input

    if not examples:
        return []
    inputs = [load_input(example, index) for index, example in enumerate(examples)]
    probs = classify_slices(network.eval().cpu(), preprocessing, [i.array for i in inputs],
                            [i.display_8bit for i in inputs], multilabel)
    return list(probs)


def package_scores(model, examples: list[Any], labels: list[str]) -> list[np.ndarray]:
    """Every label's score (K,) per example from a loaded Datamint classification model."""
    if not examples:
        return []
    scores = []
    for index, annotations in enumerate(model.predict(examples, params=GATE_PARAMS)):
        if not annotations:
            raise PackagingError(f"The packaged classifier gave no annotation for gate example {index}.")
        scores.append(np.array([annotations[0]["scores"][name] for name in labels], dtype=np.float32))
    return scores


def score_agreement(expected: list[np.ndarray], actual: list[np.ndarray], tolerance: float = 1e-4) -> float:
    """The fraction of examples whose scores match within ``tolerance`` and whose top label is the same."""
    if len(expected) != len(actual):
        return 0.0
    if not expected:
        return 1.0
    same = [e.shape == a.shape and bool(np.all(np.abs(e - a) <= tolerance)) and int(np.argmax(e)) == int(np.argmax(a))
            for e, a in zip(expected, actual)]
    return float(np.mean(same))
