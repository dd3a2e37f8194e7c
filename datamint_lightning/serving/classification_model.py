"""``DatamintClassificationModel``: a packaged 2D image classifier, rebuilt from config + weights.

Artifacts: ``model_spec`` (JSON: ``network`` = classifier config, ``labels``, ``preprocessing``, ``settings``,
``multilabel``) and ``weights`` (safetensors). Images are classified in batches; volumes slice by slice along
``axis`` (modes ``slice`` and ``volume``), one result per slice.
``DatamintMultilabelClassificationModel`` scores every label independently (sigmoid + threshold).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datamint_lightning.errors import PackagingError, PredictionError
from datamint_lightning.serving.datamint_model import DatamintModel
from datamint_lightning.serving.enums import PredictionMode, TaskType
from datamint_lightning.serving.inputs import ImageInput
from datamint_lightning.serving.modes import prediction_mode
from datamint_lightning.serving.segmentation_model import (
    SPEC_ARTIFACT,
    WEIGHTS_ARTIFACT,
    Annotations,
    resolve_batch_size,
    resolve_threshold,
)
from datamint_lightning.serving.slicing import check_axis, check_index, require_volume, slice_stack

COMMON_PARAMS = ("confidence_threshold", "threshold", "batch_size")
MULTILABEL_THRESHOLD = 0.5  # when neither the request nor the saved settings name one


class DatamintClassificationModel(DatamintModel):
    """Multi-class classification of 2D images (softmax, top-1 plus every label's score)."""

    task_type: ClassVar[TaskType] = TaskType.IMAGE_CLASSIFICATION
    pip_packages: ClassVar[tuple[str, ...]] = ("torchvision",)
    multilabel: ClassVar[bool] = False

    def load_artifacts(self, context) -> None:
        from datamint_lightning.data.preprocessing import Preprocessing
        from datamint_lightning.networks import load_network
        from datamint_lightning.serving.settings import ModelSettings

        self.spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        if bool(self.spec.get("multilabel", False)) != self.multilabel:
            raise PackagingError(
                f"The saved classifier has multilabel={self.spec.get('multilabel')} but is "
                f"loaded as {type(self).__name__}."
            )
        self.labels: list[str] = list(self.spec["labels"])
        self.preprocessing = Preprocessing.from_dict(self.spec["preprocessing"])
        self.settings = ModelSettings.from_dict(self.spec.get("settings") or self.settings.to_dict())
        self.network = load_network(self.spec["network"], context.artifacts[WEIGHTS_ARTIFACT], library="torchvision")

    def _threshold(self, confidence_threshold: Any, threshold: Any) -> float | None:
        value = resolve_threshold(self.settings, confidence_threshold, threshold)
        return MULTILABEL_THRESHOLD if value is None and self.multilabel else value

    def _classify(self, slices: list[np.ndarray], display_8bit: list[bool], batch_size: Any) -> np.ndarray:
        from datamint_lightning.serving.classification import classify_slices

        return classify_slices(
            self.network,
            self.preprocessing,
            slices,
            display_8bit,
            self.multilabel,
            resolve_batch_size(self.settings, batch_size),
            self.inference_device,
        )

    def _annotate(
        self,
        probs: np.ndarray,
        scope: str,
        threshold: float | None,
        extra: dict[str, Any] | None = None,
        display_8bit: bool = False,
    ) -> list[dict[str, Any]]:
        from datamint_lightning.serving.classification import category_annotations
        from datamint_lightning.serving.segmentation import with_warning

        annotations = category_annotations(probs, self.labels, self.multilabel, threshold, scope, extra)
        return with_warning(annotations, self.preprocessing.mismatch(display_8bit))

    @prediction_mode(PredictionMode.IMAGE, param_keys=COMMON_PARAMS, fallback_to_default=False)
    def predict_image(
        self, inputs: list[Any], confidence_threshold=None, threshold=None, batch_size=None
    ) -> Annotations:
        """2D images of any size, classified in batches."""
        threshold = self._threshold(confidence_threshold, threshold)
        for item in inputs:
            if not isinstance(item, ImageInput):
                raise PredictionError(
                    f"Mode 'image' takes 2D images; {item.source} is a volume of shape "
                    f"{item.array.shape}. Use mode 'volume' or 'slice'."
                )
        probs = self._classify([i.array for i in inputs], [i.display_8bit for i in inputs], batch_size)
        return [self._annotate(p, "image", threshold, display_8bit=i.display_8bit) for p, i in zip(probs, inputs)]

    @prediction_mode(
        PredictionMode.SLICE, param_keys=(*COMMON_PARAMS, "slice_index", "axis"), fallback_to_default=False
    )
    def predict_slice(
        self, inputs: list[Any], slice_index, confidence_threshold=None, threshold=None, batch_size=None, axis=0
    ) -> Annotations:
        """One slice (``slice_index`` along ``axis``) of each volume, batched across the volumes."""
        threshold, axis = self._threshold(confidence_threshold, threshold), check_axis(axis)
        indices = [check_index(slice_index, require_volume(item, "slice"), axis) for item in inputs]
        slices = [slice_stack(item.array, axis, [index])[0] for item, index in zip(inputs, indices)]
        probs = self._classify(slices, [False] * len(slices), batch_size)
        return [
            self._annotate(p, "slice", threshold, {"slice_index": index, "axis": axis})
            for p, index in zip(probs, indices)
        ]

    @prediction_mode(PredictionMode.VOLUME, param_keys=(*COMMON_PARAMS, "axis"), fallback_to_default=False)
    def predict_volume(
        self, inputs: list[Any], confidence_threshold=None, threshold=None, batch_size=None, axis=0
    ) -> Annotations:
        """Every slice along ``axis``: each slice's annotations, tagged with its ``slice_index``."""
        threshold, axis = self._threshold(confidence_threshold, threshold), check_axis(axis)
        results = []
        for item in inputs:
            stack = slice_stack(require_volume(item, "volume").array, axis)
            probs = self._classify(list(stack), [False] * len(stack), batch_size)
            results.append(
                [
                    annotation
                    for index, p in enumerate(probs)
                    for annotation in self._annotate(p, "slice", threshold, {"slice_index": index, "axis": axis})
                ]
            )
        return results

    def predict_default(
        self, inputs: list[Any], confidence_threshold=None, threshold=None, batch_size=None, axis=0
    ) -> Annotations:
        """Mixed images and volumes: images as in ``image``, volumes as in ``volume``."""
        common = {"confidence_threshold": confidence_threshold, "threshold": threshold, "batch_size": batch_size}
        images = [i for i, item in enumerate(inputs) if isinstance(item, ImageInput)]
        volumes = [i for i, item in enumerate(inputs) if not isinstance(item, ImageInput)]
        results: list[Any] = [None] * len(inputs)
        if images:
            for index, answer in zip(images, self.predict_image([inputs[i] for i in images], **common)):
                results[index] = answer
        if volumes:
            for index, answer in zip(volumes, self.predict_volume([inputs[i] for i in volumes], **common, axis=axis)):
                results[index] = answer
        return results


class DatamintMultilabelClassificationModel(DatamintClassificationModel):
    """Multi-label classification: one annotation per label whose sigmoid score reaches the threshold."""

    task_type: ClassVar[TaskType] = TaskType.MULTILABEL_IMAGE_CLASSIFICATION
    multilabel: ClassVar[bool] = True
