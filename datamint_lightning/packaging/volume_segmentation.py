"""3D segmentation packages: save or log a MONAI network as a Datamint ``volume_segmentation`` model, and read
label maps from a network or a package the same way (the registration gate compares the two).

The package holds the training ``Preprocessing`` (intensity) and the training spacing, so a volume given to the
model is normalised and resampled exactly as the training volumes were.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.packaging.packager import request_example, segmentation_specs, write_model_files


def volume_segmentation_artifacts(
    folder: str | Path,
    network,
    network_config: dict[str, Any],
    labels: list[str],
    model_settings: dict[str, Any],
    preprocessing=None,
) -> dict[str, str]:
    """Artifacts of a MONAI 3D segmentation network (``network_config``: ``{"arch": ..., **arguments}``)."""
    from datamint_lightning.serving.settings import ModelSettings

    spec = {
        "network": dict(network_config),
        "labels": list(labels),
        "settings": ModelSettings.from_dict(model_settings).to_dict(),
        **({"preprocessing": preprocessing.to_dict()} if preprocessing is not None else {}),
    }
    return write_model_files(folder, spec, network.eval().cpu())


def _save_options(labels: list[str], model_settings: dict[str, Any]) -> dict[str, Any]:
    from datamint_lightning.packaging.flavor import default_pip_requirements
    from datamint_lightning.serving.volume_model import DatamintVolumeSegmentationModel

    return {
        "datamint_model": DatamintVolumeSegmentationModel(),
        "model_settings": model_settings,
        "annotation_specs": segmentation_specs(list(labels), "volume"),
        "pip_requirements": default_pip_requirements(("monai",)),
    }


def save_volume_segmentation(
    path: str | Path,
    network,
    network_config: dict[str, Any],
    labels: list[str],
    model_settings: dict[str, Any],
    input_example: Any = None,
    preprocessing=None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Save a MONAI 3D segmentation network as a Datamint ``volume_segmentation`` model directory."""
    from datamint_lightning.packaging.flavor import save_model

    with tempfile.TemporaryDirectory() as folder:
        artifacts = volume_segmentation_artifacts(
            folder, network, network_config, labels, model_settings, preprocessing
        )
        options = _save_options(labels, model_settings)
        save_model(
            options.pop("datamint_model"),
            path,
            artifacts=artifacts,
            input_example=input_example,
            metadata=metadata,
            **options,
        )


def volume_model_settings(
    roi_size: list[int], spacing: Any, preprocessing, sw_batch_size: int = 4, overlap: float = 0.25
) -> dict[str, Any]:
    """The ``model_settings`` of a 3D model: window size, training spacing (null: none resampled), the training
    ``Preprocessing`` as its intensity mapping, window batch and overlap."""
    from datamint_lightning.serving.settings import ModelSettings

    return ModelSettings.from_dict(
        {
            "need_gpu": False,
            "batch_size": 1,
            "input_size": list(roi_size),
            "spacing": list(spacing) if spacing else None,
            "intensity": preprocessing.to_dict(),
            "sw_batch_size": int(sw_batch_size),
            "overlap": float(overlap),
        }
    ).to_dict()


def volume_request_example(item: Any, max_side: int = 32) -> tuple[list[dict], dict]:
    """A small JSON-request example (``array_b64`` with ``spacing``) from one prediction input, strided so that
    no side exceeds ``max_side`` (the spacing grows by the same strides)."""
    from datamint_lightning.serving.decode import load_input

    volume = load_input(item)
    array = np.asarray(volume.array)
    steps = [max(1, math.ceil(n / max_side)) for n in array.shape]
    example = request_example(array[:: steps[0]], {"mode": "volume"}, max_side=max_side)
    if volume.spacing:
        inplane = max(1, math.ceil(max(array.shape[1:]) / max_side))  # the stride request_example took
        example[0][0]["spacing"] = [
            volume.spacing[0] * steps[0],
            volume.spacing[1] * inplane,
            volume.spacing[2] * inplane,
        ]
    return example


def log_volume_segmentation_model(
    network,
    network_config: dict[str, Any],
    labels: list[str],
    preprocessing,
    model_settings: dict[str, Any],
    run_id: str,
    examples: list[Any] = (),
    metadata: dict[str, Any] | None = None,
    registered_model_name: str | None = None,
    input_example: Any = None,
):
    """Log ``network`` as a Datamint ``volume_segmentation`` model to ``run_id``; returns MLflow's ``ModelInfo``.
    The input example defaults to the first example, strided to 32 voxels a side, in the JSON request form."""
    from datamint_lightning.packaging.flavor import log_model

    if input_example is None and len(examples):
        input_example = volume_request_example(examples[0])
    with tempfile.TemporaryDirectory() as folder:
        artifacts = volume_segmentation_artifacts(
            folder, network, network_config, labels, model_settings, preprocessing
        )
        return log_model(
            artifacts=artifacts,
            run_id=run_id,
            metadata=metadata,
            registered_model_name=registered_model_name,
            input_example=input_example,
            **_save_options(labels, model_settings),
        )


def network_label_maps(network, model_settings: dict[str, Any], examples: list[Any]) -> list[np.ndarray]:
    """The label map of each example (a path, array or input dict, as given to ``predict``) computed by the
    in-memory ``network`` through the serving code path, on CPU, on the input's own voxel grid."""
    from datamint_lightning.serving.decode import load_input
    from datamint_lightning.serving.settings import ModelSettings
    from datamint_lightning.serving.volume_segmentation import segment_volume

    network, settings = network.eval().cpu(), ModelSettings.from_dict(model_settings)
    maps = []
    for index, example in enumerate(examples):
        volume = load_input(example, index)
        label_map = segment_volume(network, volume.array, volume.spacing, settings, "cpu")[0]
        maps.append(volume.to_input_grid(label_map))
    return maps


def package_label_maps(model, examples: list[Any]) -> list[np.ndarray]:
    """The label map of each example as a loaded ``volume_segmentation`` package predicts it (its per-label
    arg-max masks on the input's grid, numbered 1..K in label order)."""
    maps = []
    for annotations in model.predict(list(examples), params={"mode": "volume"}):
        label_map = np.zeros(annotations[0]["mask"].shape, np.uint8)
        for index, annotation in enumerate(annotations, start=1):
            label_map[annotation["mask"].astype(bool)] = index
        maps.append(label_map)
    return maps
