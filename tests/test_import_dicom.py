"""DICOM series reader and the DICOM-tree importer, on series written with pydicom from its bundled CT_small.dcm,
with a DICOM SEG built with pydicom and an RTSTRUCT derived from pydicom's bundled rtstruct.dcm."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.errors import DataError

SLICES, STEP = 6, 2.5


def write_series(
    folder: Path,
    patient: str = "PAT-1",
    slices: int = SLICES,
    step: float = STEP,
    drop: int | None = None,
    duplicate: int | None = None,
    seed: int = 0,
) -> tuple[str, list[str], np.ndarray]:
    """A CT series of ``slices`` files (shuffled names); returns its UID, SOP UIDs by slice and the HU volume."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid, frame_uid = generate_uid(), generate_uid()
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 2000, size=(slices, 128, 128)).astype(np.int16)
    sops, names = [], list(range(slices))
    random.Random(seed).shuffle(names)  # file names unrelated to slice order
    for k in range(slices):
        if k == drop:
            sops.append("")
            continue
        ds = template.copy()
        ds.PatientID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = patient, series_uid, frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.135803, -179.035797, -75.7 + k * step]
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        ds.PixelData = stored[k].tobytes()
        ds.save_as(folder / f"IM{names[k]:04d}.dcm")
        sops.append(ds.SOPInstanceUID)
        if k == duplicate:
            ds.SOPInstanceUID = generate_uid()
            ds.save_as(folder / f"IM{names[k]:04d}_copy.dcm")
    return series_uid, sops, stored.astype(np.float32) * 2 - 1024


def write_seg(path: Path, series_uid: str, sops: list[str], masks: dict[str, np.ndarray]) -> None:
    """A binary DICOM SEG (one frame per segment and slice) referencing the source images by SOP UID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import pack_bits
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID = "SEG", "PAT-1", generate_uid()
    ds.ReferencedSeriesSequence = Sequence([Dataset()])
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = series_uid
    segments, frames, groups = [], [], []
    for number, (name, mask) in enumerate(masks.items(), start=1):
        segment = Dataset()
        segment.SegmentNumber, segment.SegmentLabel = number, name
        segments.append(segment)
        for k in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1)):
            group, ident, derivation, source = Dataset(), Dataset(), Dataset(), Dataset()
            ident.ReferencedSegmentNumber = number
            source.ReferencedSOPInstanceUID = sops[k]
            derivation.SourceImageSequence = Sequence([source])
            group.SegmentIdentificationSequence = Sequence([ident])
            group.DerivationImageSequence = Sequence([derivation])
            groups.append(group)
            frames.append(mask[k])
    ds.SegmentSequence, ds.PerFrameFunctionalGroupsSequence = Sequence(segments), Sequence(groups)
    ds.SegmentationType, ds.NumberOfFrames = "BINARY", len(frames)
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = pack_bits(np.stack(frames).astype(np.uint8))
    ds.save_as(path, enforce_file_format=True)


def write_rtstruct(
    path: Path, series_uid: str, name: str, z: float, square_mm: tuple[float, float, float, float]
) -> None:
    """pydicom's bundled RTSTRUCT, re-pointed at our series, with one closed square contour at height ``z``."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)
    ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[
        0
    ].SeriesInstanceUID = series_uid
    ds.StructureSetROISequence[0].ROIName = name
    x0, y0, x1, y1 = square_mm
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    contour.ContourData = [x0, y0, z, x1, y0, z, x1, y1, z, x0, y1, z]
    contour.NumberOfContourPoints = 4
    ds.ROIContourSequence[0].ContourSequence = [contour]
    pydicom.dcmwrite(path, ds, enforce_file_format=False)  # like the original: no file meta, no preamble


def test_series_is_ordered_by_position_and_rescaled(tmp_path):
    from datamint_lightning.data.readers import read_dicom_series

    uid, _, expected = write_series(tmp_path / "s")
    volume, spacing, meta = read_dicom_series(tmp_path / "s")
    assert volume.dtype == np.float32 and volume.shape == (SLICES, 128, 128)
    np.testing.assert_array_equal(volume, expected)  # slice order from positions, not file names; slope 2
    assert spacing == pytest.approx((STEP, 0.661468, 0.661468))
    assert meta["SeriesInstanceUID"] == uid and meta["PatientID"] == "PAT-1" and len(meta["sha256"]) == 64


