"""Reading volumes and label maps into the display orientation used everywhere in the package.

Arrays are (z, y, x): axial slices, rows from anterior to posterior, columns from the patient's right to left
(radiological convention, as DICOM and PNG slices are shown), slices from inferior to superior.
NIfTI files are stored in RAS+ orientation.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from datamint_lightning.errors import DataError, DatamintLightningError

Spacing = tuple[float, float, float]


def ras_to_display(ras: np.ndarray) -> np.ndarray:
    """RAS+ (x, y, z) array to display (z, y, x): flip x (left->right) and y (posterior->anterior)."""
    return np.ascontiguousarray(ras.transpose(2, 1, 0)[:, ::-1, ::-1])


def display_to_ras(display: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(display[:, ::-1, ::-1].transpose(2, 1, 0))


def to_display(data_ijk: np.ndarray, affine_ras: np.ndarray) -> tuple[np.ndarray, Spacing]:
    """Any voxel array (i, j, k) with a voxel->RAS affine, reoriented to display (z, y, x) and its spacing.

    Axes are permuted and flipped to the closest canonical (RAS+) orientation, never resampled, so an oblique
    acquisition keeps its voxels; the original affine belongs in the resource metadata.
    """
    import nibabel as nib

    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data_ijk), np.asarray(affine_ras, dtype=float)))
    sx, sy, sz = (float(s) for s in image.header.get_zooms()[:3])
    return ras_to_display(np.asanyarray(image.dataobj)), (sz, sy, sx)


def read_nifti(path: str | Path, dtype=np.float32, channel: int | None = None) -> tuple[np.ndarray, Spacing]:
    """A NIfTI volume as a display-oriented (z, y, x) array and its (z, y, x) spacing in mm.

    ``channel`` picks one volume of a 4D file (MSD stores multi-modal cases as 4D images).
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))  # the header only: the data is read below, after the size check
        _check_nifti_size(image, path, np.dtype(dtype).itemsize)
        image = nib.as_closest_canonical(image)  # reorienting reads the data
        data = np.asanyarray(image.dataobj)
    except DatamintLightningError:
        raise
    except Exception as error:  # nibabel raises many types for corrupt files
        raise DataError(f"Cannot read NIfTI file {path}: {error or type(error).__name__}") from error
    if data.ndim == 4 and (data.shape[3] == 1 or channel is not None):
        if (channel or 0) >= data.shape[3]:
            raise DataError(f"NIfTI file {path} has {data.shape[3]} channel(s); channel {channel} does not exist.")
        data = data[..., channel or 0]
    if data.ndim != 3:
        raise DataError(f"NIfTI file {path} has shape {data.shape}; expected a 3D volume.")
    sx, sy, sz = (float(s) for s in image.header.get_zooms()[:3])
    return ras_to_display(data.astype(dtype, copy=False)), (sz, sy, sx)


def _check_nifti_size(image, path: str | Path, itemsize: int) -> None:
    """Header dimensions x dtype within the limits: a tiny .nii.gz may declare gigabytes of zeros."""
    from datamint_lightning.data.limits import check, check_voxels

    header = image.header
    stored = header.get_data_dtype().itemsize
    check_voxels(header.get_data_shape(), f"NIfTI file {path}", max(stored, itemsize))
    offset = int(getattr(header, "get_data_offset", lambda: 0)())
    check("DATAMINT_MAX_DECOMPRESSED_BYTES", offset, f"NIfTI file {path}: data offset")


def nifti_affine(path: str | Path) -> np.ndarray:
    """The voxel->RAS affine of a NIfTI file as stored (for grid checks between an image and its label)."""
    import nibabel as nib

    try:
        return np.asarray(nib.load(str(path)).affine)
    except Exception as error:
        raise DataError(f"Cannot read NIfTI file {path}: {error}") from error


def compact(array: np.ndarray) -> np.ndarray:
    """int16 when every value is an integer within its range (CT in HU), else float32: half the disk space."""
    if array.dtype.kind in "iub" and array.size and -32768 <= array.min() and array.max() <= 32767:
        return array.astype(np.int16, copy=False)
    as_float = array.astype(np.float32, copy=False)
    if (as_float.size and np.isfinite(as_float).all() and np.array_equal(as_float, np.round(as_float))
            and -32768 <= as_float.min() and as_float.max() <= 32767):
        return as_float.astype(np.int16)
    return as_float


def nifti_bytes(display: np.ndarray, spacing: Spacing) -> bytes:
    """Encode a display-oriented (z, y, x) array as gzipped NIfTI with a RAS+ affine."""
    import nibabel as nib

    sz, sy, sx = spacing
    image = nib.Nifti1Image(display_to_ras(display), np.diag([sx, sy, sz, 1.0]))
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=4)
