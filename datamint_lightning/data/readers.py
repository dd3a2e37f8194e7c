"""Readers for clinical file formats, shared by the importers and the serving layer.

Every reader returns arrays in the package's display orientation (see ``volumes.py``) and raises ``DataError``
naming the file and the problem; pydicom, nrrd and Pillow are imported lazily. ``nrrd_volume`` and
``dicom_series_volume`` also return the file's ``VoxelGrid``: the record of that reorientation, which maps
results back onto the file's own array.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.data.files import folder_files, inflated_size, inside, open_regular, regular_file
from datamint_lightning.data.limits import check_pixels, check_voxels, limit
from datamint_lightning.data.volumes import Spacing, VoxelGrid
from datamint_lightning.errors import DataError, DatamintLightningError, InputTooLarge

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", "")
NON_IMAGE_MODALITIES = ("SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG")


def sha256_file(*paths: str | Path) -> str:
    """Content hash of one file, or of several in the given order (a DICOM series)."""
    digest = hashlib.sha256()
    for path in paths:
        with open_regular(path) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------- DICOM


def read_dicom(path: str | Path, headers_only: bool = False):
    """One DICOM dataset; files without the 128-byte preamble (older exports) are accepted when they parse."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    _check_deflated(regular_file(path, f"DICOM file {path}"))
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=headers_only)
    except InvalidDicomError:
        pass
    except Exception as error:
        raise DataError(f"Cannot read DICOM file {path}: {error}") from error
    try:
        dataset = pydicom.dcmread(str(path), stop_before_pixels=headers_only, force=True)
    except Exception as error:
        raise DataError(f"{path} is not a readable DICOM file: {error}") from error
    if "SOPClassUID" not in dataset and "Modality" not in dataset:
        raise DataError(f"{path} is not a DICOM file (no DICOM header found).")
    return dataset


def _check_deflated(path: Path) -> None:
    """pydicom inflates a deflated DICOM whole, without a bound, as it opens it: measure it first, streaming."""
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    with open_regular(path) as stream:
        try:
            read_preamble(stream, force=True)
            syntax = _read_file_meta_info(stream).get("TransferSyntaxUID")
        except Exception:  # no Part 10 meta: not deflated (and pydicom says what is wrong when it reads)
            return
        if syntax == DeflatedExplicitVRLittleEndian:
            inflated_size(stream, "deflate", limit("DATAMINT_MAX_DECOMPRESSED_BYTES"), f"DICOM file {path}")


def _floats(dataset, keyword: str, path: Path | str, count: int) -> np.ndarray:
    value = dataset.get(keyword)
    if value is None or len(value) != count:
        raise DataError(f"DICOM file {path} lacks {keyword}, needed to place it in its series.")
    return np.array([float(v) for v in value])


def check_dicom_size(dataset, path: Path | str) -> None:
    """Rows x Columns (x NumberOfFrames) within the size limits, checked before the pixel data is decoded."""
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    check_pixels(int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0), f"DICOM file {path}", frames)


def dicom_pixels(dataset, path: Path | str) -> np.ndarray:
    """Pixel data in modality units (rescale slope and intercept applied), float32."""
    check_dicom_size(dataset, path)
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # missing decoder plugins, truncated pixel data, ...
        raise DataError(f"Cannot decode the pixel data of DICOM file {path}: {error}") from error
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


