"""Packaging a trained network as a Datamint model and checking the package by reloading it."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.errors import PackagingError


@dataclass(frozen=True)
class PackagedModel:
    model_uri: str
    model_id: str | None
    registered_name: str | None = None
    version: str | None = None


def _predict_masks(predictions: list[list[dict[str, Any]]]) -> list[np.ndarray]:
    return [np.stack([a["mask"] for a in annotations]) for annotations in predictions]


def verify_package(model_uri: str, expected: list[np.ndarray], examples: list[np.ndarray]) -> float:
    """Reload the logged model and compare its masks with the checkpoint's; returns the agreement (0..1)."""
    from datamint_lightning.packaging.flavor import load_model

    actual = _predict_masks(load_model(model_uri, device="cpu").predict(examples))
    agreement = float(np.mean([np.mean(a == e) for a, e in zip(actual, expected)])) if examples else 1.0
    if len(actual) != len(expected) or agreement < 0.999:
        raise PackagingError(f"The packaged model {model_uri} disagrees with its checkpoint on held-out slices "
                             f"(pixel agreement {agreement:.4%}); it was not registered.")
    return agreement


def package_segmentation(network, network_config: dict[str, Any], labels: list[str], preprocessing,
                         run_id: str, examples: list[np.ndarray], model_settings: dict[str, Any] | None = None,
                         metadata: dict[str, Any] | None = None) -> PackagedModel:
    """Log ``network`` as a Datamint segmentation model to ``run_id`` and check it reproduces ``network``."""
    from safetensors.torch import save_file

    from datamint_lightning.packaging.flavor import log_model
    from datamint_lightning.serving.segmentation import mask_annotations, segment_slices
    from datamint_lightning.serving.segmentation_model import (SPEC_ARTIFACT, WEIGHTS_ARTIFACT,
                                                               DatamintSegmentationModel)

    network = network.eval().cpu()
    expected = []
    for example in examples:
        label_map, probs = segment_slices(network, preprocessing, example[None])
        expected.append(np.stack([a["mask"] for a in mask_annotations(label_map[0], probs[0], labels, "image")]))
    settings = {"need_gpu": False, "batch_size": 16, **(model_settings or {})}
    with tempfile.TemporaryDirectory() as folder:
        spec_path, weights_path = Path(folder) / "model_spec.json", Path(folder) / "weights.safetensors"
        spec = {"network": {**network_config, "encoder_weights": None}, "labels": labels,
                "preprocessing": preprocessing.to_dict(), "settings": settings}
        spec_path.write_text(json.dumps(spec, indent=2))
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(weights_path))
        info = log_model(DatamintSegmentationModel,
                         artifacts={SPEC_ARTIFACT: str(spec_path), WEIGHTS_ARTIFACT: str(weights_path)},
                         annotation_specs=[{"identifier": name, "type": "segmentation", "scope": "image",
                                            "required": False} for name in labels],
                         model_settings=settings, run_id=run_id, metadata=metadata)
    verify_package(info.model_uri, expected, examples)
    return PackagedModel(info.model_uri, getattr(info, "model_id", None))
