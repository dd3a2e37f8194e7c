"""``DatamintSegmentationModel``: the packaged 2D segmentation model, rebuilt from config + weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datamint_lightning.errors import PredictionError
from datamint_lightning.serving.base_model import BaseDatamintModel, inference_device
from datamint_lightning.serving.inputs import ImageInput, VolumeInput

SPEC_ARTIFACT = "model_spec"  # JSON: network config, labels, preprocessing, settings
WEIGHTS_ARTIFACT = "weights"  # safetensors state dict of the network


def load_network(spec: dict[str, Any], weights_path: str | Path, device: str = "cpu"):
    """The network described by ``spec['network']`` with the saved weights, in eval mode on ``device``."""
    from safetensors.torch import load_file

    from datamint_lightning.training.networks import build_network

    network = build_network({**spec["network"], "encoder_weights": None})
    network.load_state_dict(load_file(str(weights_path)))
    return network.eval().to(device)


class DatamintSegmentationModel(BaseDatamintModel):
    """Semantic segmentation of 2D images; volumes are segmented slice by slice along the first axis."""

    task_type: ClassVar[str] = "image_segmentation"

    def load_context(self, context) -> None:
        from datamint_lightning.data.preprocessing import Preprocessing

        self.spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        self.labels: list[str] = list(self.spec["labels"])
        self.preprocessing = Preprocessing.from_dict(self.spec["preprocessing"])
        self.device = inference_device(self.device or self.spec.get("settings", {}).get("device"))
        self.network = load_network(self.spec, context.artifacts[WEIGHTS_ARTIFACT], self.device)

    def _segment(self, slices: np.ndarray, display_8bit: bool, params: dict[str, Any]):
        from datamint_lightning.serving.segmentation import segment_slices

        batch_size = int(params.get("batch_size") or self.spec.get("settings", {}).get("batch_size", 16))
        return segment_slices(self.network, self.preprocessing, slices, display_8bit, batch_size, self.device)

    def _threshold(self, params: dict[str, Any]) -> float | None:
        value = params.get("confidence_threshold")
        if value is None:
            return None
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise PredictionError(f"confidence_threshold={value} must be within [0, 1].")
        return value

    def predict_image(self, inputs: list[Any], params: dict[str, Any]) -> list[list[dict[str, Any]]]:
        from datamint_lightning.serving.segmentation import mask_annotations

        results: list[list[dict[str, Any]] | None] = [None] * len(inputs)
        groups: dict[tuple, list[int]] = {}  # batch inputs that share a grid and an intensity convention
        for index, item in enumerate(inputs):
            if not isinstance(item, ImageInput):
                raise PredictionError(f"Mode 'image' takes 2D images; {item.source} is a volume. Use mode 'volume'.")
            groups.setdefault((item.array.shape, item.display_8bit), []).append(index)
        for (_, display_8bit), indices in groups.items():
            label_maps, probs = self._segment(np.stack([inputs[i].array for i in indices]), display_8bit, params)
            for position, index in enumerate(indices):
                results[index] = mask_annotations(label_maps[position], probs[position], self.labels, "image",
                                                  self._threshold(params))
        return results

    def predict_volume(self, inputs: list[Any], params: dict[str, Any]) -> list[list[dict[str, Any]]]:
        from datamint_lightning.serving.segmentation import mask_annotations

        results = []
        for item in inputs:
            if not isinstance(item, VolumeInput):
                raise PredictionError(f"Mode 'volume' takes (Z, H, W) volumes; {item.source} is a 2D image.")
            label_map, probs = self._segment(item.array, False, params)
            results.append(mask_annotations(label_map, probs, self.labels, "volume", self._threshold(params)))
        return results

    def predict_default(self, inputs: list[Any], params: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """Mixed images and volumes: each input by its own kind."""
        return [(self.predict_image if isinstance(item, ImageInput) else self.predict_volume)([item], params)[0]
                for item in inputs]
