"""3D items of a project: whole volumes normalised and resampled to a target spacing once, cached on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamint_lightning.data.cache import ArrayCache, cache_key
from datamint_lightning.data.preprocessing import Preprocessing
from datamint_lightning.data.projects import Project, Resource
from datamint_lightning.data.slices import read_resource, source_digests
from datamint_lightning.errors import DataError


def target_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target))


def resample(volume: np.ndarray, shape: tuple[int, ...], is_label: bool) -> np.ndarray:
    """(z, y, x) volume to ``shape``: trilinear for images, nearest for label maps."""
    if tuple(volume.shape) == tuple(shape):
        return volume
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(volume))[None, None].float()
    if is_label:
        out = F.interpolate(tensor, size=shape, mode="nearest-exact")
        return out[0, 0].numpy().astype(volume.dtype)
    return F.interpolate(tensor, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()


def prepare_volume(
    project: Project,
    resource: Resource,
    lookup: np.ndarray,
    preprocessing: Preprocessing,
    spacing: tuple[float, float, float] | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The cache file of one preprocessed volume: ``image`` float32 and ``label`` uint8, both (z, y, x), and
    ``present`` (the label values it holds)."""
    if resource.kind != "volume":
        raise DataError(
            f"Resource {resource.id} of project {project.name!r} is a 2D {resource.kind}; "
            "3D datasets (data.dims=3) need volumes."
        )
    cache = ArrayCache(cache_dir, "volumes")
    # Only intensity settings matter here: 3D items keep their grid (or the target spacing), not image_size.
    intensity = {k: v for k, v in preprocessing.to_dict().items() if k != "image_size"}
    key = cache_key(
        sources=source_digests(project, resource),
        lookup=lookup.tolist(),
        intensity=intensity,
        spacing=list(spacing) if spacing else None,
        native_spacing=resource.spacing,
    )
    if cache.path(key).exists() and cache.get(key, members=("present",)) is not None:
        return cache.path(key)
    image, label = read_resource(project, resource, with_label=True)
    label = lookup[np.clip(label, 0, 255).astype(np.uint8)]
    image = preprocessing.normalize_volume(image, bool(resource.metadata.get("display_8bit", False)))
    if spacing:
        if not resource.spacing:
            raise DataError(f"Resource {resource.id} of project {project.name!r} has no spacing to resample from.")
        shape = target_shape(image.shape, tuple(resource.spacing), tuple(spacing))
        image, label = resample(image, shape, False), resample(label, shape, True)
    # The label values present are stored too, so a warm setup counts labels without reading the volumes.
    return cache.put(
        key,
        {
            "image": image.astype(np.float32),
            "label": label.astype(np.uint8),
            "present": np.unique(label).astype(np.int64),
        },
    )


def cached_volume_shape(file: str | Path) -> tuple[int, ...]:
    """The (z, y, x) shape of a volume cached by ``prepare_volume``, read from the array header only."""
    import zipfile

    with zipfile.ZipFile(file) as archive, archive.open("image.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return tuple(read_header(member)[0])
