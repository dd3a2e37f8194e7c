"""Shared packaging pieces (request examples, spec + weights artifacts, annotation specs). Each task's own
packaging lives beside it: ``packaging.segmentation`` (2D), ``packaging.volume_segmentation`` (3D),
``packaging.classification``."""

from __future__ import annotations

import base64
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def request_example(array: np.ndarray, params: dict[str, Any], max_side: int = 64) -> tuple[list[dict], dict]:
    """A small JSON-request input example (``array_b64`` form) from ``array``, strided down to ``max_side``."""
    step = max(1, math.ceil(max(array.shape[-2:]) / max_side))
    small = np.ascontiguousarray(np.asarray(array, dtype="<f4")[..., ::step, ::step])
    item = {
        "array_b64": base64.b64encode(small.tobytes()).decode("ascii"),
        "dtype": "float32",
        "shape": list(small.shape),
    }
    return [item], params


def write_model_files(folder: str | Path, spec: dict[str, Any], network) -> dict[str, str]:
    """``model_spec`` (JSON) and ``weights`` (safetensors) artifacts for ``network`` in ``folder``."""
    from datamint_lightning.networks import save_spec_and_weights
    from datamint_lightning.serving.segmentation_model import SPEC_ARTIFACT, WEIGHTS_ARTIFACT

    files = save_spec_and_weights(folder, spec, network)
    return {SPEC_ARTIFACT: str(files["spec"]), WEIGHTS_ARTIFACT: str(files["weights"])}


def segmentation_specs(labels: list[str], scope: str) -> list[dict[str, Any]]:
    return [{"identifier": name, "type": "segmentation", "scope": scope, "required": False} for name in labels]


def volume_segmentation_artifacts(
    folder: str | Path, network, network_config: dict[str, Any], labels: list[str], model_settings: dict[str, Any]
) -> dict[str, str]:
    """Artifacts of a MONAI 3D segmentation network (``network_config``: ``{"arch": ..., **arguments}``)."""
    from datamint_lightning.serving.settings import ModelSettings

    spec = {
        "network": dict(network_config),
        "labels": list(labels),
        "settings": ModelSettings.from_dict(model_settings).to_dict(),
    }
    return write_model_files(folder, spec, network)


def save_volume_segmentation(
    path: str | Path,
    network,
    network_config: dict[str, Any],
    labels: list[str],
    model_settings: dict[str, Any],
    input_example: Any = None,
) -> None:
    """Save a MONAI 3D segmentation network as a Datamint ``volume_segmentation`` model directory."""
    from datamint_lightning.packaging.flavor import default_pip_requirements, save_model
    from datamint_lightning.serving.volume_model import DatamintVolumeSegmentationModel

    with tempfile.TemporaryDirectory() as folder:
        artifacts = volume_segmentation_artifacts(folder, network, network_config, labels, model_settings)
        save_model(
            DatamintVolumeSegmentationModel(),
            path,
            artifacts=artifacts,
            annotation_specs=segmentation_specs(labels, "volume"),
            model_settings=model_settings,
            pip_requirements=default_pip_requirements(("monai",)),
            input_example=input_example,
        )
