"""Label maps and float maps (entropy) on the source's own grid, as NIfTI, NRRD or PNG bytes.

Arrays come in the file's own array order with its voxel->RAS affine (``VoxelGrid.shape``/``affine``: nibabel and
pynrrd (i, j, k), a DICOM series (slice, row, column)); both formats store any axis order with its affine, so
nothing is resampled or reoriented. NRRD label maps carry 3D Slicer's segment fields (``Segment<N>_Name``,
``_LabelValue``), which ``readers.nrrd_volume`` reads back as label names.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence

import numpy as np

from datamint_lightning.errors import DataError

LPS_FROM_RAS = np.array([-1.0, -1.0, 1.0])
# 3D Slicer's default colours for the first labels (cycled), as "r g b" in [0, 1].
SEGMENT_COLOURS = ("0.5 0.68 0.5", "0.94 0.84 0.57", "0.69 0.48 0.39", "0.43 0.72 0.82", "0.85 0.4 0.34")


def label_map(masks: Sequence[np.ndarray]) -> np.ndarray:
    """One uint8 map from binary masks in label order (value i + 1 for masks[i]; a later label wins where masks
    overlap, as they may with a probability threshold)."""
    if not masks:
        raise DataError("A label map needs at least one mask.")
    if len(masks) > 255:
        raise DataError(f"{len(masks)} labels do not fit a uint8 label map (at most 255).")
    result = np.zeros(np.shape(masks[0]), np.uint8)
    for value, mask in enumerate(masks, start=1):
        result[np.asarray(mask).astype(bool)] = value
    return result


def nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 of ``array`` (2D arrays get a third axis of one) with voxel->RAS ``affine`` (mm)."""
    import nibabel as nib

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    image = nib.Nifti1Image(array, np.asarray(affine, float))
    image.set_qform(image.affine, code=1)  # scanner coordinates, as a converter from DICOM writes them
    image.set_sform(image.affine, code=1)
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=4)


def nrrd_bytes(array: np.ndarray, affine: np.ndarray, labels: Sequence[str] | None = None) -> bytes:
    """Gzipped NRRD of ``array`` (index order i, j, k as pynrrd reads it) in LPS space from a RAS ``affine``;
    with ``labels``, the segment names of a Slicer segmentation (value i + 1 is labels[i])."""
    import nrrd

    affine = np.asarray(affine, float)
    header = {
        "type": array.dtype.name,
        "space": "left-posterior-superior",
        "space directions": (affine[:3, : array.ndim] * LPS_FROM_RAS[:, None]).T,
        "space origin": affine[:3, 3] * LPS_FROM_RAS,
        "kinds": ["domain"] * array.ndim,
        "encoding": "gzip",
    }
    for index, name in enumerate(labels or ()):
        header.update(
            {
                f"Segment{index}_ID": f"Segment_{index + 1}",
                f"Segment{index}_Name": name,
                f"Segment{index}_LabelValue": str(index + 1),
                f"Segment{index}_Layer": "0",
                f"Segment{index}_Color": SEGMENT_COLOURS[index % len(SEGMENT_COLOURS)],
            }
        )
    stream = io.BytesIO()
    nrrd.write(stream, np.asarray(array), header, compression_level=4)
    return stream.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    """A 2D uint8 array (a label map: pixel value = label value) as a grey-level PNG."""
    from PIL import Image

    array = np.asarray(array)
    if array.ndim != 2:
        raise DataError(f"A PNG holds one 2D image; got shape {array.shape}.")
    stream = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode="L").save(stream, format="PNG")
    return stream.getvalue()


def entropy_png_bytes(entropy: np.ndarray) -> bytes:
    """A normalised entropy map in [0, 1] as an 8-bit PNG (0..255)."""
    return png_bytes(np.clip(np.round(np.asarray(entropy, np.float32) * 255), 0, 255).astype(np.uint8))
