"""Taking 2D slices out of (Z, H, W) volumes along an axis, and putting per-slice results back."""

from __future__ import annotations

from typing import Any

import numpy as np

from datamint_lightning.errors import PredictionError, excerpt
from datamint_lightning.serving.inputs import ImageInput, VolumeInput

AXIS_NAMES = {0: "axial (z)", 1: "coronal (y)", 2: "sagittal (x)"}


def check_axis(axis: Any) -> int:
    try:
        value = int(axis)
    except (TypeError, ValueError, OverflowError):
        value = -1
    if value not in AXIS_NAMES:
        raise PredictionError(f"axis={excerpt(axis)} must be 0 (axial), 1 (coronal) or 2 (sagittal).")
    return value


def require_volume(item: ImageInput | VolumeInput, mode: str) -> VolumeInput:
    if not isinstance(item, VolumeInput):
        raise PredictionError(
            f"Mode {mode!r} takes (Z, H, W) volumes; {item.source} is a 2D image of shape "
            f"{item.array.shape}. Use mode 'image'."
        )
    return item


def check_index(index: Any, volume: VolumeInput, axis: int, name: str = "slice_index") -> int:
    size = volume.array.shape[axis]
    try:
        value = int(index)
    except (TypeError, ValueError, OverflowError):
        raise PredictionError(f"{name}={excerpt(index)} must be an integer.") from None
    if not 0 <= value < size:
        raise PredictionError(
            f"{name}={value} is out of range for {volume.source}: it has {size} slices along "
            f"axis {axis} ({AXIS_NAMES[axis]}), so valid indices are 0..{size - 1}."
        )
    return value


def slice_stack(volume: np.ndarray, axis: int, indices: list[int] | None = None) -> np.ndarray:
    """(N, A, B) slices along ``axis`` (all of them, or ``indices``), as a contiguous array."""
    moved = np.moveaxis(volume, axis, 0)
    return np.ascontiguousarray(moved if indices is None else moved[indices])


def restore_axis(stack: np.ndarray, axis: int, class_axis: bool = False) -> np.ndarray:
    """Undo ``slice_stack`` for a full stack of results ((N, A, B) or (N, C, A, B) with ``class_axis``)."""
    if axis == 0:
        return stack
    if class_axis:  # (N, C, A, B) -> (C, ...) -> move N back to ``axis`` -> (Z, C, H, W) layout
        per_class = np.moveaxis(stack, 1, 0)
        return np.moveaxis(np.moveaxis(per_class, 1, axis + 1), 0, 1)
    return np.moveaxis(stack, 0, axis)