@dataclass(frozen=True)
class DicomSeries:
    """One series in DICOM index order (slice, row, column) with the geometry to place voxels in the patient."""

    array: np.ndarray  # (k, r, c) float32, modality units, slices ascending along ``normal``
    origin: np.ndarray  # ImagePositionPatient of slice 0, LPS mm
    row_dir: np.ndarray  # patient direction of increasing column index
    col_dir: np.ndarray  # patient direction of increasing row index
    normal: np.ndarray
    spacing: Spacing  # (slice, row, column) mm
    sop_uids: tuple[str, ...]
    files: tuple[Path, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def axes(self) -> np.ndarray:
        """3x3 matrix whose columns step one voxel along (c, r, k), in LPS mm."""
        dk, dr, dc = self.spacing
        return np.column_stack([self.row_dir * dc, self.col_dir * dr, self.normal * dk])

    def patient_to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """(N, 3) LPS points to fractional (k, r, c) voxel indices."""
        crk = np.linalg.solve(self.axes(), (np.asarray(points_lps, float) - self.origin).T).T
        return crk[:, ::-1]

    def to_display(self, volume_krc: np.ndarray) -> tuple[np.ndarray, Spacing]:
        """This series' array, or a label map on its grid, in display orientation."""
        grid = self.grid()
        return grid.to_display(volume_krc), grid.display_spacing

    def grid(self) -> VoxelGrid:
        """The (slice, row, column) grid of this series: index -> RAS mm, slices in ``sop_uids`` order."""
        affine = np.eye(4)
        affine[:3, :3], affine[:3, 3] = self.axes()[:, ::-1], self.origin  # columns step (k, r, c)
        affine[:2] *= -1  # LPS -> RAS
        return VoxelGrid.from_affine(self.array.shape, affine, "DICOM (slice, row, column)", self.sop_uids)


def _order_slices(headers: list[tuple[Path, Any]], label: str) -> tuple[list[tuple[Path, Any]], float, np.ndarray]:
    """Slices sorted along the normal; missing or duplicate slices are errors naming the files."""
    orientation = _floats(headers[0][1], "ImageOrientationPatient", headers[0][0], 6)
    for path, header in headers:
        if not np.allclose(_floats(header, "ImageOrientationPatient", path, 6), orientation, atol=1e-3):
            raise DataError(
                f"DICOM series {label}: {path} has a different ImageOrientationPatient than "
                f"{headers[0][0]}; a series must be one stack of parallel slices."
            )
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [float(_floats(h, "ImagePositionPatient", p, 3) @ normal) for p, h in headers]
    order = np.argsort(positions, kind="stable")
    headers = [headers[i] for i in order]
    positions = np.array(positions)[order]
    if len(headers) == 1:
        header = headers[0][1]
        step = float(header.get("SpacingBetweenSlices") or header.get("SliceThickness") or 1.0)
        return headers, step, normal
    gaps = np.diff(positions)
    for index in np.flatnonzero(gaps < 1e-3):
        raise DataError(
            f"DICOM series {label} has duplicate slices at position {positions[index]:.2f} mm: "
            f"{headers[index][0]} and {headers[index + 1][0]}."
        )
    step = float(np.median(gaps))
    for index in np.flatnonzero(gaps > 1.5 * step):
        missing = round(gaps[index] / step) - 1
        raise DataError(
            f"DICOM series {label} is missing {missing} slice(s) between {headers[index][0]} "
            f"({positions[index]:.2f} mm) and {headers[index + 1][0]} ({positions[index + 1]:.2f} mm); "
            f"the slice step elsewhere is {step:.2f} mm."
        )
    return headers, step, normal


def load_dicom_series(files: list[Path], label: str | None = None) -> DicomSeries:
    """Read one series' files (already grouped by SeriesInstanceUID) into a ``DicomSeries``."""
    if not files:
        raise DataError("A DICOM series needs at least one file.")
    headers = [(Path(p), read_dicom(p, headers_only=True)) for p in files]
    first = headers[0][1]
    label = label or str(first.get("SeriesInstanceUID", files[0]))
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(
            f"DICOM file {files[0]} is a multi-frame (enhanced) image; only single-frame series are "
            "supported by this reader."
        )
    headers, step, normal = _order_slices(headers, label)
    check_voxels(
        (len(headers), int(first.get("Rows", 0) or 0), int(first.get("Columns", 0) or 0)), f"DICOM series {label}"
    )
    slices = []
    for path, _ in headers:
        pixels = dicom_pixels(read_dicom(path), path)
        if pixels.ndim != 2:
            raise DataError(f"DICOM file {path} has pixel shape {pixels.shape}; expected one grey-level frame.")
        if slices and pixels.shape != slices[0].shape:
            raise DataError(
                f"DICOM series {label}: {path} is {pixels.shape} but {headers[0][0]} is "
                f"{slices[0].shape}; every slice must have the same size."
            )
        slices.append(pixels)
    orientation = _floats(first, "ImageOrientationPatient", headers[0][0], 6)
    row_spacing, col_spacing = (float(v) for v in _floats(first, "PixelSpacing", headers[0][0], 2))
    metadata = {
        "source_format": "dicom",
        "SeriesInstanceUID": str(first.get("SeriesInstanceUID", "")),
        "StudyInstanceUID": str(first.get("StudyInstanceUID", "")),
        "PatientID": str(first.get("PatientID", "")),
        "Modality": str(first.get("Modality", "")),
        "FrameOfReferenceUID": str(first.get("FrameOfReferenceUID", "")),
        "SeriesDescription": str(first.get("SeriesDescription", "")),
        "ImageOrientationPatient": orientation.tolist(),
        "slices": len(headers),
        "original_spacing": [step, row_spacing, col_spacing],
        "origin": _floats(headers[0][1], "ImagePositionPatient", headers[0][0], 3).tolist(),
    }
    return DicomSeries(
        array=np.stack(slices),
        origin=np.array(metadata["origin"]),
        row_dir=orientation[:3],
        col_dir=orientation[3:],
        normal=normal,
        spacing=(step, row_spacing, col_spacing),
        sop_uids=tuple(str(h.get("SOPInstanceUID", "")) for _, h in headers),
        files=tuple(p for p, _ in headers),
        metadata=metadata,
    )


def group_dicom_series(
    paths: list[Path],
) -> tuple[dict[str, list[Path]], dict[str, list[Path]], list[tuple[Path, str]]]:
    """Image series by SeriesInstanceUID, annotation objects (SEG, RTSTRUCT) by modality, and unreadable files."""
    series: dict[str, list[Path]] = {}
    annotations: dict[str, list[Path]] = {}
    bad: list[tuple[Path, str]] = []
    for path in paths:
        try:
            header = read_dicom(path, headers_only=True)
        except DataError as error:
            bad.append((path, str(error)))
            continue
        modality = str(header.get("Modality", ""))
        if modality in NON_IMAGE_MODALITIES:
            annotations.setdefault(modality, []).append(path)
        elif "Rows" in header:
            series.setdefault(str(header.get("SeriesInstanceUID", path)), []).append(path)
    return series, annotations, bad


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> tuple[np.ndarray, Spacing, dict[str, Any]]:
    """A folder of one DICOM series as (display array (z, y, x) float32 in modality units, spacing, metadata)."""
    return dicom_series_volume(folder, series_uid)[:3]


def dicom_series_volume(
    folder: str | Path, series_uid: str | None = None, root: Path | None = None
) -> tuple[np.ndarray, Spacing, dict[str, Any], VoxelGrid]:
    """``read_dicom_series`` plus the series' own voxel grid (to map results back to its slices).

    The folder is listed within ``DATAMINT_MAX_FOLDER_FILES``/``_DEPTH``; with ``root``, a file in it that links
    outside ``root`` is an error (see ``files.folder_files``)."""
    folder = Path(folder)
    files = folder_files(folder, root) if folder.is_dir() else [folder]
    series, _, bad = group_dicom_series(files)
    if series_uid is not None:
        series = {uid: f for uid, f in series.items() if uid == series_uid}
    if not series:
        detail = f" ({bad[0][1]})" if bad else ""
        raise DataError(f"No DICOM image series{' ' + series_uid if series_uid else ''} in {folder}{detail}.")
    if len(series) > 1:
        raise DataError(
            f"{folder} holds {len(series)} DICOM series ({', '.join(sorted(series))}); pass series_uid to pick one."
        )
    loaded = load_dicom_series(next(iter(series.values())))
    grid = loaded.grid()
    metadata = {**loaded.metadata, "sha256": sha256_file(*loaded.files)}
    return grid.to_display(loaded.array).astype(np.float32, copy=False), grid.display_spacing, metadata, grid


# --------------------------------------------------------------------------------------------------- NRRD

_RAS_SIGNS = {"right": 1, "left": -1, "anterior": 1, "posterior": -1, "superior": 1, "inferior": -1}
_SPACE_ALIASES = {
    "ras": "right-anterior-superior",
    "las": "left-anterior-superior",
    "lps": "left-posterior-superior",
    "scanner-xyz": "right-anterior-superior",
    "3d-right-handed": "right-anterior-superior",
}


def read_nrrd(path: str | Path, data_root: Path | None = None) -> tuple[np.ndarray, Spacing, dict[str, Any]]:
    """An NRRD volume as (display array (z, y, x), spacing, metadata); Slicer segment names are kept.

    A header that keeps its data in another file (``data file:``, as ``.nhdr`` files do) is followed only to a
    file inside ``data_root`` once links are resolved; without ``data_root`` such a header is refused."""
    return nrrd_volume(path, data_root)[:3]


def nrrd_header(path: str | Path) -> dict[str, Any]:
    """The header of an NRRD file (a regular file: see ``files.regular_file``)."""
    import nrrd

    try:
        with open_regular(path, f"NRRD file {path}") as stream:
            return nrrd.read_header(stream)
    except DatamintLightningError:
        raise
    except Exception as error:
        raise DataError(f"Cannot read the NRRD header of {path}: {error}") from error


def nrrd_volume(
    path: str | Path, data_root: Path | None = None
) -> tuple[np.ndarray, Spacing, dict[str, Any], VoxelGrid]:
    """``read_nrrd`` plus the file's own voxel grid (pynrrd's default (i, j, k) index order)."""
    import nrrd

    path = Path(path)
    header = nrrd_header(path)
    data_file = _detached_data(path, header, data_root)
    try:
        _check_nrrd_size(path, header, data_file)
        data, header = nrrd.read(str(path))
    except DatamintLightningError:
        raise
    except Exception as error:
        raise DataError(f"Cannot read NRRD file {path}: {error}") from error
    directions = header.get("space directions")
    if directions is None:
        spacings = header.get("spacings", [1.0] * data.ndim)
        directions = np.diag([float(s) if np.isfinite(s) else 1.0 for s in spacings[-3:]])
    directions = np.array([[np.nan] * 3 if d is None else d for d in directions], dtype=float)
    spatial = [i for i, row in enumerate(directions) if np.isfinite(row).all()]
    extra = [i for i in range(data.ndim) if i not in spatial]
    if len(spatial) != 3 or any(data.shape[i] != 1 for i in extra):
        raise DataError(
            f"NRRD file {path} has shape {data.shape} with {len(spatial)} spatial axes; expected one "
            "3D volume (export multi-layer segmentations as a label map)."
        )
    data = data.reshape([data.shape[i] for i in spatial]) if extra else data
    space = str(header.get("space", "right-anterior-superior")).lower()
    words = _SPACE_ALIASES.get(space, space).split("-")
    if len(words) != 3 or any(w not in _RAS_SIGNS for w in words):
        raise DataError(
            f"NRRD file {path} has space {space!r}; expected an anatomical space such as left-posterior-superior."
        )
    signs = np.array([_RAS_SIGNS[w] for w in words], float)
    affine = np.eye(4)
    affine[:3, :3] = (directions[spatial] * signs).T
    affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), float) * signs
    grid = VoxelGrid.from_affine(data.shape, affine, "pynrrd (i, j, k), index_order='F'")
    display, spacing = grid.to_display(data), grid.display_spacing
    segments = {}
    for key, value in header.items():  # Slicer .seg.nrrd: Segment<N>_Name / Segment<N>_LabelValue
        if key.startswith("Segment") and key.endswith("_Name"):
            number = key[len("Segment") : -len("_Name")]
            segments[str(value)] = int(header.get(f"Segment{number}_LabelValue", int(number) + 1))
    metadata = {
        "source_format": "nrrd",
        "space": space,
        "original_affine_ras": affine.tolist(),
        "original_spacing": list(spacing),
    }
    if segments:
        metadata["segments"] = segments
    return display, spacing, metadata, grid


