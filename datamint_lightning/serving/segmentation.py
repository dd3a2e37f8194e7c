"""Batched 2D segmentation inference shared by the packaged model and the registration check."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datamint_lightning.data.limits import check_time
from datamint_lightning.data.preprocessing import Preprocessing


@torch.inference_mode()
def segment_slices(
    network: torch.nn.Module,
    preprocessing: Preprocessing,
    slices: np.ndarray,
    display_8bit: bool = False,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) raw slices to a label map (N, H, W) uint8 and class probabilities (N, C, H, W) float32.

    Logits are resized back to the input grid before the softmax, so masks follow the input's resolution.
    """
    height, width = slices.shape[-2:]
    label_maps, probabilities = [], []
    for start in range(0, len(slices), batch_size):
        check_time("Segmenting the request's images")  # a served request over its time budget stops here
        batch = preprocessing.prepare(slices[start : start + batch_size], display_8bit).to(device)
        logits = network(batch).float()
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probs = logits.softmax(dim=1)
        probabilities.append(probs.cpu().numpy())
        label_maps.append(probs.argmax(dim=1).to(torch.uint8).cpu().numpy())
    return np.concatenate(label_maps), np.concatenate(probabilities)


def predictive_entropy(probabilities: np.ndarray, class_axis: int) -> np.ndarray:
    """Per-pixel entropy of the class probabilities divided by log(number of classes), float32 in [0, 1]:
    0 where one class has all the probability, 1 where every class is equally likely."""
    probabilities = np.asarray(probabilities, np.float32)
    classes = probabilities.shape[class_axis]
    if classes < 2:
        return np.zeros(np.delete(probabilities.shape, class_axis), np.float32)
    terms = probabilities * np.log(np.clip(probabilities, 1e-12, 1.0))
    return np.clip(-terms.sum(axis=class_axis) / np.float32(np.log(classes)), 0.0, 1.0).astype(np.float32)


def mask_annotations(
    label_map: np.ndarray,
    probabilities: np.ndarray,
    labels: list[str],
    scope: str,
    threshold: float | None = None,
    extra: dict[str, Any] | None = None,
    class_axis: int | None = None,
    entropy_map: bool = False,
) -> list[dict[str, Any]]:
    """One segmentation annotation per label: its binary mask on the input grid, a confidence and an entropy.

    ``label_map``/``probabilities`` hold one image (H, W)/(C, H, W) or a stack (Z, H, W)/(Z, C, H, W). Without
    ``threshold`` a pixel belongs to its arg-max label; with it, to every label whose probability reaches it
    (so masks of different labels may overlap). ``class_axis`` of ``probabilities`` defaults to 0 for one
    image and 1 for a stack. ``confidence`` is the mean probability of the label over its mask (for arg-max
    masks: the mean max-probability); ``entropy`` the mean normalised predictive entropy over the mask (None for
    an empty mask). With ``entropy_map`` every annotation also carries the per-pixel map (one array, shared).
    """
    class_axis = (0 if label_map.ndim == 2 else 1) if class_axis is None else class_axis
    entropy = predictive_entropy(probabilities, class_axis)
    annotations = []
    for index, name in enumerate(labels, start=1):
        class_probs = np.take(probabilities, index, axis=class_axis)
        mask = label_map == index if threshold is None else class_probs >= threshold
        confidence = float(class_probs[mask].mean()) if mask.any() else 0.0
        annotations.append(
            {
                "type": "segmentation",
                "identifier": name,
                "label": name,
                "scope": scope,
                "mask": mask.astype(np.uint8),
                "confidence": round(confidence, 6),
                "entropy": round(float(entropy[mask].mean()), 6) if mask.any() else None,
                **({"entropy_map": entropy} if entropy_map else {}),
                **(extra or {}),
            }
        )
    return annotations


def on_input_grid(annotations: list[dict[str, Any]], volume) -> list[dict[str, Any]]:
    """Volume annotations with their (Z, H, W) display-oriented masks put back on the input's own voxel grid
    (the file's array order: nibabel/pynrrd (i, j, k), DICOM (slice, row, column)), entropy maps too, each
    saying which grid (``grid``: shape, spacing, affine, orientation codes, array order, and for DICOM the SOP
    instance UIDs) and the mask's voxel size along its own axes (``spacing``; None for an array sent without one)."""
    grid = volume.voxel_grid()
    described = grid.describe()
    spacing = list(grid.spacing) if volume.grid is not None or volume.spacing else None
    on_grid: dict[int, np.ndarray] = {}  # an entropy map shared by the annotations is moved once
    for annotation in annotations:
        annotation.update(mask=grid.to_file(annotation["mask"]), spacing=spacing, grid=described)
        if "entropy_map" in annotation:
            shared = annotation["entropy_map"]
            if id(shared) not in on_grid:
                on_grid[id(shared)] = grid.to_file(shared)
            annotation["entropy_map"] = on_grid[id(shared)]
    return annotations


def with_warning(annotations: list[dict[str, Any]], warning: str | None) -> list[dict[str, Any]]:
    """Attach a preprocessing mismatch (see ``Preprocessing.mismatch``) to every annotation of one input."""
    if warning:
        for annotation in annotations:
            annotation["preprocessing_warning"] = warning
    return annotations
