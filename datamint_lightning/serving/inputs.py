"""Decoding prediction inputs into 2D images (``ImageInput``) or 3D volumes (``VolumeInput``).

Accepted items: file paths (PNG/JPEG/TIFF/BMP, a DICOM file or a DICOM series folder, NIfTI, NRRD), numpy arrays
((H, W) image, (Z, H, W) volume, taken in modality units), the project's ``Resource`` objects (with an absolute
path or a project root), and the JSON request dicts of ``rest.py``. Volumes are (z, y, x) in display orientation,
and keep the file's own voxel grid (``VoxelGrid``: shape, spacing, affine, the permutation and flips applied on
read) so volume predictions can be put back on the file's voxels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.data.limits import check_pixels, check_voxels
from datamint_lightning.data.readers import DicomSeries
from datamint_lightning.data.volumes import VoxelGrid
from datamint_lightning.errors import PredictionError, excerpt

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")


@dataclass(frozen=True)
class ImageInput:
    array: np.ndarray  # (H, W) float32
    display_8bit: bool
    source: str


@dataclass(frozen=True)
class VolumeInput:
    array: np.ndarray  # (Z, H, W) float32, display orientation
    spacing: tuple[float, float, float] | None
    source: str
    primary_slice: int | None = None  # the slice a reader flagged as key (else the middle one is used)
    grid: VoxelGrid | None = None  # the file's voxel grid; None: the array was given as (z, y, x) numbers

    def voxel_grid(self) -> VoxelGrid:
        """Where results go back to: the file's grid, or the array itself when it came as numbers."""
        return self.grid or VoxelGrid.identity(self.array.shape, self.spacing)

    def to_input_grid(self, display: np.ndarray) -> np.ndarray:
        """A (Z, H, W) result in display orientation, back on the input's own voxel grid and array order."""
        return self.voxel_grid().to_file(display)


def from_array(array: np.ndarray, source: str, spacing: Any = None) -> ImageInput | VolumeInput:
    """An image or volume given as numbers, within the same pixel and voxel limits as a decoded file."""
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise PredictionError(f"{source} has dtype {array.dtype}; expected numbers.")
    if array.size == 0:
        raise PredictionError(f"{source} is empty (shape {array.shape}).")
    if array.ndim == 2:
        check_pixels(array.shape[1], array.shape[0], source)
        return ImageInput(array.astype(np.float32), False, source)
    if array.ndim == 3:
        check_voxels(array.shape, source)
        return VolumeInput(array.astype(np.float32), check_spacing(spacing, source), source)
    raise PredictionError(f"{source} has shape {array.shape}; expected (H, W) for an image or (Z, H, W) for a volume.")


def check_spacing(spacing: Any, source: str) -> tuple[float, float, float] | None:
    """Three finite, positive (z, y, x) sizes in mm, or None when not given."""
    if spacing is None:
        return None
    try:
        values = np.asarray(spacing, dtype=float).ravel()
    except (TypeError, ValueError, OverflowError):
        values = None
    if values is None or values.size != 3 or not np.all(np.isfinite(values)) or not np.all(values > 0):
        raise PredictionError(
            f"{source}: spacing={excerpt(spacing)} must be three positive, finite (z, y, x) sizes in mm."
        )
    return tuple(float(v) for v in values)


def load_resource(resource: Any, index: int) -> ImageInput | VolumeInput:
    path = Path(resource.image)
    root = getattr(resource, "metadata", {}).get("project_root")
    if not path.is_absolute() and root:
        path = Path(root) / path
    if not path.exists():
        raise PredictionError(
            f"input[{index}] is Resource {resource.id} whose file {resource.image} is not found; "
            "pass project.path(resource.image) instead."
        )
    loaded = load_path(path)
    if isinstance(loaded, VolumeInput) and loaded.spacing is None and resource.spacing:
        return replace(loaded, spacing=check_spacing(resource.spacing, loaded.source))
    return loaded


def series_input(series: DicomSeries, source: str) -> VolumeInput:
    """A DICOM series read by ``readers.load_dicom_series`` as a display-oriented volume on the series' grid."""
    grid = series.grid()
    return VolumeInput(
        grid.to_display(series.array).astype(np.float32, copy=False), grid.display_spacing, source, grid=grid
    )


def load_path(path: Path, served_root: Path | None = None) -> ImageInput | VolumeInput:
    """The image or volume in file or folder ``path``.

    ``served_root``: the request comes from a client, and every file it leads to (a folder's files) must lie in
    this folder once links are resolved; headers that name other files (detached NRRD) are refused. None: an
    in-process caller's own file, whose detached NRRD data may come from the header's own folder.
    """
    if not path.exists():
        raise PredictionError(f"Input file {path} does not exist.")
    name = path.name.lower()
    if path.is_dir():
        from datamint_lightning.data.readers import dicom_series_volume

        array, spacing, _, grid = dicom_series_volume(path, root=served_root)
        return VolumeInput(np.asarray(array, np.float32), check_spacing(spacing, str(path)), str(path), grid=grid)
    if name.endswith(IMAGE_SUFFIXES):
        return _load_picture(path)
    if name.endswith(NIFTI_SUFFIXES):
        from datamint_lightning.data.volumes import nifti_grid, read_nifti

        volume, spacing = read_nifti(path)
        return VolumeInput(volume, spacing, str(path), grid=nifti_grid(path))
    if name.endswith(NRRD_SUFFIXES):
        from datamint_lightning.data.readers import nrrd_volume

        data_root = None if served_root is not None else path.resolve().parent
        array, spacing, _, grid = nrrd_volume(path, data_root)
        loaded = from_array(np.asarray(array, np.float32), str(path), spacing)
        return replace(loaded, grid=grid) if isinstance(loaded, VolumeInput) else loaded
    return _load_dicom(path)


def _load_picture(path: Path) -> ImageInput:
    from datamint_lightning.data.readers import read_image

    image = read_image(path)  # the importers' decoder, so inference sees what training saw
    return ImageInput(np.asarray(image.array, np.float32), image.display_8bit, str(path))


def _load_dicom(path: Path) -> ImageInput | VolumeInput:
    from datamint_lightning.data.readers import dicom_image, dicom_pixels, read_dicom

    dataset = read_dicom(path)
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:  # a multi-frame object is a volume of its frames
        return VolumeInput(dicom_pixels(dataset, path), None, str(path))
    return ImageInput(np.asarray(dicom_image(dataset, path).array, np.float32), False, str(path))
