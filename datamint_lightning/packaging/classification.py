"""2D classifier packages: save or log a torchvision/timm classifier as a Datamint ``image_classification``
(softmax) or ``multilabel_image_classification`` (sigmoid) model, and read every label's score from a network or
a package the same way (the registration gate compares the two).

Both sides of the gate go through the serving code: the checkpoint's network answers through
``serving.classification.classify_slices`` on inputs decoded by ``serving.decode.load_input``, exactly what the
packaged model runs after reloading.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.errors import PackagingError
from datamint_lightning.packaging.packager import request_example, write_model_files

# The gate asks for every label's score: multi-class answers its top label, multi-label every label >= 0.
GATE_PARAMS = {"mode": "image", "confidence_threshold": 0.0}


def model_class(multilabel: bool) -> type:
    from datamint_lightning.serving.classification_model import (
        DatamintClassificationModel,
        DatamintMultilabelClassificationModel,
    )

    return DatamintMultilabelClassificationModel if multilabel else DatamintClassificationModel


def classification_settings(preprocessing, model_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    from datamint_lightning.serving.settings import ModelSettings

    return ModelSettings.from_dict(
        {"need_gpu": False, "batch_size": 16, "input_size": [preprocessing.image_size] * 2, **(model_settings or {})}
    ).to_dict()


def category_specs(labels: list[str], scope: str = "image") -> list[dict[str, Any]]:
    return [{"identifier": name, "type": "category", "scope": scope, "required": False} for name in labels]


def classification_artifacts(
    folder: str | Path,
    network,
    network_config: dict[str, Any],
    labels: list[str],
    preprocessing,
    model_settings: dict[str, Any],
    multilabel: bool,
) -> dict[str, str]:
    """Artifacts of a 2D classifier; checks the config rebuilds a network answering one score per label."""
    import torch

    from datamint_lightning.networks.classifiers import build_classifier

    config = {**network_config, "num_classes": len(labels)}
    if network_config.get("num_classes") not in (None, len(labels)):
        raise PackagingError(
            f"network_config num_classes={network_config['num_classes']} but there are {len(labels)} labels {labels}."
        )
    rebuilt = build_classifier(config)
    try:  # the saved config must rebuild exactly this network, or load_context would fail later
        rebuilt.load_state_dict(network.state_dict())
    except RuntimeError as error:
        raise PackagingError(f"network_config {config} does not describe the given network: {error}") from error
    with torch.inference_mode():
        size = preprocessing.image_size
        outputs = rebuilt(torch.zeros(1, int(config.get("in_channels", 1)), size, size))
    if tuple(outputs.shape) != (1, len(labels)):
        raise PackagingError(f"The classifier answers shape {tuple(outputs.shape)}; expected (1, {len(labels)}).")
    spec = {
        "network": config,
        "labels": list(labels),
        "preprocessing": preprocessing.to_dict(),
        "settings": model_settings,
        "multilabel": bool(multilabel),
    }
    return write_model_files(folder, spec, network)


def _checked_labels(labels: list[str]) -> list[str]:
    labels = list(labels)
    if not labels or len(set(labels)) != len(labels):
        raise PackagingError(f"labels={labels} must be distinct and non-empty.")
    return labels


def _requirements(network_config: dict[str, Any]) -> list[str]:
    from datamint_lightning.networks.classifiers import PIP_PACKAGES
    from datamint_lightning.packaging.flavor import default_pip_requirements

    return default_pip_requirements(
        (PIP_PACKAGES.get(str(network_config.get("library", "torchvision")), "torchvision"),)
    )


def log_classification(
    network,
    network_config: dict[str, Any],
    labels: list[str],
    preprocessing,
    run_id: str,
    multilabel: bool = False,
    input_example: Any = None,
    metadata: dict[str, Any] | None = None,
    model_settings: dict[str, Any] | None = None,
    registered_model_name: str | None = None,
):
    """Log ``network`` to ``run_id`` as a Datamint classification model; returns MLflow's ``ModelInfo``."""
    from datamint_lightning.packaging.flavor import log_model

    labels = _checked_labels(labels)
    settings = classification_settings(preprocessing, model_settings)
    with tempfile.TemporaryDirectory() as folder:
        artifacts = classification_artifacts(
            folder, network.eval().cpu(), network_config, labels, preprocessing, settings, multilabel
        )
        return log_model(
            model_class(multilabel)(),
            artifacts=artifacts,
            annotation_specs=category_specs(labels),
            model_settings=settings,
            run_id=run_id,
            metadata=metadata,
            input_example=input_example,
            pip_requirements=_requirements(network_config),
            registered_model_name=registered_model_name,
        )


def save_classification(
    path: str | Path,
    network,
    network_config: dict[str, Any],
    labels: list[str],
    preprocessing,
    multilabel: bool = False,
    model_settings: dict[str, Any] | None = None,
    input_example: Any = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Save a torchvision/timm 2D classifier as a Datamint classification model directory (no run needed).

    ``network_config``: ``{"library": "torchvision" | "timm", "arch": ..., "in_channels": 1, ...}``;
    ``preprocessing``: the ``Preprocessing`` used in training.
    """
    from datamint_lightning.packaging.flavor import save_model

    labels = _checked_labels(labels)
    settings = classification_settings(preprocessing, model_settings)
    if input_example is None:
        input_example = request_example(
            np.linspace(-200, 300, 32 * 32, dtype=np.float32).reshape(32, 32), {"mode": "image"}
        )
    with tempfile.TemporaryDirectory() as folder:
        artifacts = classification_artifacts(
            folder, network.eval().cpu(), network_config, labels, preprocessing, settings, multilabel
        )
        save_model(
            model_class(multilabel)(),
            path,
            artifacts=artifacts,
            annotation_specs=category_specs(labels),
            model_settings=settings,
            pip_requirements=_requirements(network_config),
            input_example=input_example,
            metadata=metadata,
        )


def network_scores(network, preprocessing, examples: list[Any], multilabel: bool) -> list[np.ndarray]:
    """Every label's score (K,) per example from an in-memory network, decoded and run as the package does."""
    from datamint_lightning.serving.classification import classify_slices
    from datamint_lightning.serving.decode import load_input

    if not examples:
        return []
    inputs = [load_input(example, index) for index, example in enumerate(examples)]
    probs = classify_slices(
        network.eval().cpu(), preprocessing, [i.array for i in inputs], [i.display_8bit for i in inputs], multilabel
    )
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
    same = [
        e.shape == a.shape and bool(np.all(np.abs(e - a) <= tolerance)) and int(np.argmax(e)) == int(np.argmax(a))
        for e, a in zip(expected, actual)
    ]
    return float(np.mean(same))
