"""Shared packaging pieces (request examples, spec + weights artifacts, annotation specs) and the classification
saver (2D segmentation: ``packaging.segmentation``; 3D: ``packaging.volume_segmentation``)."""

from __future__ import annotations

import base64
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.errors import PackagingError


def request_example(array: np.ndarray, params: dict[str, Any], max_side: int = 64) -> tuple[list[dict], dict]:
    """A small JSON-request input example (``array_b64`` form) from ``array``, strided down to ``max_side``."""
    step = max(1, math.ceil(max(array.shape[-2:]) / max_side))
    small = np.ascontiguousarray(np.asarray(array, dtype="<f4")[..., ::step, ::step])
    item = {"array_b64": base64.b64encode(small.tobytes()).decode("ascii"), "dtype": "float32",
            "shape": list(small.shape)}
    return [item], params


def write_model_files(folder: str | Path, spec: dict[str, Any], network) -> dict[str, str]:
    """``model_spec`` (JSON) and ``weights`` (safetensors) artifacts for ``network`` in ``folder``."""
    from datamint_lightning.networks import save_spec_and_weights
    from datamint_lightning.serving.segmentation_model import SPEC_ARTIFACT, WEIGHTS_ARTIFACT

    files = save_spec_and_weights(folder, spec, network)
    return {SPEC_ARTIFACT: str(files["spec"]), WEIGHTS_ARTIFACT: str(files["weights"])}


def segmentation_specs(labels: list[str], scope: str) -> list[dict[str, Any]]:
    return [{"identifier": name, "type": "segmentation", "scope": scope, "required": False} for name in labels]


def category_specs(labels: list[str], scope: str = "image") -> list[dict[str, Any]]:
    return [{"identifier": name, "type": "category", "scope": scope, "required": False} for name in labels]


def classification_artifacts(folder: str | Path, network, network_config: dict[str, Any], labels: list[str],
                             preprocessing, model_settings: dict[str, Any], multilabel: bool) -> dict[str, str]:
    """Artifacts of a 2D classifier; checks the config rebuilds a network answering one score per label."""
    import torch

    from datamint_lightning.networks.classifiers import build_classifier

    config = {**network_config, "num_classes": len(labels)}
    if network_config.get("num_classes") not in (None, len(labels)):
        raise PackagingError(f"network_config num_classes={network_config['num_classes']} but there are "
                             f"{len(labels)} labels {labels}.")
    rebuilt = build_classifier(config)
    state = network.state_dict()
    try:  # the saved config must rebuild exactly this network, or load_context would fail later
        rebuilt.load_state_dict(state)
    except RuntimeError as error:
        raise PackagingError(f"network_config {config} does not describe the given network: {error}") from error
    with torch.inference_mode():
        size = preprocessing.image_size
        outputs = rebuilt(torch.zeros(1, int(config.get("in_channels", 1)), size, size))
    if tuple(outputs.shape) != (1, len(labels)):
        raise PackagingError(f"The classifier answers shape {tuple(outputs.shape)}; expected (1, {len(labels)}).")
    spec = {"network": config, "labels": list(labels), "preprocessing": preprocessing.to_dict(),
            "settings": model_settings, "multilabel": bool(multilabel)}
    return write_model_files(folder, spec, network)


def save_classification(path: str | Path, network, network_config: dict[str, Any], labels: list[str], preprocessing,
                        multilabel: bool = False, model_settings: dict[str, Any] | None = None,
                        input_example: Any = None, metadata: dict[str, Any] | None = None) -> None:
    """Save a torchvision/timm 2D classifier as a Datamint ``image_classification`` (or, with ``multilabel``,
    ``multilabel_image_classification``) model directory.

    ``network_config``: ``{"library": "torchvision" | "timm", "arch": ..., "in_channels": 1, ...}`` (see
    ``serving/classification.py``); ``preprocessing``: the ``Preprocessing`` used in training.
    """
    from datamint_lightning.packaging.flavor import default_pip_requirements, save_model
    from datamint_lightning.networks.classifiers import PIP_PACKAGES
    from datamint_lightning.serving.classification_model import (DatamintClassificationModel,
                                                                 DatamintMultilabelClassificationModel)
    from datamint_lightning.serving.settings import ModelSettings

    if len(set(labels)) != len(labels) or not labels:
        raise PackagingError(f"labels={labels} must be distinct and non-empty.")
    settings = ModelSettings.from_dict({"need_gpu": False, "batch_size": 16,
                                        "input_size": [preprocessing.image_size] * 2,
                                        **(model_settings or {})}).to_dict()
    model_class = DatamintMultilabelClassificationModel if multilabel else DatamintClassificationModel
    if input_example is None:
        input_example = request_example(np.linspace(-200, 300, 32 * 32, dtype=np.float32).reshape(32, 32),
                                        {"mode": "image"})
    library = PIP_PACKAGES.get(network_config.get("library", "torchvision"), "torchvision")
    with tempfile.TemporaryDirectory() as folder:
        artifacts = classification_artifacts(folder, network.eval().cpu(), network_config, list(labels),
                                             preprocessing, settings, multilabel)
        save_model(path, model_class, artifacts, category_specs(list(labels)), model_settings=settings,
                   pip_requirements=default_pip_requirements((library,)), input_example=input_example,
                   metadata=metadata)
