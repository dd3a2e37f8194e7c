"""``DatamintVolumeSegmentationModel``: a packaged 3D segmentation network (MONAI), predicted by sliding window.

Artifacts: ``model_spec`` (JSON: ``network`` = ``{"arch": "UNet", ...}`` MONAI constructor arguments, ``labels``,
``settings`` = ``ModelSettings`` with the window size as ``input_size`` and the training ``Preprocessing`` dict as
``intensity``) and ``weights`` (safetensors). Mode ``volume`` answers masks on the input file's own voxel grid
(each annotation's ``grid`` says which); mode ``slice`` answers one axial slice of the display orientation.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from datamint_lightning.networks import load_network
from datamint_lightning.serving.datamint_model import DatamintModel
from datamint_lightning.serving.enums import PredictionMode, TaskType
from datamint_lightning.serving.modes import prediction_mode
from datamint_lightning.serving.segmentation_model import (
    COMMON_PARAMS,
    SPEC_ARTIFACT,
    WEIGHTS_ARTIFACT,
    Annotations,
    resolve_batch_size,
    resolve_threshold,
)
from datamint_lightning.serving.settings import ModelSettings
from datamint_lightning.serving.slicing import check_index, require_volume


class DatamintVolumeSegmentationModel(DatamintModel):
    """Semantic segmentation of 3D volumes with MONAI sliding-window inference; masks on the input's grid."""

    task_type: ClassVar[TaskType] = TaskType.VOLUME_SEGMENTATION
    pip_packages: ClassVar[tuple[str, ...]] = ("monai",)

    def load_artifacts(self, context) -> None:
        self.spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        self.labels: list[str] = list(self.spec["labels"])
        self.settings = ModelSettings.from_dict(self.spec.get("settings"))
        if self.spec.get("preprocessing"):  # the training Preprocessing dict wins over a settings intensity
            self.settings = replace(self.settings, intensity=dict(self.spec["preprocessing"]))
        self.network = load_network(self.spec["network"], context.artifacts[WEIGHTS_ARTIFACT], library="monai")

    def _check_sizes(self, inputs: list[Any], mode: str) -> None:
        """Every volume's resampled grid within the limits, before the first one is segmented."""
        from datamint_lightning.serving.volume_segmentation import check_resampling

        for item in inputs:
            volume = require_volume(item, mode)
            check_resampling(volume.array.shape, volume.spacing, self.settings, volume.source)

    def _segment(self, item: Any, mode: str, batch_size: Any):
        from datamint_lightning.serving.volume_segmentation import segment_volume

        volume = require_volume(item, mode)
        windows = resolve_batch_size(self.settings, batch_size, "sw_batch_size")
        return volume, segment_volume(
            self.network, volume.array, volume.spacing, self.settings, self.inference_device, windows
        )

    @prediction_mode(PredictionMode.VOLUME, param_keys=COMMON_PARAMS, fallback_to_default=False)
    def predict_volume(
        self, inputs: list[Any], confidence_threshold=None, threshold=None, batch_size=None, entropy_map=False
    ) -> Annotations:
        """Each volume whole; ``batch_size`` is the number of windows per forward pass."""
        from datamint_lightning.serving.segmentation import mask_annotations, on_input_grid

        threshold = resolve_threshold(self.settings, confidence_threshold, threshold)
        self._check_sizes(inputs, "volume")
        results = []
        for item in inputs:
            volume, (label_map, probs) = self._segment(item, "volume", batch_size)
            annotations = mask_annotations(
                label_map, probs, self.labels, "volume", threshold, class_axis=0, entropy_map=bool(entropy_map)
            )
            results.append(on_input_grid(annotations, volume))
        return results

    @prediction_mode(
        PredictionMode.SLICE,
        param_keys=("slice_index", *COMMON_PARAMS),
        fallback_to_default=False,
    )
    def predict_slice(
        self,
        inputs: list[Any],
        slice_index,
        confidence_threshold=None,
        threshold=None,
        batch_size=None,
        entropy_map=False,
    ) -> Annotations:
        """The axial slice ``slice_index`` of each volume, cut from the whole-volume prediction (3D context)."""
        from datamint_lightning.serving.segmentation import mask_annotations

        threshold = resolve_threshold(self.settings, confidence_threshold, threshold)
        indices = [check_index(slice_index, require_volume(item, "slice"), 0) for item in inputs]
        self._check_sizes(inputs, "slice")
        results = []
        for item, index in zip(inputs, indices):
            _, (label_map, probs) = self._segment(item, "slice", batch_size)
            results.append(
                mask_annotations(
                    label_map[index],
                    probs[:, index],
                    self.labels,
                    "slice",
                    threshold,
                    {"slice_index": index, "axis": 0},
                    class_axis=0,
                    entropy_map=bool(entropy_map),
                )
            )
        return results

    def predict_default(
        self, inputs: list[Any], confidence_threshold=None, threshold=None, batch_size=None, entropy_map=False
    ) -> Annotations:
        return self.predict_volume(inputs, confidence_threshold, threshold, batch_size, entropy_map)
