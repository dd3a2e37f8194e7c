"""Volumes in, volumes out: a mask found at a voxel in display orientation lands at that voxel of the file's own
array, for NIfTI, NRRD and DICOM series written with non-trivial orientations; volume-mode predictions of the
packaged models come back on that grid and describe it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamint_lightning.serving.decode import load_input

MARKER = 5000.0


def file_array(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Noise in [0, 1000) with MARKER at three voxels of an asymmetric pattern (a flip or swap would move it)."""
    data = np.random.default_rng(seed).integers(0, 1000, shape).astype(np.float32)
    voxels = [(1, 2, 3), (1, 2, 4), (shape[0] - 2, 1, 0)]
    for voxel in voxels:
        data[voxel] = MARKER
    return data, voxels


def oblique_affine(spacing=(0.8, 1.5, 3.0)) -> np.ndarray:
    """Voxel -> RAS with i towards inferior, j towards the left, k towards anterior (ILA), rotated by 7 degrees:
    every axis is permuted relative to the display (z, y, x) orientation and one is flipped."""
    angle = np.deg2rad(7)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    axes = np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], dtype=float) * np.array(spacing)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = rotation @ axes, (12.0, -30.0, 45.0)
    return affine


def check_round_trip(path: Path, data: np.ndarray, voxels: list[tuple[int, int, int]]) -> dict:
    volume = load_input(str(path))
    display_mask = volume.array == MARKER  # what a perfect model would predict, in display orientation
    assert display_mask.sum() == len(voxels)
    assert volume.voxel_grid().shape == data.shape
    on_file = volume.to_input_grid(display_mask)
    assert on_file.shape == data.shape
    assert sorted(zip(*np.nonzero(on_file))) == sorted(voxels)
    return volume.voxel_grid().describe()


def test_nifti_mask_lands_on_the_file_voxel(tmp_path):
    import nibabel as nib

    data, voxels = file_array((6, 7, 9))
    affine = oblique_affine()
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "case.nii.gz")
    described = check_round_trip(tmp_path / "case.nii.gz", data, voxels)
    np.testing.assert_allclose(described["affine"], affine, atol=1e-5)
    assert described["orientation"] == "ILA" and described["spacing"] == pytest.approx([0.8, 1.5, 3.0], abs=1e-5)
    assert described["array_order"].startswith("nibabel")


def test_nrrd_mask_lands_on_the_file_voxel(tmp_path):
    import nrrd

    data, voxels = file_array((5, 8, 6), seed=1)
    directions = np.array([[0.0, 0.0, -2.0], [0.9, 0.0, 0.0], [0.0, -1.2, 0.0]])  # rows: i, j, k in LPS
    nrrd.write(
        str(tmp_path / "case.nrrd"),
        data,
        {"space": "left-posterior-superior", "space directions": directions, "space origin": [1.0, 2.0, 3.0]},
    )
    described = check_round_trip(tmp_path / "case.nrrd", data, voxels)
    assert described["orientation"] == "ILA"  # LPS (0, 0, -2) is inferior; (0.9, 0, 0) is left; (0, -1.2, 0) anterior
    np.testing.assert_allclose(np.asarray(described["affine"])[:3, 3], [-1.0, -2.0, 3.0])
    assert described["array_order"].startswith("pynrrd")


def write_dicom_series(folder: Path, data_krc: np.ndarray, orientation, normal_step: float = 2.5) -> list[str]:
    """``data_krc`` (slice, row, column) as a DICOM series with ``orientation`` (row, column directions, LPS),
    files written in reverse order and named against it; returns SOPInstanceUIDs in slice order."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    series, uids = generate_uid(), []
    for k in range(len(data_krc)):
        dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        dataset.Rows, dataset.Columns = data_krc.shape[1:]
        dataset.RescaleSlope, dataset.RescaleIntercept = 1, 0
        dataset.PixelRepresentation, dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 16, 16, 15
        dataset.PixelData = data_krc[k].astype(np.int16).tobytes()
        dataset.SeriesInstanceUID, dataset.SOPInstanceUID = series, generate_uid()
        dataset.ImageOrientationPatient = [float(v) for v in orientation]
        dataset.ImagePositionPatient = [float(v) for v in np.array([10.0, -20.0, 30.0]) + k * normal_step * normal]
        dataset.PixelSpacing = [0.7, 0.9]
        dataset.save_as(folder / f"im{len(data_krc) - k:03d}.dcm", enforce_file_format=True)
        uids.append(str(dataset.SOPInstanceUID))
    return uids


def test_dicom_series_mask_lands_on_the_file_voxel(tmp_path):
    data, voxels = file_array((5, 6, 7), seed=2)
    uids = write_dicom_series(tmp_path / "series", data, (0, 1, 0, 0, 0, -1))  # sagittal slices
    described = check_round_trip(tmp_path / "series", data, voxels)
    assert described["sop_instance_uids"] == uids  # mask[k] belongs to the file with uids[k]
    assert described["array_order"].startswith("DICOM (slice, row, column)")
    assert described["spacing"] == pytest.approx([2.5, 0.7, 0.9])


def test_volume_mode_answers_on_the_file_grid(tmp_path):
    """Both packaged segmentation kinds: masks on the file grid, equal to the display answer moved back."""
    import nibabel as nib
    from model_factories import save_tiny_segmentation_model, save_tiny_volume_model

    from datamint_lightning.packaging.flavor import load_model

    data, _ = file_array((20, 24, 10))
    nib.save(nib.Nifti1Image(data, oblique_affine()), tmp_path / "case.nii.gz")
    display = load_input(str(tmp_path / "case.nii.gz"))
    save_tiny_segmentation_model(tmp_path / "m2d", image_size=32)
    save_tiny_volume_model(tmp_path / "m3d")
    for folder in ("m2d", "m3d"):
        model = load_model(str(tmp_path / folder), device="cpu")
        answer = model.predict([str(tmp_path / "case.nii.gz")], params={"mode": "volume"})[0][0]
        as_numbers = model.predict(
            [{"array": display.array, "spacing": list(display.spacing)}], params={"mode": "volume"}
        )[0][0]
        assert answer["mask"].shape == data.shape and answer["grid"]["shape"] == list(data.shape)
        assert as_numbers["mask"].shape == display.array.shape  # an array is its own grid
        np.testing.assert_array_equal(answer["mask"], display.to_input_grid(as_numbers["mask"]))
        np.testing.assert_allclose(answer["grid"]["affine"], oblique_affine(), atol=1e-5)
        assert answer["spacing"] == pytest.approx([0.8, 1.5, 3.0], abs=1e-5)
