"""DICOM RT Structure Set (RTSTRUCT) of a predicted label set: one ROI per label, closed planar contours per slice.

Contours are traced with marching squares (``skimage.measure.find_contours`` at level 0.5 on the zero-padded
mask), so every vertex lies half-way between a pixel inside and one outside: no pixel centre is ever on a
contour, and filling the polygons by pixel centre with the even-odd rule (holes are contours inside contours)
gives the mask back exactly. That is how ``importers.dicom_annotations`` rasterises them; viewers that
rasterise differently may differ by up to one boundary pixel. Written with pydicom (highdicom has no RTSTRUCT).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from datamint_lightning.data.readers import DicomSeries
from datamint_lightning.data.writers.dicom_seg import RTSTRUCT_SERIES_NUMBER, Algorithm, check_source
from datamint_lightning.errors import DataError

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, as RTSTRUCTs reference studies
COPIED_FROM_SOURCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
COLOURS = ((220, 80, 60), (80, 180, 90), (70, 120, 220), (230, 190, 60), (170, 90, 200), (60, 200, 200))


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours (each (N, 2) row, column points, the first not repeated) around one 2D mask's pixels."""
    from skimage.measure import find_contours

    padded = np.pad(np.asarray(mask, bool), 1).astype(np.float32)  # closes contours at the image border
    return [contour[:-1] - 1.0 for contour in find_contours(padded, 0.5) if len(contour) > 3]


def contour_points(series: DicomSeries, position: Sequence[float], contour_rc: np.ndarray) -> list[float]:
    """Row/column points of the slice at ``position`` (its ImagePositionPatient) as flat LPS (x, y, z) mm
    coordinates, rounded to 1/10000 mm."""
    cr = np.column_stack([contour_rc[:, 1], contour_rc[:, 0]])
    points = np.asarray(position, float) + cr @ series.axes()[:, :2].T
    return [round(float(v), 4) for v in points.ravel()]


def _item(**values):
    from pydicom.dataset import Dataset

    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def rtstruct(series: DicomSeries, sources: Sequence, masks: dict[str, np.ndarray], algorithm: Algorithm):
    """An RTSTRUCT dataset. ``series``: the source series (its geometry); ``sources``: its datasets (headers
    suffice) in slice order; ``masks``: label name -> (slice, row, column) binary mask on the series' grid."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid

    check_source(sources, masks, "An RTSTRUCT")
    if len(sources) != len(series.sop_uids):
        raise DataError(f"An RTSTRUCT needs one source dataset per slice; got {len(sources)} for {series.sop_uids}.")
    first, now = sources[0], datetime.now()
    image_refs = [
        _item(ReferencedSOPClassUID=s.SOPClassUID, ReferencedSOPInstanceUID=s.SOPInstanceUID) for s in sources
    ]
    frame_uid = str(first.get("FrameOfReferenceUID", "")) or generate_uid()

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    # implicit VR: a long contour's ContourData exceeds explicit VR's 64 KiB length limit for DS (as RT systems write)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in COPIED_FROM_SOURCE:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), RTSTRUCT_SERIES_NUMBER
    ds.SeriesDescription, ds.OperatorsName, ds.InstanceNumber = algorithm.description, "", 1
    ds.Manufacturer, ds.ManufacturerModelName = algorithm.software, algorithm.name[:64]
    ds.SoftwareVersions = algorithm.version[:64]
    ds.FrameOfReferenceUID = frame_uid
    ds.StructureSetLabel, ds.StructureSetName = "AI", algorithm.name[:64]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ReferencedFrameOfReferenceSequence = [
        _item(
            FrameOfReferenceUID=frame_uid,
            RTReferencedStudySequence=[
                _item(
                    ReferencedSOPClassUID=STUDY_COMPONENT_SOP_CLASS,
                    ReferencedSOPInstanceUID=first.StudyInstanceUID,
                    RTReferencedSeriesSequence=[
                        _item(SeriesInstanceUID=first.SeriesInstanceUID, ContourImageSequence=image_refs)
                    ],
                )
            ],
        )
    ]
    rois, contours, observations = [], [], []
    for number, (name, mask) in enumerate(masks.items(), start=1):
        rois.append(
            _item(
                ROINumber=number,
                ReferencedFrameOfReferenceUID=frame_uid,
                ROIName=name[:64],
                ROIGenerationAlgorithm="AUTOMATIC",
            )
        )
        items = []
        for k in np.flatnonzero(np.asarray(mask).reshape(len(mask), -1).any(axis=1)):
            for contour in slice_contours(mask[k]):
                items.append(
                    _item(
                        ContourImageSequence=[image_refs[k]],
                        ContourGeometricType="CLOSED_PLANAR",
                        NumberOfContourPoints=len(contour),
                        ContourData=contour_points(series, sources[k].ImagePositionPatient, contour),
                    )
                )
        roi_contour = _item(ReferencedROINumber=number, ROIDisplayColor=list(COLOURS[(number - 1) % len(COLOURS)]))
        if items:
            roi_contour.ContourSequence = items
        contours.append(roi_contour)
        observations.append(
            _item(ObservationNumber=number, ReferencedROINumber=number, RTROIInterpretedType="", ROIInterpreter="")
        )
    ds.StructureSetROISequence, ds.ROIContourSequence = rois, contours
    ds.RTROIObservationsSequence = observations
    return ds
