"""``python -m datamint_lightning predict``: a folder of mixed real inputs (DICOM series, NIfTI, NRRD, PNG, an
unreadable file, a series with a missing slice, a folder mixing two series) through tiny packaged models; outputs
compared with the model's own in-process answers, re-read with the project's readers and DICOM importer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from clinical_inputs import mixed_folder
from model_factories import save_tiny_classification_model, save_tiny_segmentation_model, save_tiny_volume_model

from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.errors import DatamintLightningError
from datamint_lightning.predict.cli import main
from datamint_lightning.predict.runner import PredictOptions, predict

LABELS = ("liver", "spleen")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    info = mixed_folder(root / "inputs")
    save_tiny_segmentation_model(root / "seg2d", labels=LABELS)
    return root, info


def _reference(model_path, item):
    from datamint_lightning.packaging.flavor import load_model

    answer = load_model(str(model_path), device="cpu").predict([str(item)], params={"entropy_map": True})[0]
    return {a["identifier"]: a for a in answer}


def _rows(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "predict_summary.csv", newline="") as stream:
        return {row["input"]: row for row in csv.DictReader(stream)}


def test_a_mixed_folder_is_predicted_and_written_on_each_source_grid(workspace, capsys):
    import nibabel as nib

    from datamint_lightning.data.readers import dicom_series_volume, nrrd_volume, read_image

    root, info = workspace
    out = root / "out"
    code = main(
        [f"model={root / 'seg2d'}", f"input={root / 'inputs'}", f"output={out}", "format=auto,rtstruct", "entropy=true"]
    )
    printed = capsys.readouterr().out
    assert code == 1  # two cases cannot be read: the exit status says not every case succeeded
    rows = _rows(out)
    statuses = {source: row["status"] for source, row in rows.items()}
    assert statuses.pop("PAT-1/corrupt.dcm") == "failed"
    assert statuses.pop(f"PAT-2/ct/ series {info['broken']}") == "failed"
    assert set(statuses.values()) == {"ok"} and len(statuses) == 7  # 3 series (2 share a folder), NIfTI, NRRD, 2 PNG
    assert "missing 1 slice" in rows[f"PAT-2/ct/ series {info['broken']}"]["detail"]
    assert "not a DICOM file" in rows["PAT-1/corrupt.dcm"]["detail"]
    assert printed.count("[") >= 9 and "7 predicted, 0 already written, 2 failed" in printed  # a line per case

    # NIfTI: the source's own affine and array order, the model's own masks
    expected = _reference(root / "seg2d", root / "inputs" / "nifti" / "case1.nii.gz")
    written = nib.load(out / "nifti" / "case1.nii.gz")
    np.testing.assert_allclose(written.affine, nib.load(root / "inputs" / "nifti" / "case1.nii.gz").affine)
    labels = np.asarray(written.dataobj)
    for value, name in enumerate(LABELS, start=1):
        np.testing.assert_array_equal(labels == value, expected[name]["mask"].astype(bool))
    entropy = np.asarray(nib.load(out / "nifti" / "case1_entropy.nii.gz").dataobj)
    np.testing.assert_allclose(entropy, expected["liver"]["entropy_map"], atol=1e-6)
    assert rows["nifti/case1.nii.gz"]["shape"] == "64x64x6"

    # NRRD: same voxel grid as the source, label names in Slicer's segment fields
    source_grid = nrrd_volume(root / "inputs" / "nrrd" / "case2.nrrd")[3]
    _, _, metadata, grid = nrrd_volume(out / "nrrd" / "case2.nrrd")
    np.testing.assert_allclose(grid.affine, source_grid.affine, atol=1e-9)
    assert metadata["segments"] == {"liver": 1, "spleen": 2}

    # PNG: the label map of the picture
    expected = _reference(root / "seg2d", root / "inputs" / "pictures" / "slice0.png")
    png = read_image(out / "pictures" / "slice0.png", mask=True).array
    np.testing.assert_array_equal(png == 2, expected["spleen"]["mask"].astype(bool))

    # two series in one folder: named by series UID, no output overwrites another
    for uid in info["shared"]:
        assert (out / "PAT-3" / "mixed" / f"{uid}.seg.dcm").is_file()
    assert dicom_series_volume(root / "inputs" / "PAT-1" / "ct")[2]["SeriesInstanceUID"] == info["ct"]
    assert not list(out.rglob(".*partial"))


def test_dicom_seg_and_rtstruct_reimport_as_the_predicted_mask(workspace):
    """The SEG and RTSTRUCT written for a series, imported with the project's own DICOM importer beside the source
    series, give back exactly the masks the model predicts for that series (Dice 1.0 for both)."""
    import shutil

    import pydicom

    from datamint_lightning.data.importers.dicom_tree import import_dicom
    from datamint_lightning.data.readers import dicom_series_volume
    from datamint_lightning.data.volumes import read_nifti

    root, info = workspace
    out = root / "out_dicom"
    predict(PredictOptions(str(root / "seg2d"), str(root / "inputs" / "PAT-1" / "ct"), str(out), "dicom-seg,rtstruct"))
    series_folder = root / "inputs" / "PAT-1" / "ct"
    expected = _reference(root / "seg2d", series_folder)
    grid = dicom_series_volume(series_folder)[3]
    for suffix in ("seg.dcm", "rtstruct.dcm"):
        [written] = list(out.glob(f"*.{suffix}"))
        dataset = pydicom.dcmread(written)
        source = pydicom.dcmread(next(series_folder.iterdir()), stop_before_pixels=True)
        assert dataset.StudyInstanceUID == source.StudyInstanceUID and dataset.PatientID == source.PatientID
        assert dataset.FrameOfReferenceUID == source.FrameOfReferenceUID
        tree = root / f"reimport_{suffix}"
        shutil.copytree(series_folder, tree / "ct")
        shutil.copy(written, tree / written.name)
        project = import_dicom(tree, f"reimport {suffix}", store=ProjectStore(root / "store"))
        [resource] = project.resources
        label, _ = read_nifti(project.path(resource.label), dtype=np.int16)
        for name in LABELS:
            mask = grid.to_display(expected[name]["mask"]).astype(bool)
            got = label == project.labels[name] if name in project.labels else np.zeros_like(mask)
            dice = 2 * (mask & got).sum() / max(mask.sum() + got.sum(), 1)
            assert dice == 1.0, (suffix, name, dice)
    seg = pydicom.dcmread(next(out.glob("*.seg.dcm")))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(LABELS)
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(info["ct_sops"]) and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == info["ct"]


def test_a_rerun_skips_finished_cases_and_completes_an_interrupted_run(workspace):
    root, _ = workspace
    out = root / "out_resume"
    options = PredictOptions(str(root / "seg2d"), str(root / "inputs" / "pictures"), str(out), batch_size=1)
    first = predict(options)
    assert [r.status for r in first.rows] == ["ok", "ok"] and first.succeeded
    # as a run killed while writing the second picture leaves it: no output, a stale temporary file
    (out / "slice1.png").unlink()
    (out / ".slice1.png.x1y2.partial").write_bytes(b"half")
    before = (out / "slice0.png").stat().st_mtime_ns
    second = predict(options)
    assert [(r.input, r.status) for r in second.rows] == [("slice0.png", "skipped"), ("slice1.png", "ok")]
    assert (out / "slice1.png").is_file() and not list(out.glob(".*partial"))
    assert (out / "slice0.png").stat().st_mtime_ns == before  # not written again
    assert [r.status for r in predict(PredictOptions(**{**vars(options), "overwrite": True})).rows] == ["ok", "ok"]


def test_volumes_through_a_3d_model_land_on_their_grid(workspace):
    import nibabel as nib

    root, _ = workspace
    save_tiny_volume_model(root / "seg3d")
    out = root / "out3d"
    report = predict(PredictOptions(str(root / "seg3d"), str(root / "inputs" / "nifti"), str(out), "nifti,nrrd"))
    assert [r.status for r in report.rows] == ["ok"]
    expected = _reference(root / "seg3d", root / "inputs" / "nifti" / "case1.nii.gz")["liver"]["mask"]
    np.testing.assert_array_equal(np.asarray(nib.load(out / "case1.nii.gz").dataobj) == 1, expected.astype(bool))
    assert (out / "case1.nrrd").is_file()


def test_a_classifier_writes_one_csv_of_scores(workspace, capsys):
    root, _ = workspace
    labels = ("normal", "nodule", "mass")
    save_tiny_classification_model(root / "cls", labels=labels)
    out = root / "out_cls"
    assert main([f"model={root / 'cls'}", f"input={root / 'inputs' / 'pictures'}", f"output={out}"]) == 0
    with open(out / "scores.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["input"] for r in rows] == ["slice0.png", "slice1.png"]
    for row in rows:
        scores = [float(row[label]) for label in labels]
        assert sum(scores) == pytest.approx(1.0, abs=1e-5) and row["prediction"] == labels[int(np.argmax(scores))]
        assert 0.0 <= float(row["entropy"]) <= 1.0
    # a classifier cannot be written as DICOM SEG: one message, before anything is read or written
    capsys.readouterr()
    bad = root / "out_cls_seg"
    assert main([f"model={root / 'cls'}", f"input={root / 'inputs'}", f"output={bad}", "format=dicom-seg"]) == 2
    assert "classifier" in capsys.readouterr().err and not bad.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"output": "FILE/sub"}, "is not writable"),
        ({"model": "NOWHERE"}, "does not resolve"),
        ({"format": "dicom-seg,jpeg2000"}, "jpeg2000 is not a segmentation output format"),
        ({"output": "dicomweb://127.0.0.1:9/dicom-web"}, "cannot be reached"),
        ({"output": "dicomweb://bob:secret@127.0.0.1:9/dicom-web"}, "must not hold credentials"),
        ({"output": "dicomweb://127.0.0.1:9/dicom-web", "format": "nifti"}, "stores DICOM objects"),
    ],
)
def test_commands_that_cannot_run_fail_before_anything_is_written(workspace, tmp_path, change, message):
    root, _ = workspace
    (tmp_path / "FILE").write_text("a file, not a folder")
    values = {"model": str(root / "seg2d"), "input": str(root / "inputs" / "pictures"), "output": "OUT", **change}
    for key, value in values.items():
        values[key] = value.replace("FILE", str(tmp_path / "FILE")).replace("NOWHERE", str(tmp_path / "no"))
        values[key] = values[key].replace("OUT", str(tmp_path / "out"))
    with pytest.raises(DatamintLightningError, match=message) as error:
        predict(PredictOptions(**values, report=str(tmp_path / "report")))
    assert "secret" not in str(error.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "report").exists()


def test_an_rtstruct_with_contours_longer_than_64_kib_reads_back(tmp_path):
    """A ragged mask gives ContourData beyond explicit VR's 64 KiB limit: it must still read back exactly."""
    import pydicom
    from test_import_dicom import write_series

    from datamint_lightning.data.importers.dicom_annotations import rasterise
    from datamint_lightning.data.readers import load_dicom_series, read_dicom
    from datamint_lightning.data.writers.dicom_seg import Algorithm, dataset_bytes
    from datamint_lightning.data.writers.rtstruct import rtstruct

    write_series(tmp_path / "ct", slices=2)
    series = load_dicom_series(sorted((tmp_path / "ct").iterdir()))
    sources = [read_dicom(p, headers_only=True) for p in series.files]
    mask = np.zeros(series.array.shape, np.uint8)
    mask[0, 4:124, 4:7] = 1  # a comb: one region whose outline is ~10,000 points long
    mask[0, 4:124:3, 4:124] = 1
    (tmp_path / "rt.dcm").write_bytes(dataset_bytes(rtstruct(series, sources, {"lesion": mask}, Algorithm("m", "1"))))
    dataset = pydicom.dcmread(tmp_path / "rt.dcm")
    assert max(len(c.ContourData) for c in dataset.ROIContourSequence[0].ContourSequence) * 9 > 65535
    painted = np.zeros(series.array.shape, np.int32)
    rasterise(dataset, tmp_path / "rt.dcm", series, {"lesion": 1}, painted)
    np.testing.assert_array_equal(painted == 1, mask.astype(bool))
