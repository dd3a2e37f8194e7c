"""``DatamintSegmentationModel``: the packaged 2D segmentation model, rebuilt from config + weights.

Images are segmented in batches; volumes are bridged slice by slice along ``axis`` (modes ``volume``,
``slice``, ``slice_range``, ``primary_slice``). Mode ``volume`` answers masks on the input file's own voxel grid
and array order (described under each annotation's ``grid``); slice modes answer 2D masks of slices taken in
display orientation (``slice_index`` along ``axis`` of the (z, y, x) display array).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datamint_lightning.errors import PredictionError, excerpt
from datamint_lightning.networks import load_network
from datamint_lightning.serving.datamint_model import DatamintModel
from datamint_lightning.serving.enums import PredictionMode, TaskType
from datamint_lightning.serving.inputs import ImageInput, VolumeInput
from datamint_lightning.serving.modes import ModeNotApplicable, prediction_mode
from datamint_lightning.serving.settings import ModelSettings
from datamint_lightning.serving.slicing import check_axis, check_index, require_volume, restore_axis, slice_stack

SPEC_ARTIFACT = "model_spec"  # JSON: network config, labels, preprocessing, settings
WEIGHTS_ARTIFACT = "weights"  # safetensors state dict of the network
COMMON_PARAMS = ("confidence_threshold", "threshold", "batch_size", "entropy_map")
Annotations = list[list[dict[str, Any]]]


def resolve_threshold(settings: ModelSettings, confidence_threshold: Any = None, threshold: Any = None) -> float | None:
    """``confidence_threshold`` (the SDK's name) or ``threshold``, else the saved default; None means arg-max."""
    value = confidence_threshold if confidence_threshold is not None else threshold
    value = settings.threshold if value is None else value
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise PredictionError(f"threshold={excerpt(value)} must be a number within [0, 1].") from None
    if not 0.0 <= value <= 1.0:
        raise PredictionError(f"threshold={value} must be within [0, 1].")
    return value


def resolve_batch_size(settings: ModelSettings, batch_size: Any = None, saved: str = "batch_size") -> int:
    """The request's ``batch_size``, else the model's setting ``saved``. A served request may lower it, never
    raise it: peak memory grows with the batch, and the model's setting is what its operator sized."""
    from datamint_lightning.serving.path_policy import serving_requests

    default = int(getattr(settings, saved))
    if batch_size is None:
        return default
    try:
        value = int(batch_size)
        whole = not isinstance(batch_size, bool) and value == float(batch_size)
    except (TypeError, ValueError, OverflowError):
        value, whole = 0, False
    if not whole or value <= 0:
        raise PredictionError(f"batch_size={excerpt(batch_size)} must be a positive integer.")
    if serving_requests() and value > default:
        raise PredictionError(
            f"batch_size={value} is over this model's {saved} of {default} (model_settings.{saved}); "
            f"a request may ask for at most {default}."
        )
    return value


class DatamintSegmentationModel(DatamintModel):
    """Semantic segmentation of 2D images; volumes are segmented slice by slice."""

    task_type: ClassVar[TaskType] = TaskType.IMAGE_SEGMENTATION
    pip_packages: ClassVar[tuple[str, ...]] = ("segmentation-models-pytorch",)

    def load_artifacts(self, context) -> None:
        from datamint_lightning.data.preprocessing import Preprocessing

        self.spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        self.labels: list[str] = list(self.spec["labels"])
        self.preprocessing = Preprocessing.from_dict(self.spec["preprocessing"])
        self.settings = ModelSettings.from_dict(self.spec.get("settings") or self.settings.to_dict())
        self.network = load_network(self.spec["network"], context.artifacts[WEIGHTS_ARTIFACT], "cpu", library="smp")

    def _segment(self, slices: np.ndarray, display_8bit: bool, batch_size: Any) -> tuple[np.ndarray, np.ndarray]:
        from datamint_lightning.serving.segmentation import segment_slices

        return segment_slices(
            self.network,
            self.preprocessing,
            slices,
            display_8bit,
            resolve_batch_size(self.settings, batch_size),
            self.inference_device,
        )

    def _annotate(
        self,
        label_map: np.ndarray,
        probs: np.ndarray,
        scope: str,
        threshold: float | None,
        extra: dict[str, Any] | None = None,
        display_8bit: bool = False,
        entropy_map: Any = False,
    ) -> list[dict[str, Any]]:
        from datamint_lightning.serving.segmentation import mask_annotations, with_warning

        annotations = mask_annotations(
            label_map, probs, self.labels, scope, threshold, extra, entropy_map=bool(entropy_map)
        )
        return with_warning(annotations, self.preprocessing.mismatch(display_8bit))

    @prediction_mode(PredictionMode.IMAGE, param_keys=COMMON_PARAMS, fallback_to_default=False)
    def predict_image(
        self, inputs: list[Any], confidence_threshold=None, threshold=None, batch_size=None, entropy_map=False
    ) -> Annotations:
        """2D images, batched across inputs that share a grid and an intensity convention."""
        threshold = resolve_threshold(self.settings, confidence_threshold, threshold)
        results: list[list[dict[str, Any]] | None] = [None] * len(inputs)
        groups: dict[tuple, list[int]] = {}
        for index, item in enumerate(inputs):
            if not isinstance(item, ImageInput):
                raise PredictionError(
                    f"Mode 'image' takes 2D images; {item.source} is a volume of shape "
                    f"{item.array.shape}. Use mode 'volume', 'slice' or 'slice_range'."
                )
            groups.setdefault((item.array.shape, item.display_8bit), []).append(index)
        for (_, display_8bit), indices in groups.items():
            label_maps, probs = self._segment(np.stack([inputs[i].array for i in indices]), display_8bit, batch_size)
            for position, index in enumerate(indices):
                results[index] = self._annotate(
                    label_maps[position], probs[position], "image", threshold, None, display_8bit, entropy_map
                )
        return results

    @prediction_mode(PredictionMode.VOLUME, param_keys=(*COMMON_PARAMS, "axis"), fallback_to_default=False)
    def predict_volume(
        self, inputs: list[Any], confidence_threshold=None, threshold=None, batch_size=None, axis=0, entropy_map=False
    ) -> Annotations:
        """Every slice along ``axis`` (of the display orientation); masks on the input file's own voxel grid."""
        from datamint_lightning.serving.segmentation import on_input_grid

        threshold, axis = resolve_threshold(self.settings, confidence_threshold, threshold), check_axis(axis)
        results = []
        for item in inputs:
            volume = require_volume(item, "volume")
            label_map, probs = self._segment(slice_stack(volume.array, axis), False, batch_size)
            annotations = self._annotate(
                restore_axis(label_map, axis),
                restore_axis(probs, axis, class_axis=True),
                "volume",
                threshold,
                {"axis": axis},
                entropy_map=entropy_map,
            )
            results.append(on_input_grid(annotations, volume))
        return results

    @prediction_mode(
        PredictionMode.SLICE, param_keys=(*COMMON_PARAMS, "slice_index", "axis"), fallback_to_default=False
    )
    def predict_slice(
        self,
        inputs: list[Any],
        slice_index,
        confidence_threshold=None,
        threshold=None,
        batch_size=None,
        axis=0,
        entropy_map=False,
    ) -> Annotations:
        """One slice (``slice_index`` along ``axis``) of each volume, batched across the volumes."""
        threshold, axis = resolve_threshold(self.settings, confidence_threshold, threshold), check_axis(axis)
        indices = [check_index(slice_index, require_volume(item, "slice"), axis) for item in inputs]
        return self._predict_slices(inputs, [[i] for i in indices], axis, threshold, batch_size, entropy_map, True)

    @prediction_mode(
        PredictionMode.SLICE_RANGE,
        param_keys=(*COMMON_PARAMS, "slice_start", "slice_stop", "axis"),
        fallback_to_default=False,
    )
    def predict_slice_range(
        self,
        inputs: list[Any],
        slice_start,
        slice_stop=None,
        confidence_threshold=None,
        threshold=None,
        batch_size=None,
        axis=0,
        entropy_map=False,
    ) -> Annotations:
        """Slices ``slice_start`` to ``slice_stop`` (exclusive, like Python; default: to the end) along ``axis``."""
        threshold, axis = resolve_threshold(self.settings, confidence_threshold, threshold), check_axis(axis)
        ranges = []
        for item in inputs:
            volume = require_volume(item, "slice_range")
            start = check_index(slice_start, volume, axis, "slice_start")
            stop = (
                volume.array.shape[axis]
                if slice_stop is None
                else check_index(int(slice_stop) - 1, volume, axis, "slice_stop - 1") + 1
            )
            if stop <= start:
                raise PredictionError(f"slice_stop={slice_stop} must be greater than slice_start={slice_start}.")
            ranges.append(list(range(start, stop)))
        return self._predict_slices(inputs, ranges, axis, threshold, batch_size, entropy_map)

    @prediction_mode(PredictionMode.PRIMARY_SLICE, param_keys=(*COMMON_PARAMS, "axis"))
    def predict_primary_slice(
        self, inputs: list[Any], confidence_threshold=None, threshold=None, batch_size=None, axis=0, entropy_map=False
    ) -> Annotations:
        """The key slice each volume names (``primary_slice``), else its middle slice along ``axis``.

        2D images are their own primary slice: they fall back to ``default``.
        """
        if any(isinstance(item, ImageInput) for item in inputs):
            raise ModeNotApplicable("primary_slice of a 2D image is the image itself")
        threshold, axis = resolve_threshold(self.settings, confidence_threshold, threshold), check_axis(axis)
        indices = [
            [
                check_index(item.primary_slice, item, axis, "primary_slice")
                if item.primary_slice is not None
                else item.array.shape[axis] // 2
            ]
            for item in inputs
        ]
        return self._predict_slices(inputs, indices, axis, threshold, batch_size, entropy_map, True)

    def _predict_slices(
        self,
        inputs: list[VolumeInput],
        indices: list[list[int]],
        axis: int,
        threshold: float | None,
        batch_size: Any,
        entropy_map: Any = False,
        single: bool = False,
    ) -> Annotations:
        """Chosen slices of several volumes, one batched pass per slice shape; ``single``: one slice, 2D masks."""
        stacks = [slice_stack(item.array, axis, chosen) for item, chosen in zip(inputs, indices)]
        by_shape: dict[tuple, list[int]] = {}
        for position, stack in enumerate(stacks):
            by_shape.setdefault(stack.shape[1:], []).append(position)
        outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for positions in by_shape.values():
            label_maps, probs = self._segment(np.concatenate([stacks[p] for p in positions]), False, batch_size)
            offset = 0
            for p in positions:
                count = len(indices[p])
                outputs[p] = label_maps[offset : offset + count], probs[offset : offset + count]
                offset += count
        results = []
        for position, chosen in enumerate(indices):
            label_map, probs = outputs[position]
            if single:
                extra = {"slice_index": chosen[0], "axis": axis}
                results.append(self._annotate(label_map[0], probs[0], "slice", threshold, extra, False, entropy_map))
            else:
                extra = {"slice_indices": chosen, "axis": axis}
                results.append(self._annotate(label_map, probs, "slice", threshold, extra, False, entropy_map))
        return results

    def predict_default(
        self, inputs: list[Any], confidence_threshold=None, threshold=None, batch_size=None, axis=0, entropy_map=False
    ) -> Annotations:
        """Mixed images and volumes: images batched as in ``image``, volumes as in ``volume``."""
        images = [i for i, item in enumerate(inputs) if isinstance(item, ImageInput)]
        volumes = [i for i, item in enumerate(inputs) if not isinstance(item, ImageInput)]
        results: list[Any] = [None] * len(inputs)
        common = {
            "confidence_threshold": confidence_threshold,
            "threshold": threshold,
            "batch_size": batch_size,
            "entropy_map": entropy_map,
        }
        if images:
            for index, annotations in zip(images, self.predict_image([inputs[i] for i in images], **common)):
                results[index] = annotations
        if volumes:
            for index, annotations in zip(
                volumes, self.predict_volume([inputs[i] for i in volumes], **common, axis=axis)
            ):
                results[index] = annotations
        return results
