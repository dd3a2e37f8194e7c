"""Reading volumes and label maps into the display orientation used everywhere in the package.

Arrays are (z, y, x): axial slices, rows from anterior to posterior, columns from the patient's right to left
(radiological convention, as DICOM and PNG slices are shown), slices from inferior to superior.
NIfTI files are stored in RAS+ orientation. ``VoxelGrid`` records how a file's array was permuted and flipped into
display orientation (never resampled), so results can be put back on the file's own voxels exactly.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.data.files import regular_file
from datamint_lightning.errors import DataError, DatamintLightningError

Spacing = tuple[float, float, float]


def ras_to_display(ras: np.ndarray) -> np.ndarray:
    """RAS+ (x, y, z) array to display (z, y, x): flip x (left->right) and y (posterior->anterior)."""
    return np.ascontiguousarray(ras.transpose(2, 1, 0)[:, ::-1, ::-1])


def display_to_ras(display: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(display[:, ::-1, ::-1].transpose(2, 1, 0))


# Display axis d follows the RAS axis DISPLAY_RAS[d][0], its index increasing in direction DISPLAY_RAS[d][1]
# (+1: towards R/A/S): z towards superior, y towards posterior, x towards the patient's left.
DISPLAY_RAS = ((2, 1), (1, -1), (0, -1))


@dataclass(frozen=True)
class VoxelGrid:
    """A file's own voxel grid, and the axis permutation and flips that turned its array into display (z, y, x).

    ``shape`` is the file's array shape in the order its usual reader gives (``array_order``: nibabel and pynrrd
    give (i, j, k); a DICOM series is (slice, row, column) with slices in ``sop_instance_uids`` order). ``affine``
    maps those indices to RAS mm. Reorientation only permutes and flips axes (never resamples), so ``to_file``
    undoes ``to_display`` exactly: a mask predicted in display orientation lands on the file's voxels.
    """

    shape: tuple[int, ...]
    affine: tuple[tuple[float, ...], ...]  # 4x4 voxel index -> RAS mm
    axes: tuple[int, int, int]  # display axis d is file axis axes[d]
    flips: tuple[bool, bool, bool]  # display axis d runs against that file axis
    array_order: str = "(i, j, k)"
    sop_instance_uids: tuple[str, ...] = ()

    @classmethod
    def from_affine(
        cls,
        shape: tuple[int, ...],
        affine_ras: np.ndarray,
        array_order: str = "(i, j, k)",
        sop_instance_uids: tuple[str, ...] = (),
    ) -> VoxelGrid:
        """The grid of an array of ``shape`` with voxel->RAS ``affine_ras``; axes go to the closest canonical
        orientation, as ``nibabel.as_closest_canonical`` does."""
        from nibabel.orientations import io_orientation

        affine = np.asarray(affine_ras, dtype=float)
        orientation = io_orientation(affine)  # per file axis: (RAS axis, +1/-1)
        if np.isnan(orientation).any():
            raise DataError(f"The voxel-to-patient affine {affine.tolist()} is degenerate; cannot orient the volume.")
        axes, flips = [0, 0, 0], [False, False, False]
        for file_axis, (ras_axis, sign) in enumerate(orientation):
            display_axis = next(d for d, (ras, _) in enumerate(DISPLAY_RAS) if ras == int(ras_axis))
            axes[display_axis], flips[display_axis] = file_axis, int(sign) != DISPLAY_RAS[display_axis][1]
        return cls(
            tuple(int(n) for n in shape),
            tuple(tuple(float(v) for v in row) for row in affine),
            tuple(axes),
            tuple(flips),
            array_order,
            tuple(sop_instance_uids),
        )

    @classmethod
    def identity(cls, shape: tuple[int, ...], spacing: Spacing | None = None) -> VoxelGrid:
        """An array that already is in display (z, y, x) orientation (e.g. sent as numbers)."""
        sz, sy, sx = spacing or (1.0, 1.0, 1.0)
        affine = np.array([[0, 0, -sx, 0], [0, -sy, 0, 0], [sz, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
        return cls.from_affine(shape, affine, "(z, y, x) as given")

    @property
    def spacing(self) -> Spacing:
        """Voxel size in mm along the file's array axes."""
        return tuple(float(v) for v in np.linalg.norm(np.asarray(self.affine)[:3, :3], axis=0))

    @property
    def display_spacing(self) -> Spacing:
        return tuple(self.spacing[a] for a in self.axes)

    def to_display(self, array: np.ndarray) -> np.ndarray:
        """The file's array (or anything on its grid) in display (z, y, x) orientation."""
        moved = np.transpose(np.asarray(array), self.axes)
        return np.ascontiguousarray(np.flip(moved, [d for d in range(3) if self.flips[d]]))

    def to_file(self, display: np.ndarray) -> np.ndarray:
        """A display-oriented (z, y, x) array back on the file's grid, in its array order."""
        flipped = np.flip(np.asarray(display), [d for d in range(3) if self.flips[d]])
        return np.ascontiguousarray(np.transpose(flipped, np.argsort(self.axes)))

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the file grid (shape, spacing, affine, orientation codes) and the display mapping."""
        from nibabel.orientations import aff2axcodes

        described = {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "affine": [list(r) for r in self.affine],
            "orientation": "".join(aff2axcodes(np.asarray(self.affine))),
            "array_order": self.array_order,
            "display_axes": list(self.axes),
            "display_flips": list(self.flips),
        }
        if self.sop_instance_uids:
            described["sop_instance_uids"] = list(self.sop_instance_uids)
        return described


def to_display(data_ijk: np.ndarray, affine_ras: np.ndarray) -> tuple[np.ndarray, Spacing]:
    """Any voxel array (i, j, k) with a voxel->RAS affine, reoriented to display (z, y, x) and its spacing.

    Axes are permuted and flipped to the closest canonical (RAS+) orientation, never resampled, so an oblique
    acquisition keeps its voxels; ``VoxelGrid.from_affine`` with the same affine maps results back.
    """
    grid = VoxelGrid.from_affine(np.shape(data_ijk), affine_ras)
    return grid.to_display(data_ijk), grid.display_spacing


def read_nifti(path: str | Path, dtype=np.float32, channel: int | None = None) -> tuple[np.ndarray, Spacing]:
    """A NIfTI volume as a display-oriented (z, y, x) array and its (z, y, x) spacing in mm.

    ``channel`` picks one volume of a 4D file (MSD stores multi-modal cases as 4D images).
    """
    import nibabel as nib

    regular_file(path, f"NIfTI file {path}")
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

    regular_file(path, f"NIfTI file {path}")
    try:
        return np.asarray(nib.load(str(path)).affine)
    except Exception as error:
        raise DataError(f"Cannot read NIfTI file {path}: {error}") from error


def nifti_grid(path: str | Path) -> VoxelGrid:
    """The voxel grid of a NIfTI file (header only), matching the display array ``read_nifti`` returns."""
    import nibabel as nib

    regular_file(path, f"NIfTI file {path}")
    try:
        image = nib.load(str(path))
    except Exception as error:
        raise DataError(f"Cannot read NIfTI file {path}: {error}") from error
    return VoxelGrid.from_affine(image.shape[:3], image.affine, "nibabel (i, j, k)")


def compact(array: np.ndarray) -> np.ndarray:
    """int16 when every value is an integer within its range (CT in HU), else float32: half the disk space."""
    if array.dtype.kind in "iub" and array.size and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16, copy=False)
    as_float = array.astype(np.float32, copy=False)
    if (
        as_float.size
        and np.isfinite(as_float).all()
        and np.array_equal(as_float, np.round(as_float))
        and as_float.min() >= -32768
        and as_float.max() <= 32767
    ):
        return as_float.astype(np.int16)
    return as_float


def nifti_bytes(display: np.ndarray, spacing: Spacing) -> bytes:
    """Encode a display-oriented (z, y, x) array as gzipped NIfTI with a RAS+ affine."""
    import nibabel as nib

    sz, sy, sx = spacing
    image = nib.Nifti1Image(display_to_ras(display), np.diag([sx, sy, sz, 1.0]))
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=4)
