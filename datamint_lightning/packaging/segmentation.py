"""2D segmentation packages: log a trained smp network as a Datamint ``image_segmentation`` model, and read
masks from a network or a package the same way (the registration gate compares the two)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datamint_lightning.packaging.packager import request_example, segmentation_specs, write_model_files


def log_segmentation_model(
    network,
    network_config: dict[str, Any],
    labels: list[str],
    preprocessing,
    run_id: str,
    examples: list[np.ndarray] = (),
    model_settings: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    registered_model_name: str | None = None,
    input_example: Any = None,
):
    """Log ``network`` as a Datamint segmentation model to ``run_id``; returns MLflow's ``ModelInfo``.
    The input example defaults to the first example slice (strided to 64 px) in the JSON request form."""
    import tempfile

    from datamint_lightning.packaging.flavor import log_model
    from datamint_lightning.serving.segmentation_model import DatamintSegmentationModel
    from datamint_lightning.serving.settings import ModelSettings

    settings = ModelSettings.from_dict(
        {"need_gpu": False, "batch_size": 16, "input_size": [preprocessing.image_size] * 2, **(model_settings or {})}
    ).to_dict()
    if input_example is None and len(examples):
        input_example = request_example(examples[0], {"mode": "image"})
    with tempfile.TemporaryDirectory() as folder:
        spec = {
            "network": {**network_config, "encoder_weights": None},
            "labels": list(labels),
            "preprocessing": preprocessing.to_dict(),
            "settings": settings,
        }
        return log_model(
            DatamintSegmentationModel(),
            artifacts=write_model_files(folder, spec, network.eval().cpu()),
            annotation_specs=segmentation_specs(list(labels), "image"),
            model_settings=settings,
            run_id=run_id,
            metadata=metadata,
            registered_model_name=registered_model_name,
            input_example=input_example,
        )


def network_masks(network, preprocessing, labels: list[str], examples: list[np.ndarray]) -> list[np.ndarray]:
    """Per-label masks (L, H, W) for each example slice, computed by the in-memory ``network`` through the
    serving code path (so any difference from the package is a packaging defect, not a code difference)."""
    from datamint_lightning.serving.segmentation import mask_annotations, segment_slices

    network = network.eval().cpu()
    masks = []
    for example in examples:
        label_map, probs = segment_slices(network, preprocessing, np.asarray(example)[None])
        masks.append(np.stack([a["mask"] for a in mask_annotations(label_map[0], probs[0], list(labels), "image")]))
    return masks


def package_masks(model, examples: list[np.ndarray]) -> list[np.ndarray]:
    """Per-label masks (L, H, W) that a loaded Datamint segmentation package predicts for each example."""
    return [np.stack([a["mask"] for a in annotations]) for annotations in model.predict(list(examples))]
