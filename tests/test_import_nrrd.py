"""NRRD volumes with label volumes (3D Slicer layout), written with pynrrd."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.errors import DataError

LPS_HEADER = {
    "space": "left-posterior-superior",
    "space directions": np.diag([0.8, 0.8, 2.5]),
    "space origin": np.array([-100.0, -100.0, 50.0]),
}


def write_case(folder: Path, case: str, seed: int, segments: bool = True, label_shape=None) -> np.ndarray:
    import nrrd

    folder.mkdir(parents=True, exist_ok=True)
    volume = np.random.default_rng(seed).integers(-1000, 1000, (20, 24, 6)).astype(np.int16)  # (i, j, k)
    label = np.zeros(label_shape or volume.shape, np.uint8)
    label[5:10, 6:12, 2:4] = 1
    label[12:15, 6:9, 1] = 2
    nrrd.write(str(folder / f"{case}.nrrd"), volume, dict(LPS_HEADER))
    header = dict(LPS_HEADER)
    if segments:  # Slicer .seg.nrrd segment metadata
        header.update(
            {
                "Segment0_Name": "liver",
                "Segment0_LabelValue": "1",
                "Segment1_Name": "lesion",
                "Segment1_LabelValue": "2",
            }
        )
    nrrd.write(str(folder / f"{case}.seg.nrrd"), label, header)
    return volume


def test_nrrd_reader_orientation(tmp_path):
    from datamint_lightning.data.readers import read_nrrd

    volume = write_case(tmp_path, "c", 0)
    display, spacing, meta = read_nrrd(tmp_path / "c.nrrd")
    # LPS index (i: right->left, j: anterior->posterior, k: inferior->superior) is already display order.
    np.testing.assert_array_equal(display, volume.transpose(2, 1, 0))
    assert spacing == pytest.approx((2.5, 0.8, 0.8)) and meta["space"] == "left-posterior-superior"
    assert read_nrrd(tmp_path / "c.seg.nrrd")[2]["segments"] == {"liver": 1, "lesion": 2}


def test_nrrd_import_with_slicer_segment_names(tmp_path):
    from datamint_lightning.data.importers.nrrd_volumes import import_nrrd
    from datamint_lightning.data.volumes import read_nifti

    for index in range(2):
        write_case(tmp_path / "src", f"case{index}", index)
    project = import_nrrd(tmp_path / "src", "Slicer", modality="CT", store=ProjectStore(tmp_path / "store"))
    assert project.labels == {"liver": 1, "lesion": 2} and project.patients == ["case0", "case1"]
    resource = project.resources[0]
    assert resource.spacing == pytest.approx((2.5, 0.8, 0.8)) and resource.metadata["label_values"] == [0, 1, 2]
    label, _ = read_nifti(project.path(resource.label))
    assert label.shape == (6, 24, 20) and (label[2:4, 6:12, 5:10] == 1).all()


def test_nrrd_grid_mismatch_and_skip(tmp_path):
    from datamint_lightning.data.importers.nrrd_volumes import import_nrrd

    write_case(tmp_path / "src", "good", 0)
    write_case(tmp_path / "src", "bad", 1, label_shape=(20, 24, 5))
    store = ProjectStore(tmp_path / "store")
    with pytest.raises(DataError, match=r"bad\.seg\.nrrd has shape \(5, 24, 20\) but its image .*bad\.nrrd"):
        import_nrrd(tmp_path / "src", "N", store=store)
    project = import_nrrd(tmp_path / "src", "N", store=store, skip_bad=True, report=tmp_path / "r.json")
    assert project.patients == ["good"]
    assert json.loads((tmp_path / "r.json").read_text())["skipped"][0]["item"].endswith("bad.nrrd")