_COMPRESSED_NRRD = {"gzip": "gzip", "gz": "gzip", "bzip2": "bz2", "bz2": "bz2"}


def _detached_data(path: Path, header: dict[str, Any], data_root: Path | None) -> Path | None:
    """The file a detached header names for its data, when it may be read (inside ``data_root``, links
    resolved, a regular file); None when the data follows the header. Refusals never say whether that file
    exists: the header is the client's, the file system is not."""
    named = header.get("data file", header.get("datafile"))
    if named is None:
        return None
    if data_root is None:
        raise DataError(
            f"NRRD file {path} keeps its data in another file (a 'data file' header, as .nhdr files do); "
            "detached NRRD is not accepted here: send a single .nrrd file with the data attached."
        )
    text = str(named).strip()
    if text.upper().startswith("LIST") or "%" in text or len(text.split()) > 1:
        raise DataError(f"NRRD file {path}: multi-file data ('data file: {text[:80]}') is not supported.")
    return regular_file(inside(path.parent / text, data_root, f"The data file of NRRD file {path}"))


def _check_nrrd_size(path: Path, header: dict[str, Any], data_file: Path | None = None) -> None:
    """The header's sizes within the limits and, for compressed data, a decompressed stream no longer than
    they declare (pynrrd decompresses the whole stream before comparing: a bomb would fill memory first)."""
    import nrrd

    sizes = [int(s) for s in np.atleast_1d(header.get("sizes", []))]
    itemsize = np.dtype(nrrd.reader._determine_datatype(header)).itemsize
    check_voxels(sizes, f"NRRD file {path}", max(itemsize, 4))
    codec = _COMPRESSED_NRRD.get(str(header.get("encoding", "raw")).lower())
    if codec is None:
        return
    declared = int(np.prod(sizes)) * itemsize + max(int(header.get("byte skip", 0)), 0)
    with open_regular(data_file or path) as raw:
        if data_file is None:
            nrrd.read_header(raw)  # leaves ``raw`` at the first data byte
        inflated_size(raw, codec, declared, f"NRRD file {path}", f"the {declared:,} bytes its header declares")


