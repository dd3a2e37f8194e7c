"""Hostile files and requests: size limits checked before the big allocation, on every decoder, with one clear
error (``InputTooLarge``, a ``DataError``); imports skip such files with a reason; request temp files go away."""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from datamint_lightning.errors import ConfigError, DataError, InputTooLarge, PredictionError


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming ``width`` x ``height`` grey pixels, with one row of data (a few hundred bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def nifti_gz_claiming(path: Path, shape: tuple[int, ...], dtype=np.uint8, data_bytes: int = 1000) -> Path:
    """A .nii.gz whose header declares ``shape`` but which holds only ``data_bytes`` of zeros."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["magic"], header["vox_offset"] = b"n+1", 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * data_bytes))
    return path


@pytest.fixture
def fresh_tmp(tmp_path, monkeypatch) -> Path:
    """``tempfile``'s folder pointed at an empty one, to list what a request leaves behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# ------------------------------------------------------------------------------------------------ 2D images


@pytest.mark.parametrize("side", [30000, 12000])  # over PIL's own bomb error (2 x 89 M), and between ours and it
def test_png_claiming_huge_size_is_refused_before_decoding(tmp_path, side):
    from datamint_lightning.data.readers import read_image

    path = png_claiming(tmp_path / "bomb.png", side, side)
    with pytest.raises(InputTooLarge, match="DATAMINT_MAX_PIXELS"):
        read_image(path)


def test_pixel_limit_is_configurable_and_validated(tmp_path, monkeypatch):
    from PIL import Image

    from datamint_lightning.data.readers import read_image

    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png").array.shape == (20, 30)
    monkeypatch.setenv("DATAMINT_MAX_PIXELS", "500")
    with pytest.raises(InputTooLarge, match=r"30 x 20 image, pixel count is 600, over the limit of 500"):
        read_image(tmp_path / "small.png")
    assert Image.MAX_IMAGE_PIXELS == 89478485  # PIL's own global is left as it was
    monkeypatch.setenv("DATAMINT_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="DATAMINT_MAX_PIXELS='lots'"):
        read_image(tmp_path / "small.png")


def test_import_skip_bad_skips_an_image_bomb_with_a_reason(tmp_path):
    from PIL import Image

    from datamint_lightning.data.importers.classification import import_class_folders
    from datamint_lightning.data.projects import ProjectStore

    for index, name in enumerate(("cat", "dog")):
        (tmp_path / "src" / name).mkdir(parents=True)
        Image.fromarray(np.full((16, 16), 40 * index, np.uint8)).save(tmp_path / "src" / name / "a.png")
    png_claiming(tmp_path / "src" / "dog" / "bomb.png", 30000, 30000)
    project = import_class_folders(
        tmp_path / "src", "Pets", store=ProjectStore(tmp_path / "store"), skip_bad=True, report=tmp_path / "report.json"
    )
    assert len(project.resources) == 2
    skipped = json.loads((tmp_path / "report.json").read_text())["skipped"]
    assert [Path(s["item"]).name for s in skipped] == ["bomb.png"]
    assert "DATAMINT_MAX_PIXELS" in skipped[0]["error"]


def test_import_cli_reports_an_image_bomb_without_a_traceback(tmp_path):
    from PIL import Image

    (tmp_path / "src" / "cat").mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(tmp_path / "src" / "cat" / "a.png")
    png_claiming(tmp_path / "src" / "cat" / "bomb.png", 30000, 30000)
    store = {"DATAMINT_LIGHTNING_HOME": str(tmp_path / "home")}
    failed = run_cli("projects", "import", "class-folders", str(tmp_path / "src"), "--name", "Bombed", env=store)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "bomb.png" in failed.stderr and "DATAMINT_MAX_PIXELS" in failed.stderr
    skipped = run_cli(
        "projects", "import", "class-folders", str(tmp_path / "src"), "--name", "Bombed", "--skip-bad", env=store
    )
    assert skipped.returncode == 0, skipped.stderr
    assert "Traceback" not in skipped.stderr + skipped.stdout


# ------------------------------------------------------------------------------------------------ volumes


def test_nifti_header_claiming_a_billion_voxels_is_refused_before_reading(tmp_path):
    from datamint_lightning.data.volumes import read_nifti

    path = nifti_gz_claiming(tmp_path / "zeros.nii.gz", (1024, 1024, 1024))
    assert path.stat().st_size < 10_000
    started = time.monotonic()
    with pytest.raises(
        InputTooLarge,
        match=r"shape \(1024, 1024, 1024\), voxel count is 1,073,741,824.*"
        "DATAMINT_MAX_VOXELS",
    ):
        read_nifti(path)
    assert time.monotonic() - started < 2  # refused from the header, nothing decompressed


def test_voxel_limit_applies_to_nifti_and_msd_import_skips_with_reason(tmp_path, monkeypatch):
    from test_import_msd import write_msd

    from datamint_lightning.data.importers.msd import import_msd
    from datamint_lightning.data.projects import ProjectStore
    from datamint_lightning.data.volumes import read_nifti

    src = write_msd(tmp_path / "Task03_Liver", cases=2, shape=(12, 48, 48))
    nifti_gz_claiming(src / "imagesTr" / "liver_1_0000.nii.gz", (48, 48, 4000), np.int16)  # 9.2 M voxels
    monkeypatch.setenv("DATAMINT_MAX_VOXELS", "1000000")
    assert read_nifti(src / "imagesTr" / "liver_0_0000.nii.gz")[0].shape == (12, 48, 48)
    project = import_msd(
        src, "Liver", store=ProjectStore(tmp_path / "store"), skip_bad=True, report=tmp_path / "report.json"
    )
    assert project.patients == ["liver_0"]
    skipped = json.loads((tmp_path / "report.json").read_text())["skipped"]
    assert any("liver_1_0000.nii.gz" in s["error"] and "DATAMINT_MAX_VOXELS" in s["error"] for s in skipped), skipped


def _nrrd_bytes(sizes: str, encoding: str, data: bytes) -> bytes:
    return (
        f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {sizes}\nencoding: {encoding}\n"
        "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
        "space origin: (0,0,0)\n\n"
    ).encode() + data


def test_nrrd_gzip_bomb_stops_at_the_declared_size(tmp_path):
    from datamint_lightning.data.readers import read_nrrd

    (tmp_path / "good.nrrd").write_bytes(_nrrd_bytes("4 4 4", "gzip", gzip.compress(bytes(range(64)))))
    assert read_nrrd(tmp_path / "good.nrrd")[0].shape == (4, 4, 4)
    bomb = tmp_path / "bomb.nrrd"
    bomb.write_bytes(_nrrd_bytes("4 4 4", "gzip", gzip.compress(b"\0" * (200 << 20), compresslevel=1)))
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(InputTooLarge, match="decompresses to more than the 64 bytes its header declares"):
        read_nrrd(bomb)


def test_nrrd_header_sizes_are_checked_before_reading(tmp_path):
    from datamint_lightning.data.readers import read_nrrd

    (tmp_path / "huge.nrrd").write_bytes(_nrrd_bytes("2000 2000 2000", "raw", b"\0" * 100))
    with pytest.raises(InputTooLarge, match="DATAMINT_MAX_VOXELS"):
        read_nrrd(tmp_path / "huge.nrrd")


def test_dicom_image_and_series_limits(tmp_path, monkeypatch):
    from pydicom.data import get_testdata_file
    from test_import_dicom import write_series

    from datamint_lightning.data.readers import load_dicom_series, read_image

    write_series(tmp_path / "series", slices=4)  # 4 x 128 x 128
    files = sorted((tmp_path / "series").iterdir())
    monkeypatch.setenv("DATAMINT_MAX_VOXELS", str(3 * 128 * 128))
    with pytest.raises(InputTooLarge, match=r"DICOM series .*shape \(4, 128, 128\).*DATAMINT_MAX_VOXELS"):
        load_dicom_series(files)
    monkeypatch.setenv("DATAMINT_MAX_PIXELS", "10000")
    with pytest.raises(InputTooLarge, match=r"128 x 128 image.*DATAMINT_MAX_PIXELS"):
        read_image(get_testdata_file("CT_small.dcm"))


# ------------------------------------------------------------------------------------------------ requests


def _zip_item(members: dict[str, bytes]) -> dict:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return {"data": base64.b64encode(buffer.getvalue()).decode(), "mime_type": "application/zip"}


def test_zip_bomb_is_refused_and_leaves_no_temp_files(fresh_tmp, monkeypatch):
    from datamint_lightning.serving.rest import load_request_item

    item = _zip_item({"a.dcm": b"\0" * (64 << 20)})
    assert len(item["data"]) < 1 << 20
    monkeypatch.setenv("DATAMINT_MAX_DECOMPRESSED_BYTES", str(16 << 20))
    with pytest.raises(InputTooLarge, match="unzipped size in bytes is 67,108,864.*DATAMINT_MAX_DECOMPRESSED_BYTES"):
        load_request_item(item, 0)
    many = _zip_item({f"s{i}.dcm": b"x" for i in range(30)})
    monkeypatch.setenv("DATAMINT_MAX_ARCHIVE_MEMBERS", "20")
    with pytest.raises(InputTooLarge, match="member count is 30"):
        load_request_item(many, 0)
    assert list(fresh_tmp.iterdir()) == []


def test_request_errors_name_the_input_not_the_server_temp_folder(fresh_tmp):
    from datamint_lightning.serving.rest import load_request_item

    bad = {"data": base64.b64encode(b"not a png at all").decode(), "mime_type": "image/png"}
    with pytest.raises(DataError) as caught:
        load_request_item(bad, 3)
    assert "input[3]" in str(caught.value) and str(fresh_tmp) not in str(caught.value)
    bomb = io.BytesIO()
    png_claiming(fresh_tmp.parent / "bomb.png", 30000, 30000)
    bomb.write((fresh_tmp.parent / "bomb.png").read_bytes())
    with pytest.raises(InputTooLarge) as caught:
        load_request_item({"data": base64.b64encode(bomb.getvalue()).decode(), "mime_type": "image/png"}, 0)
    assert str(fresh_tmp) not in str(caught.value)
    assert list(fresh_tmp.iterdir()) == []


def test_request_inline_bytes_limit(monkeypatch):
    from datamint_lightning.serving.rest import check_request_size

    items = [
        {"data": base64.b64encode(b"\0" * 3000).decode(), "mime_type": "image/png"},
        {"array": np.zeros((10, 10)).tolist()},
    ]
    check_request_size(items)
    monkeypatch.setenv("DATAMINT_MAX_REQUEST_BYTES", "3000")
    with pytest.raises(InputTooLarge, match="inline data in bytes is 3,400.*DATAMINT_MAX_REQUEST_BYTES"):
        check_request_size(items)


def test_unsafe_zip_member_names_are_refused(fresh_tmp):
    from datamint_lightning.serving.rest import load_request_item

    for name in ("../escape.dcm", "/abs.dcm"):
        with pytest.raises(PredictionError, match="unsafe path"):
            load_request_item(_zip_item({name: b"x"}), 0)
    assert list(fresh_tmp.iterdir()) == []


def test_malformed_request_values_are_400s_not_crashes():
    from datamint_lightning.serving.rest import check_request_size, load_request_item

    with pytest.raises(PredictionError, match=r"input\[0\].array is not a rectangular array"):
        check_request_size([{"array": [[1, 2], [3]]}])
    volume = {"array": np.zeros((2, 4, 4)).tolist(), "primary_slice": "middle"}
    with pytest.raises(PredictionError, match=r"primary_slice='middle' must be a slice index"):
        load_request_item(volume, 0)


def test_an_unexpected_failure_while_serving_is_a_500_without_details(monkeypatch):
    from datamint_lightning.serving.base_model import BaseDatamintModel
    from datamint_lightning.serving.path_policy import SERVING_ENV
    from datamint_lightning.serving.request_error import ServerFailure

    class Broken(BaseDatamintModel):
        task_type = "image_segmentation"

        def predict_default(self, inputs, **params):
            raise RuntimeError("internal detail /srv/models/secret")

    with pytest.raises(RuntimeError, match="internal detail"):  # in-process callers see the real error
        Broken().predict([np.zeros((4, 4))])
    monkeypatch.setenv(SERVING_ENV, "true")
    with pytest.raises(ServerFailure) as caught:
        Broken().predict([np.zeros((4, 4))])
    assert caught.value.get_http_status_code() == 500
    assert "secret" not in caught.value.serialize_as_json() and "stack_trace" not in caught.value.serialize_as_json()
