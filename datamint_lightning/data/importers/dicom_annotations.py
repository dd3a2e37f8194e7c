"""DICOM SEG and RTSTRUCT annotations rasterised onto the grid of the series they reference.

Label maps are returned in the series' DICOM index order (slice, row, column), ready for
``DicomSeries.to_display``. Parsed with pydicom alone (no highdicom needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.data.readers import DicomSeries, check_dicom_size
from datamint_lightning.errors import DataError


def referenced_series(dataset) -> str | None:
    """SeriesInstanceUID of the image series a SEG or RTSTRUCT annotates."""
    if dataset.Modality == "SEG":
        for item in dataset.get("ReferencedSeriesSequence", []):
            return str(item.SeriesInstanceUID)
        return None
    for frame in dataset.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                return str(series.SeriesInstanceUID)
    return None


def referenced_frame(dataset) -> str | None:
    if dataset.Modality == "SEG":
        return str(dataset.get("FrameOfReferenceUID", "")) or None
    for frame in dataset.get("ReferencedFrameOfReferenceSequence", []):
        return str(frame.get("FrameOfReferenceUID", "")) or None
    return None


def label_names(dataset) -> dict[int, str]:
    """Segment / ROI number -> name (only ROIs with closed contours count for RTSTRUCT)."""
    if dataset.Modality == "SEG":
        return {
            int(s.SegmentNumber): str(s.get("SegmentLabel") or f"segment_{s.SegmentNumber}")
            for s in dataset.SegmentSequence
        }
    with_area = {
        int(c.ReferencedROINumber)
        for c in dataset.get("ROIContourSequence", [])
        if any(s.get("ContourGeometricType") == "CLOSED_PLANAR" for s in c.get("ContourSequence", []))
    }
    return {
        int(r.ROINumber): str(r.ROIName)
        for r in dataset.get("StructureSetROISequence", [])
        if int(r.ROINumber) in with_area
    }


def rasterise(dataset, path: Path, series: DicomSeries, labels: dict[str, int], into: np.ndarray) -> None:
    """Paint the annotation's labels (those in ``labels``) into ``into`` (k, r, c); later ones win on overlap."""
    if dataset.Modality == "SEG":
        _paint_seg(dataset, path, series, labels, into)
    else:
        _paint_rtstruct(dataset, path, series, labels, into)


def _slice_index(series: DicomSeries, point: np.ndarray, path: Path, what: str) -> int:
    k, _r, _c = series.patient_to_index(point[None])[0]
    nearest = round(k)
    if abs(k - nearest) > 0.25 or not 0 <= nearest < series.array.shape[0]:
        raise DataError(
            f"{path}: {what} at {np.round(point, 2).tolist()} mm does not lie on a slice of series "
            f"{series.metadata['SeriesInstanceUID']} (slice index {k:.2f} of {series.array.shape[0]})."
        )
    return nearest


def _frame_item(dataset, index: int, name: str) -> Any:
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and name in per_frame[index]:
        return per_frame[index][name][0]
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared is not None and name in shared[0]:
        return shared[0][name][0]
    return None


def _paint_seg(dataset, path: Path, series: DicomSeries, labels: dict[str, int], into: np.ndarray) -> None:
    names = label_names(dataset)
    check_dicom_size(dataset, path)
    try:
        frames = dataset.pixel_array
    except Exception as error:
        raise DataError(f"Cannot decode the segment frames of DICOM SEG {path}: {error}") from error
    frames = frames.reshape(-1, *frames.shape[-2:])
    if frames.shape[1:] != series.array.shape[1:]:
        raise DataError(
            f"DICOM SEG {path} frames are {frames.shape[1:]} but its series "
            f"{series.metadata['SeriesInstanceUID']} is {series.array.shape[1:]}; grids differ."
        )
    threshold = (
        0.5 * float(dataset.get("MaximumFractionalValue", 1)) if dataset.get("SegmentationType") == "FRACTIONAL" else 0
    )
    by_uid = {uid: index for index, uid in enumerate(series.sop_uids)}
    for index, frame in enumerate(frames):
        segment = _frame_item(dataset, index, "SegmentIdentificationSequence")
        name = names.get(int(segment.ReferencedSegmentNumber)) if segment is not None else None
        if name not in labels:
            continue
        k = _seg_frame_slice(dataset, index, path, series, by_uid)
        into[k][frame > threshold] = labels[name]


def _seg_frame_slice(dataset, index: int, path: Path, series: DicomSeries, by_uid: dict[str, int]) -> int:
    derivation = _frame_item(dataset, index, "DerivationImageSequence")
    for source in derivation.get("SourceImageSequence", []) if derivation is not None else []:
        uid = str(source.get("ReferencedSOPInstanceUID", ""))
        if uid in by_uid:
            return by_uid[uid]
    position = _frame_item(dataset, index, "PlanePositionSequence")
    if position is None:
        raise DataError(f"DICOM SEG {path} frame {index + 1} names neither a source image nor a position.")
    point = np.array([float(v) for v in position.ImagePositionPatient])
    k = _slice_index(series, point, path, f"frame {index + 1}")
    _, r, c = series.patient_to_index(point[None])[0]
    if abs(r) > 0.25 or abs(c) > 0.25:
        raise DataError(
            f"DICOM SEG {path} frame {index + 1} is shifted by ({r:.2f}, {c:.2f}) pixels from its image; grids differ."
        )
    return k


def _paint_rtstruct(dataset, path: Path, series: DicomSeries, labels: dict[str, int], into: np.ndarray) -> None:
    from skimage.draw import polygon

    names = label_names(dataset)
    shape = series.array.shape[1:]
    for roi in dataset.get("ROIContourSequence", []):
        name = names.get(int(roi.ReferencedROINumber))
        if name not in labels:
            continue
        mask = np.zeros(series.array.shape, bool)
        for contour in roi.get("ContourSequence", []):
            if contour.get("ContourGeometricType") != "CLOSED_PLANAR":
                continue
            points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
            k = _slice_index(series, points.mean(axis=0), path, f"a contour of ROI {name!r}")
            index = series.patient_to_index(points)
            rows, cols = polygon(index[:, 1], index[:, 2], shape)
            filled = np.zeros(shape, bool)
            filled[rows, cols] = True
            mask[k] ^= filled  # even-odd: a contour inside another on the same slice is a hole
        into[mask] = labels[name]