# --------------------------------------------------------------------------------------------------- 2D images


@dataclass(frozen=True)
class Image2D:
    """A 2D image: pixels (H, W), whether they are already windowed 8-bit display values, spacing and tags."""

    array: np.ndarray
    display_8bit: bool
    spacing: tuple[float, float]
    metadata: dict[str, Any]


def is_dicom_path(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return False
    with open_regular(path) as stream:  # DICOM Part 10 magic
        return stream.read(132)[128:132] == b"DICM"


def read_image(path: str | Path, mask: bool = False) -> Image2D:
    """One 2D image (PNG/JPEG/TIFF/BMP or single-frame DICOM); ``mask=True`` keeps palette indices as values."""
    path = regular_file(path, f"Image file {path}")
    return dicom_image(read_dicom(path), path) if is_dicom_path(path) else _read_pillow(path, mask)


def read_image_file(path: str | Path) -> tuple[np.ndarray, bool]:
    """A 2D image as (array (H, W), display_8bit): True for 8-bit PNG/JPEG, False for DICOM / 16-bit sources."""
    image = read_image(path)
    return image.array, image.display_8bit


def dicom_image(dataset, path: Path | str) -> Image2D:
    """A single-frame DICOM dataset as a 2D image; MONOCHROME1 (radiographs) is inverted so dense is bright."""
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(f"DICOM file {path} has {dataset.NumberOfFrames} frames; expected a single 2D image.")
    pixels = dicom_pixels(dataset, path)
    if dataset.get("PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # colour (ultrasound, photos): luminance
        pixels = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    if pixels.ndim != 2:
        raise DataError(f"DICOM file {path} has pixel shape {pixels.shape}; expected a 2D image.")
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing") or (1.0, 1.0)
    metadata = {
        "source_format": "dicom",
        "PatientID": str(dataset.get("PatientID", "")),
        "Modality": str(dataset.get("Modality", "")),
        "SOPInstanceUID": str(dataset.get("SOPInstanceUID", "")),
        "SeriesInstanceUID": str(dataset.get("SeriesInstanceUID", "")),
        "PhotometricInterpretation": str(dataset.get("PhotometricInterpretation", "")),
    }
    return Image2D(pixels, False, (float(spacing[0]), float(spacing[1])), metadata)


def _open_pillow(path: Path):
    """``Image.open`` (header only) with PIL's decompression-bomb bound set to ours while it runs."""
    from PIL import Image

    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit("DATAMINT_MAX_PIXELS")
    try:
        with warnings.catch_warnings():  # over our limit is refused below with a clear error, not a warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as error:  # not an OSError: it would escape as a traceback
        raise InputTooLarge(f"Image file {path}: {error} (DATAMINT_MAX_PIXELS)") from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _read_pillow(path: Path, mask: bool) -> Image2D:
    from PIL import UnidentifiedImageError

    try:
        with _open_pillow(path) as image:
            frames, mode = getattr(image, "n_frames", 1), image.mode
            if frames > 1:
                raise DataError(f"Image file {path} has {frames} frames; expected a single 2D image.")
            check_pixels(image.width, image.height, f"Image file {path}")  # before decoding a single pixel
            image.load()
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                array, display = np.asarray(image).astype(np.float32), False
            elif mask and mode in ("P", "L", "1"):
                array, display = np.asarray(image).astype(np.uint8), True
            elif mask and mode in ("RGB", "RGBA"):
                rgb = np.asarray(image)[..., :3]
                if not (rgb == rgb[..., :1]).all():
                    raise DataError(
                        f"Mask {path} is a colour image; save masks as grey-level label maps "
                        "(pixel value = label value) or one binary mask per label."
                    )
                array, display = rgb[..., 0].astype(np.uint8), True
            else:
                array, display = np.asarray(image.convert("L")), True
    except DatamintLightningError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"Cannot read image file {path}: {error}") from error
    return Image2D(array, display, (1.0, 1.0), {"source_format": path.suffix.lower().lstrip("."), "mode": mode})
