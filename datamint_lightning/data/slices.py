"""2D items of a project: 2D images and slices of volumes along a chosen axis, preprocessed once and cached."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamint_lightning.data.cache import RowCache, cache_key, file_digest
from datamint_lightning.data.preprocessing import Preprocessing
from datamint_lightning.data.projects import Project, Resource
from datamint_lightning.data.volumes import read_nifti
from datamint_lightning.errors import DataError


def label_lookup(project: Project, labels: list[str]) -> np.ndarray:
    """A table mapping the project's label values to 0 (background) and 1..K for the requested labels."""
    missing = [name for name in labels if name not in project.labels]
    if missing or not labels:
        raise DataError(
            f"Label(s) {missing or labels} not in project {project.name!r}; "
            f"it has {sorted(project.labels)}. Set data.labels to some of these."
        )
    table = np.zeros(256, dtype=np.uint8)
    for index, name in enumerate(labels, start=1):
        table[project.labels[name]] = index
    return table


@dataclass(frozen=True)
class SliceSet:
    """Preprocessed slices of one resource: images (n, S, S) float32 in [0, 1], labels (n, S, S) uint8 or None,
    memory-mapped from the cache entry ``folder`` (``images.npy``, ``labels.npy``, ``slice_indices.npy``)."""

    images: np.ndarray
    labels: np.ndarray | None
    slice_indices: np.ndarray
    folder: Path | None = None


def source_digests(project: Project, resource: Resource) -> dict[str, str | None]:
    """Content digests of a resource's stored files (what cache keys and lineage digests are made of)."""
    return {
        "image": file_digest(project.path(resource.image)),
        "label": file_digest(project.path(resource.label)) if resource.label else None,
    }


def read_resource(project: Project, resource: Resource, with_label: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A resource's (z, y, x) image and, when asked, its label map, checked to share one grid and known values."""
    image, _ = read_nifti(project.path(resource.image))
    if not with_label:
        return image, None
    if resource.label is None:
        raise DataError(
            f"Resource {resource.id} of project {project.name!r} has no label map; segmentation "
            "needs one for every resource."
        )
    label, _ = read_nifti(project.path(resource.label), dtype=np.int16)
    if image.shape != label.shape:
        raise DataError(
            f"Image {resource.image} has shape {image.shape} but its label {resource.label} has "
            f"{label.shape}; they must share one grid."
        )
    known = set(project.labels.values()) | {0}
    found = set(np.unique(label).tolist())
    if not found <= known:
        raise DataError(
            f"Label file {project.path(resource.label)} has values {sorted(found - known)} that are "
            f"not declared labels {project.labels}."
        )
    return image, label


def extract_slices(
    project: Project,
    resource: Resource,
    lookup: np.ndarray | None,
    preprocessing: Preprocessing,
    empty_slice_fraction: float,
    seed: int,
    cache_dir: str | Path | None = None,
    axis: int = 0,
) -> SliceSet:
    """The resource's 2D items, windowed and resized, read from the cache when the same inputs were seen before.

    With a ``lookup`` (segmentation) slices holding a requested label are kept plus a seeded
    ``empty_slice_fraction`` of the others; without one (classification) every slice is kept. A 2D image
    (``kind="image"``) is one slice whatever the ``axis``.
    """
    if resource.kind == "image":
        axis = 0
    if axis not in (0, 1, 2):
        raise DataError(f"Slice axis {axis} must be 0 (axial), 1 (coronal) or 2 (sagittal).")
    display_8bit = bool(resource.metadata.get("display_8bit", False))
    cache = RowCache(cache_dir, "slices")
    key = cache_key(
        sources=source_digests(project, resource)
        if lookup is not None
        else {"image": file_digest(project.path(resource.image))},
        lookup=None if lookup is None else lookup.tolist(),
        preprocessing=preprocessing.to_dict(),
        display_8bit=display_8bit,
        empty_slice_fraction=empty_slice_fraction,
        seed=seed,
        axis=axis,
    )
    cached = cache.get(key)
    if cached is not None:
        return SliceSet(cached["images"], cached.get("labels"), np.asarray(cached["slice_indices"]), cache.path(key))

    image, label = read_resource(project, resource, with_label=lookup is not None)
    image = np.moveaxis(image, axis, 0)
    if label is None:
        indices = np.arange(image.shape[0], dtype=np.int64)
    else:
        label = np.moveaxis(lookup[np.clip(label, 0, 255).astype(np.uint8)], axis, 0)
        annotated = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
        empty = np.setdiff1d(np.arange(label.shape[0]), annotated)
        rng = np.random.default_rng(seed)
        keep_empty = rng.choice(empty, size=round(len(empty) * empty_slice_fraction), replace=False)
        indices = np.sort(np.concatenate([annotated, keep_empty])).astype(np.int64)

    import torch

    arrays = {
        "images": preprocessing.prepare(image[indices], display_8bit).squeeze(1).numpy().astype(np.float32),
        "slice_indices": indices,
    }
    if label is not None:
        resized = preprocessing.resize_labels(torch.from_numpy(np.ascontiguousarray(label[indices]))[:, None])
        arrays["labels"] = resized.squeeze(1).numpy().astype(np.uint8)
    folder = cache.put(key, arrays)
    stored = cache.get(key) or arrays  # the mapped files: the arrays just computed are freed
    return SliceSet(stored["images"], stored.get("labels"), indices, folder)
