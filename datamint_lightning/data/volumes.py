"""Reading volumes and label maps into the display orientation used everywhere in the package.

Arrays are (z, y, x): axial slices, rows from anterior to posterior, columns from the patient's right to left
(radiological convention, as DICOM and PNG slices are shown). NIfTI files are stored in RAS+ orientation.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from datamint_lightning.errors import DataError


def ras_to_display(ras: np.ndarray) -> np.ndarray:
    """RAS+ (x, y, z) array to display (z, y, x): flip x (left->right) and y (posterior->anterior)."""
    return np.ascontiguousarray(ras.transpose(2, 1, 0)[:, ::-1, ::-1])


def display_to_ras(display: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(display[:, ::-1, ::-1].transpose(2, 1, 0))


def read_nifti(path: str | Path, dtype=np.float32) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A NIfTI volume as a display-oriented (z, y, x) array and its (z, y, x) spacing in mm."""
    import nibabel as nib

    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises many types for corrupt files
        raise DataError(f"Cannot read NIfTI file {path}: {error}") from error
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"NIfTI file {path} has shape {data.shape}; expected a 3D volume.")
    sx, sy, sz = (float(s) for s in image.header.get_zooms()[:3])
    return ras_to_display(data.astype(dtype, copy=False)), (sz, sy, sx)


def nifti_bytes(display: np.ndarray, spacing: tuple[float, float, float]) -> bytes:
    """Encode a display-oriented (z, y, x) array as gzipped NIfTI with a RAS+ affine."""
    import nibabel as nib

    sz, sy, sx = spacing
    image = nib.Nifti1Image(display_to_ras(display), np.diag([sx, sy, sz, 1.0]))
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=4)
