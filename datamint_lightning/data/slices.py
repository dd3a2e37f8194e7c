"""2D axial slices of a project's volumes, preprocessed once and cached on disk."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamint_lightning.data.preprocessing import Preprocessing
from datamint_lightning.data.projects import Project, Resource
from datamint_lightning.data.volumes import read_nifti
from datamint_lightning.errors import DataError
from datamint_lightning.paths import home_dir


def label_lookup(project: Project, labels: list[str]) -> np.ndarray:
    """A table mapping the project's label values to 0 (background) and 1..K for the requested labels."""
    missing = [name for name in labels if name not in project.labels]
    if missing or not labels:
        raise DataError(f"Label(s) {missing or labels} not in project {project.name!r}; "
                        f"it has {sorted(project.labels)}. Set data.labels to some of these.")
    table = np.zeros(256, dtype=np.uint8)
    for index, name in enumerate(labels, start=1):
        table[project.labels[name]] = index
    return table


@dataclass(frozen=True)
class SliceSet:
    """Preprocessed slices of one volume: images (n, S, S) float32 in [0, 1], labels (n, S, S) uint8."""

    images: np.ndarray
    labels: np.ndarray
    slice_indices: np.ndarray


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_pair(project: Project, resource: Resource) -> tuple[np.ndarray, np.ndarray]:
    if resource.kind != "volume" or resource.label is None:
        raise DataError(f"Resource {resource.id} of project {project.name!r} is a {resource.kind} without a "
                        "label volume; slice datasets need volumes with label maps.")
    image, _ = read_nifti(project.path(resource.image))
    label, _ = read_nifti(project.path(resource.label), dtype=np.int16)
    if image.shape != label.shape:
        raise DataError(f"Image {resource.image} has shape {image.shape} but its label {resource.label} has "
                        f"{label.shape}; they must share one grid.")
    known = set(project.labels.values()) | {0}
    found = set(np.unique(label).tolist())
    if not found <= known:
        raise DataError(f"Label file {project.path(resource.label)} has values {sorted(found - known)} that are "
                        f"not declared labels {project.labels}.")
    return image, label


def extract_slices(project: Project, resource: Resource, lookup: np.ndarray, preprocessing: Preprocessing,
                   empty_slice_fraction: float, seed: int, cache_dir: Path | None = None) -> SliceSet:
    """Slices with any requested label, plus a seeded fraction of the others, windowed and resized."""
    key_source = json.dumps({
        "image": _file_digest(project.path(resource.image)), "label": _file_digest(project.path(resource.label)),
        "lookup": lookup.tolist(), "preprocessing": preprocessing.to_dict(),
        "empty_slice_fraction": empty_slice_fraction, "seed": seed, "version": 1}, sort_keys=True)
    cache_dir = cache_dir or home_dir() / "cache" / "slices"
    cache_file = cache_dir / f"{hashlib.sha256(key_source.encode()).hexdigest()[:32]}.npz"
    if cache_file.exists():
        with np.load(cache_file) as cached:
            return SliceSet(cached["images"], cached["labels"], cached["slice_indices"])

    image, label = _read_pair(project, resource)
    label = lookup[np.clip(label, 0, 255).astype(np.uint8)]
    annotated = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
    empty = np.setdiff1d(np.arange(label.shape[0]), annotated)
    rng = np.random.default_rng(seed)
    keep_empty = rng.choice(empty, size=int(round(len(empty) * empty_slice_fraction)), replace=False)
    indices = np.sort(np.concatenate([annotated, keep_empty])).astype(np.int64)

    import torch

    images = preprocessing.prepare(image[indices]).squeeze(1).numpy()
    labels = preprocessing.resize_labels(torch.from_numpy(label[indices])[:, None]).squeeze(1).numpy()
    result = SliceSet(images.astype(np.float32), labels.astype(np.uint8), indices)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp.npz")
    np.savez(partial, images=result.images, labels=result.labels, slice_indices=result.slice_indices)
    partial.replace(cache_file)
    return result
