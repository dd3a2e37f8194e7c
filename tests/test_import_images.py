"""2D importers on files written with Pillow and pydicom: images + masks, class folders, CSV of labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.errors import DataError


def png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def picture(seed: int, shape=(32, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def square(shape=(32, 40), value: int = 255) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[5:15, 10:30] = value
    return mask


def test_images_with_label_map_masks(tmp_path):
    from datamint_lightning.data.importers.image_masks import import_image_masks
    from datamint_lightning.data.importers.patients import PatientIds
    from datamint_lightning.data.volumes import read_nifti

    for index in range(3):
        png(tmp_path / "img" / f"P{index}_a.png", picture(index))
        png(tmp_path / "img" / f"P{index}_b.jpg", np.stack([picture(index)] * 3, -1))
        png(tmp_path / "masks" / f"P{index}_a_mask.png", square())  # 0/255 binary mask -> label 1
    png(tmp_path / "img" / "P9_c.tif", picture(9).astype(np.uint16) * 200)  # 16-bit: not display-ready
    project = import_image_masks(
        tmp_path / "img",
        "Masks",
        masks=tmp_path / "masks",
        labels={"lesion": 1},
        patients=PatientIds(regex=r"^(P\d+)_"),
        store=ProjectStore(tmp_path / "store"),
    )
    assert project.labels == {"lesion": 1} and project.patients == ["P0", "P1", "P2", "P9"]
    by_id = {r.id: r for r in project.resources}
    first = by_id["P0_a"]
    assert first.kind == "image" and first.metadata["display_8bit"] is True and first.metadata["label_values"] == [0, 1]
    image, _ = read_nifti(project.path(first.image))
    label, _ = read_nifti(project.path(first.label))
    assert image.shape == label.shape == (1, 32, 40)
    np.testing.assert_array_equal(image[0], picture(0))
    np.testing.assert_array_equal(label[0], square(value=1))
    assert by_id["P0_b"].label is None  # an image without a mask stays unannotated
    assert by_id["P9_c"].metadata["display_8bit"] is False


def test_one_binary_mask_per_label_and_dicom_images(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    from datamint_lightning.data.importers.image_masks import import_image_masks
    from datamint_lightning.data.volumes import read_nifti

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    (tmp_path / "img").mkdir()
    ds.save_as(tmp_path / "img" / "ct1.dcm")
    liver, tumour = np.zeros((128, 128), np.uint8), np.zeros((128, 128), np.uint8)
    liver[10:60, 10:60], tumour[20:30, 20:30] = 1, 255
    png(tmp_path / "masks" / "liver" / "ct1.png", liver)
    png(tmp_path / "masks" / "tumour" / "ct1.png", tumour)
    project = import_image_masks(
        tmp_path / "img", "Per label", masks=tmp_path / "masks", store=ProjectStore(tmp_path / "store")
    )
    assert project.labels == {"liver": 1, "tumour": 2}
    resource = project.resources[0]
    assert resource.patient_id == "1CT1" and resource.modality == "CT"  # from the DICOM header
    assert resource.metadata["display_8bit"] is False and resource.spacing == pytest.approx((1.0, 0.661468, 0.661468))
    image, _ = read_nifti(project.path(resource.image))
    assert image.min() < -500  # Hounsfield units (rescale intercept -1024 applied)
    label, _ = read_nifti(project.path(resource.label))
    assert (label[0, 20:30, 20:30] == 2).all() and (label[0, 40:60, 40:60] == 1).all() and label[0, 0, 0] == 0


def test_image_mask_bad_input(tmp_path):
    from datamint_lightning.data.importers.image_masks import import_image_masks

    png(tmp_path / "img" / "good.png", picture(0))
    png(tmp_path / "img" / "small.png", picture(1))
    png(tmp_path / "masks" / "good.png", square(value=1))
    png(tmp_path / "masks" / "small.png", square(shape=(16, 20), value=1))
    png(tmp_path / "masks" / "orphan.png", square(value=1))
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    store = ProjectStore(tmp_path / "store")
    with pytest.raises(DataError, match=r"broken\.png"):
        import_image_masks(tmp_path / "img", "2D", masks=tmp_path / "masks", store=store)
    assert store.names() == []
    report = tmp_path / "report.json"
    project = import_image_masks(
        tmp_path / "img", "2D", masks=tmp_path / "masks", store=store, skip_bad=True, report=report
    )
    assert [r.id for r in project.resources] == ["good"]
    skipped = {Path(s["item"]).name: s["error"] for s in json.loads(report.read_text())["skipped"]}
    assert set(skipped) == {"broken.png", "small.png", "orphan.png"}
    assert "(16, 20)" in skipped["small.png"] and "(32, 40)" in skipped["small.png"]
    assert "no image" in skipped["orphan.png"]


def test_mask_values_outside_declared_labels(tmp_path):
    from datamint_lightning.data.importers.image_masks import import_image_masks

    png(tmp_path / "img" / "a.png", picture(0))
    png(tmp_path / "masks" / "a.png", square(value=3))
    with pytest.raises(DataError, match=r"a\.png has value\(s\) \[3\] outside the declared labels"):
        import_image_masks(
            tmp_path / "img",
            "X",
            masks=tmp_path / "masks",
            labels={"liver": 1, "spleen": 2},
            store=ProjectStore(tmp_path / "store"),
        )


def test_class_folders(tmp_path):
    from datamint_lightning.data.importers.classification import import_class_folders

    for index in range(2):
        png(tmp_path / "data" / "benign" / f"b{index}.jpg", np.stack([picture(index)] * 3, -1))
    png(tmp_path / "data" / "malignant" / "sub" / "m0.png", picture(5))
    project = import_class_folders(tmp_path / "data", "Skin", store=ProjectStore(tmp_path / "store"))
    assert project.task == "classification" and project.categories == ("benign", "malignant")
    assert sorted((r.id, r.categories) for r in project.resources) == [
        ("benign__b0", ("benign",)),
        ("benign__b1", ("benign",)),
        ("malignant__sub__m0", ("malignant",)),
    ]
    assert all(r.kind == "image" and r.label is None for r in project.resources)


def test_csv_multilabel(tmp_path):
    from datamint_lightning.data.importers.classification import import_csv

    for index in range(3):
        png(tmp_path / "xr" / f"x{index}.png", picture(index))
    (tmp_path / "labels.csv").write_text(
        "path,label,patient_id\nxr/x0.png,effusion;nodule,A\nxr/x1.png,nodule,A\n"
        "xr/x2.png,,B\nxr/missing.png,nodule,C\n"
    )
    store = ProjectStore(tmp_path / "store")
    with pytest.raises(DataError, match="missing.png"):
        import_csv(tmp_path / "labels.csv", "CXR", store=store)
    project = import_csv(tmp_path / "labels.csv", "CXR", store=store, skip_bad=True)
    assert project.task == "multilabel_classification" and project.categories == ("effusion", "nodule")
    assert {r.id: r.categories for r in project.resources} == {
        "xr__x0": ("effusion", "nodule"),
        "xr__x1": ("nodule",),
        "xr__x2": (),
    }
    assert project.patients == ["A", "B"]
    assert store.inspect("CXR")["categories"] == {"effusion": 1, "nodule": 2}


def test_csv_single_label_with_two_labels_is_an_error(tmp_path):
    from datamint_lightning.data.importers.classification import import_csv

    png(tmp_path / "a.png", picture(0))
    (tmp_path / "t.csv").write_text("file,dx\na.png,x|y\n")
    with pytest.raises(DataError, match=r"t\.csv line 2.*several labels"):
        import_csv(
            tmp_path / "t.csv",
            "T",
            path_column="file",
            label_column="dx",
            separator="|",
            multi_label=False,
            store=ProjectStore(tmp_path / "store"),
        )


def test_all_items_bad_is_an_empty_project_error(tmp_path):
    from datamint_lightning.data.importers.image_masks import import_image_masks

    (tmp_path / "img").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"junk")
    store = ProjectStore(tmp_path / "store")
    with pytest.raises(DataError, match="project would be empty.*a.png"):
        import_image_masks(
            tmp_path / "img", "E", masks=tmp_path / "masks", store=store, skip_bad=True, report=tmp_path / "r.json"
        )
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "failed"
    assert list((tmp_path / "store").iterdir()) == []


def test_patient_ids_from_csv_then_regex(tmp_path):
    from datamint_lightning.data.importers.patients import PatientIds

    (tmp_path / "p.csv").write_text("file,subject\nscans/a1.png,S-01\nb2,S-02\n")
    ids = PatientIds(
        regex=r"(?P<patient>[a-z])\d", csv_path=tmp_path / "p.csv", key_column="file", patient_column="subject"
    )
    assert ids.resolve("scans/a1.png", "x") == "S-01" and ids.resolve("other/b2.jpg", "x") == "S-02"
    assert ids.resolve("c3.png", "x") == "c" and ids.resolve("123.png", "fallback") == "fallback"
    with pytest.raises(DataError, match="needs columns 'path'"):
        PatientIds(csv_path=tmp_path / "p.csv")