@pytest.mark.parametrize("kind", ["drop", "duplicate"])
def test_series_with_missing_or_duplicate_slices_is_an_error(tmp_path, kind):
    from datamint_lightning.data.readers import read_dicom_series

    write_series(tmp_path / "s", **{kind: 3})
    with pytest.raises(DataError, match="missing 1 slice" if kind == "drop" else "duplicate slices") as error:
        read_dicom_series(tmp_path / "s")
    assert ".dcm" in str(error.value)  # names the files


def test_dicom_tree_with_seg_and_rtstruct(tmp_path):
    from datamint_lightning.data.importers.dicom_tree import import_dicom
    from datamint_lightning.data.volumes import read_nifti

    uid, sops, expected = write_series(tmp_path / "tree" / "PAT-1" / "ct")
    liver = np.zeros((SLICES, 128, 128), np.uint8)
    liver[1:3, 20:40, 30:60] = 1
    write_seg(tmp_path / "tree" / "PAT-1" / "seg.dcm", uid, sops, {"liver": liver})
    # The square spans columns 80..100 and rows 60..90 on slice 4 (pixel spacing 0.661468 mm).
    dx = 0.661468
    x0, y0 = -158.135803 + 80 * dx, -179.035797 + 60 * dx
    write_rtstruct(
        tmp_path / "tree" / "PAT-1" / "rt.dcm", uid, "tumour", -75.7 + 4 * STEP, (x0, y0, x0 + 20 * dx, y0 + 30 * dx)
    )
    uid2, _, _ = write_series(tmp_path / "tree" / "PAT-2" / "ct", patient="PAT-2", seed=1)
    (tmp_path / "tree" / "README.txt").write_text("not DICOM")

    store = ProjectStore(tmp_path / "store")
    project = import_dicom(tmp_path / "tree", "Dicom CT", store=store)
    assert project.labels == {"liver": 1, "tumour": 2}
    assert sorted(project.patients) == ["PAT-1", "PAT-2"]
    annotated = next(r for r in project.resources if r.id == uid)
    assert annotated.kind == "volume" and annotated.spacing == pytest.approx((STEP, 0.661468, 0.661468))
    image, _ = read_nifti(project.path(annotated.image))
    np.testing.assert_array_equal(image, expected)
    label, _ = read_nifti(project.path(annotated.label), dtype=np.int16)
    np.testing.assert_array_equal(label == 1, liver.astype(bool))
    tumour = np.argwhere(label == 2)
    assert set(tumour[:, 0]) == {4}
    assert (
        tumour[:, 1].min() == 60 and tumour[:, 1].max() == 90 and tumour[:, 2].min() == 80 and tumour[:, 2].max() == 100
    )
    unannotated = next(r for r in project.resources if r.id == uid2)
    assert unannotated.label is None
    assert store.inspect("Dicom CT")["labels"]["tumour"] == {"value": 2, "resources": 1, "patients": 1}


def test_dicom_tree_bad_series_fails_whole_import_or_is_skipped(tmp_path):
    from datamint_lightning.data.importers.dicom_tree import import_dicom

    write_series(tmp_path / "tree" / "good", patient="GOOD")
    write_series(tmp_path / "tree" / "bad", patient="BAD", drop=2)
    (tmp_path / "tree" / "corrupt.dcm").write_bytes(b"\x00" * 10)
    store = ProjectStore(tmp_path / "store")
    with pytest.raises(DataError, match="corrupt.dcm|missing 1 slice"):
        import_dicom(tmp_path / "tree", "CT", store=store)
    assert store.names() == [] and list((tmp_path / "store").iterdir()) == []  # nothing half-written

    report = tmp_path / "report.json"
    project = import_dicom(tmp_path / "tree", "CT", store=store, skip_bad=True, report=report)
    assert project.patients == ["GOOD"]
    skipped = json.loads(report.read_text())["skipped"]
    assert len(skipped) == 2
    assert any("corrupt.dcm" in s["item"] for s in skipped) and any("missing 1 slice" in s["error"] for s in skipped)


def test_seg_of_a_series_not_in_the_tree_is_reported(tmp_path):
    from datamint_lightning.data.importers.dicom_tree import import_dicom

    _uid, sops, _ = write_series(tmp_path / "tree" / "ct")
    mask = np.zeros((SLICES, 128, 128), np.uint8)
    mask[2, 5:9, 5:9] = 1
    write_seg(tmp_path / "tree" / "seg.dcm", "1.2.3.4.5", sops, {"liver": mask})
    with pytest.raises(DataError, match=r"seg\.dcm.*not in the tree"):
        import_dicom(tmp_path / "tree", "CT", store=ProjectStore(tmp_path / "store"))
