"""Readers: 2D images (Pillow, pydicom test data), NIfTI from nibabel's bundled test data."""

from __future__ import annotations

import numpy as np
import pytest

from datamint_lightning.errors import DataError


def test_read_image_file_png_and_dicom(tmp_path):
    from PIL import Image
    from pydicom.data import get_testdata_file

    from datamint_lightning.data.readers import read_image_file

    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("RGB").save(tmp_path / "a.png")
    array, display = read_image_file(tmp_path / "a.png")
    assert display is True and array.shape == (8, 8) and array[0, 5] == 5
    array, display = read_image_file(get_testdata_file("MR_small.dcm"))
    assert display is False and array.shape == (64, 64) and array.dtype == np.float32


def test_corrupt_files_name_the_file(tmp_path):
    from datamint_lightning.data.readers import read_dicom_series, read_image_file, read_nrrd

    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8 broken")
    (tmp_path / "x.nrrd").write_bytes(b"NRRD0004\nnonsense")
    (tmp_path / "dcm").mkdir()
    (tmp_path / "dcm" / "x.dcm").write_bytes(b"\x00" * 200)
    for call, name in (
        (lambda: read_image_file(tmp_path / "x.jpg"), "x.jpg"),
        (lambda: read_nrrd(tmp_path / "x.nrrd"), "x.nrrd"),
        (lambda: read_dicom_series(tmp_path / "dcm"), "x.dcm"),
    ):
        with pytest.raises(DataError, match=name):
            call()


def test_nibabel_test_data_reads_in_display_orientation():
    import os

    import nibabel as nib
    from nibabel.testing import data_path

    from datamint_lightning.data.volumes import read_nifti, to_display

    path = os.path.join(data_path, "anatomical.nii")
    volume, spacing = read_nifti(path)
    image = nib.load(path)
    same, same_spacing = to_display(np.asanyarray(image.dataobj), image.affine)
    np.testing.assert_array_equal(volume, same)
    assert spacing == same_spacing and volume.ndim == 3


def test_compact_keeps_integers_as_int16():
    from datamint_lightning.data.volumes import compact

    assert compact(np.array([[-1024.0, 3000.0]])).dtype == np.int16
    assert compact(np.array([0.5, 1.0])).dtype == np.float32
    assert compact(np.array([70000], np.int32)).dtype == np.float32
