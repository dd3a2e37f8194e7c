"""Decoding prediction inputs (file paths, numpy arrays) into 2D images or 3D volumes.

Images come back in display orientation; 8-bit PNG/JPEG exports are flagged as already windowed. DICOM pixel
data is rescaled to modality units (HU for CT). Numpy arrays are taken as native units: (H, W) is an image,
(Z, H, W) a volume of axial slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.errors import PredictionError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class ImageInput:
    array: np.ndarray  # (H, W) float32
    display_8bit: bool
    source: str


@dataclass(frozen=True)
class VolumeInput:
    array: np.ndarray  # (Z, H, W) float32
    spacing: tuple[float, float, float] | None
    source: str


def load_input(item: Any, index: int = 0) -> ImageInput | VolumeInput:
    """One prediction input, or a ``PredictionError`` naming the input and what was expected."""
    if isinstance(item, (str, Path)):
        return _load_path(Path(item))
    if isinstance(item, np.ndarray) or hasattr(item, "__array__"):
        return _from_array(np.asarray(item), f"input[{index}] (array)")
    raise PredictionError(f"input[{index}] is a {type(item).__name__}; expected a file path or a numpy array.")


def _from_array(array: np.ndarray, source: str) -> ImageInput | VolumeInput:
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise PredictionError(f"{source} has dtype {array.dtype}; expected numbers.")
    if array.ndim == 2:
        return ImageInput(array.astype(np.float32), False, source)
    if array.ndim == 3:
        return VolumeInput(array.astype(np.float32), None, source)
    raise PredictionError(f"{source} has shape {array.shape}; expected (H, W) for an image or (Z, H, W) for a volume.")


def _load_path(path: Path) -> ImageInput | VolumeInput:
    if not path.exists():
        raise PredictionError(f"Input file {path} does not exist.")
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return _load_picture(path)
    if name.endswith(NIFTI_SUFFIXES):
        from datamint_lightning.data.volumes import read_nifti

        volume, spacing = read_nifti(path)
        return VolumeInput(volume, spacing, str(path))
    return _load_dicom(path)


def _load_picture(path: Path) -> ImageInput:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            if picture.mode in ("I;16", "I;16B", "I", "F"):
                return ImageInput(np.asarray(picture, dtype=np.float32), False, str(path))
            return ImageInput(np.asarray(picture.convert("L"), dtype=np.float32), True, str(path))
    except (UnidentifiedImageError, OSError) as error:
        raise PredictionError(f"Cannot read image file {path}: {error}") from error


def _load_dicom(path: Path) -> ImageInput | VolumeInput:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array.astype(np.float32)
    except (InvalidDicomError, AttributeError, ValueError, OSError) as error:
        raise PredictionError(f"Cannot read {path} as DICOM (or a supported image format): {error}") from error
    pixels = pixels * float(getattr(dataset, "RescaleSlope", 1) or 1) + float(getattr(dataset, "RescaleIntercept", 0) or 0)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    if pixels.ndim == 3 and int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        return VolumeInput(pixels, None, str(path))
    if pixels.ndim != 2:
        raise PredictionError(f"DICOM file {path} has pixel data of shape {pixels.shape}; expected a grayscale image.")
    return ImageInput(pixels, False, str(path))
