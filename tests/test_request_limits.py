"""Every limit of issue 18 in process, cheaply (the same checks over real HTTP are in test_rest_hostile.py and
test_rest_volume_limits.py): files that headers name, special files, decompression, folders, request items,
inline arrays, shapes, spacings, batch sizes, resampling, the time budget and MLflow's own request errors."""

from __future__ import annotations

import base64
import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest

from datamint_lightning.errors import ConfigError, DataError, InputTooLarge, PredictionError

SECRET = b"the quick brown fox jumps!\n"


def nrrd_file(path: Path, encoding: str = "raw", data: bytes = bytes(27), data_file: str | None = None) -> Path:
    header = (
        f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 3 3 3\nencoding: {encoding}\n"
        "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if data_file is not None:
        path.write_text(header + f"data file: {data_file}\n")
    else:
        path.write_bytes(header.encode() + b"\n" + data)
    return path


@pytest.fixture
def served(monkeypatch, tmp_path) -> Path:
    """This process answers as MLflow's scoring server does, with a path root; returns the root."""
    from datamint_lightning.serving.path_policy import PATH_ROOT_ENV, SERVING_ENV

    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv(SERVING_ENV, "true")
    monkeypatch.setenv(PATH_ROOT_ENV, str(root))
    return root


# ------------------------------------------------------------------------------------ headers that name files


def test_detached_nrrd_is_refused_without_a_data_root_and_confined_with_one(tmp_path):
    from datamint_lightning.data.readers import read_nrrd

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.raw").write_bytes(SECRET)
    source = tmp_path / "source"
    (source / "data").mkdir(parents=True)
    (source / "data" / "inside.raw").write_bytes(bytes(range(27)))
    (source / "link.raw").symlink_to(tmp_path / "outside" / "secret.raw")
    inside = nrrd_file(source / "inside.nhdr", data_file="data/inside.raw")
    with pytest.raises(DataError, match=r"detached NRRD is not accepted"):
        read_nrrd(inside)
    assert read_nrrd(inside, data_root=source)[0].ravel().tolist() == sorted(range(27))
    for name in ("../outside/secret.raw", str(tmp_path / "outside" / "secret.raw"), "link.raw", "/dev/zero"):
        header = nrrd_file(source / "bad.nhdr", data_file=name)
        with pytest.raises(DataError, match=r"lies outside the folder"):
            read_nrrd(header, data_root=source)
    for name in ("LIST", "slice%03d.raw 1 3 1"):
        with pytest.raises(DataError, match=r"multi-file data"):
            read_nrrd(nrrd_file(source / "bad.nhdr", data_file=name), data_root=source)


def test_a_request_never_follows_a_detached_header_and_says_nothing_of_the_file(fresh_tmp_dir):
    from datamint_lightning.serving.rest import load_request_item

    messages = []
    for name in ("/etc/passwd", "/nonexistent", "../../../etc/passwd"):
        data = nrrd_file(fresh_tmp_dir / "x.nrrd", data_file=name).read_bytes()
        item = {"data": base64.b64encode(data).decode(), "mime_type": "application/x-nrrd"}
        with pytest.raises(DataError, match=r"detached NRRD is not accepted") as caught:
            load_request_item(item, 0)
        messages.append(str(caught.value))
    assert len(set(messages)) == 1 and "passwd" not in messages[0]


@pytest.fixture
def fresh_tmp_dir(tmp_path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def test_the_nrrd_importer_follows_data_files_only_inside_the_source(tmp_path):
    from datamint_lightning.data.importers.nrrd_volumes import import_nrrd
    from datamint_lightning.data.projects import ProjectStore

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.raw").write_bytes(SECRET)
    source = tmp_path / "source"
    nrrd_file(source / "case.nrrd", data_file="../outside/secret.raw")
    nrrd_file(source / "case.seg.nrrd", data=bytes([0, 1, 1] * 9))
    store = ProjectStore(tmp_path / "store")
    with pytest.raises(DataError, match=r"lies outside the folder"):
        import_nrrd(source, "Escaped", store=store)
    assert store.list_projects() == []
    (source / "case.raw").write_bytes(bytes(27))
    nrrd_file(source / "case.nrrd", data_file="case.raw")
    assert len(import_nrrd(source, "Inside", store=store).resources) == 1


def test_a_corrupt_compressed_stream_is_named_without_its_bytes(tmp_path):
    from datamint_lightning.data.readers import read_nrrd

    with pytest.raises(DataError, match=r"gzip data is corrupt") as caught:
        read_nrrd(nrrd_file(tmp_path / "bad.nrrd", "gzip", SECRET))
    assert "b'" not in str(caught.value) and "quick" not in str(caught.value)
    truncated = gzip.compress(bytes(27))[:-12]
    with pytest.raises(DataError, match=r"gzip data is (corrupt|truncated)"):
        read_nrrd(nrrd_file(tmp_path / "cut.nrrd", "gzip", truncated))


# ------------------------------------------------------------------------------------ special files, big files


def test_only_regular_files_are_opened_and_a_fifo_never_blocks(tmp_path, monkeypatch):
    from datamint_lightning.data.files import open_regular, regular_file
    from datamint_lightning.data.readers import read_image, read_nrrd
    from datamint_lightning.data.volumes import read_nifti

    os.mkfifo(tmp_path / "fifo.nrrd")
    started = time.monotonic()
    for read in (read_nrrd, read_image, read_nifti, open_regular):
        with pytest.raises(DataError, match=r"not a regular file"):
            read(tmp_path / "fifo.nrrd")
    with pytest.raises(DataError, match=r"is a folder"):
        regular_file(tmp_path)
    assert time.monotonic() - started < 5
    (tmp_path / "big.nrrd").write_bytes(bytes(5000))
    monkeypatch.setenv("DATAMINT_MAX_DECOMPRESSED_BYTES", "4096")
    with pytest.raises(InputTooLarge, match=r"file size in bytes is 5,000.*DATAMINT_MAX_DECOMPRESSED_BYTES"):
        read_nrrd(tmp_path / "big.nrrd")


def test_a_deflated_dicom_is_measured_before_pydicom_inflates_it(tmp_path, monkeypatch):
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from datamint_lightning.data.readers import read_dicom

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    dataset.add_new(0x00091010, "OB", bytes(8 << 20))  # a private element: 8 MiB that deflate to a few KiB
    dataset.save_as(tmp_path / "bomb.dcm", enforce_file_format=True)
    assert (tmp_path / "bomb.dcm").stat().st_size < 1 << 20
    assert read_dicom(tmp_path / "bomb.dcm", headers_only=True).Modality == "CT"
    monkeypatch.setenv("DATAMINT_MAX_DECOMPRESSED_BYTES", str(4 << 20))
    with pytest.raises(InputTooLarge, match=r"decompresses to more than 4,194,304 bytes"):
        read_dicom(tmp_path / "bomb.dcm")


# ------------------------------------------------------------------------------------ folders


def _folder(tmp_path: Path, files: int = 3, depth: int = 0) -> Path:
    folder = tmp_path / "folder"
    deep = folder.joinpath(*[f"d{i}" for i in range(depth)])
    deep.mkdir(parents=True)
    for index in range(files):
        (deep / f"{index}.dcm").write_bytes(b"x")
    return folder


def test_folder_listings_are_bounded_in_files_and_depth(tmp_path, monkeypatch):
    from datamint_lightning.data.files import folder_files

    assert len(folder_files(_folder(tmp_path / "a", files=3, depth=4))) == 3
    with pytest.raises(InputTooLarge, match=r"more than 4 levels deep.*DATAMINT_MAX_FOLDER_DEPTH"):
        folder_files(_folder(tmp_path / "b", depth=5))
    monkeypatch.setenv("DATAMINT_MAX_FOLDER_FILES", "10")
    with pytest.raises(InputTooLarge, match=r"more than 10 files.*DATAMINT_MAX_FOLDER_FILES"):
        folder_files(_folder(tmp_path / "c", files=11))


def test_a_link_out_of_the_root_inside_a_folder_is_refused(tmp_path):
    from datamint_lightning.data.files import folder_files

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "series").mkdir(parents=True)
    outside.mkdir()
    (outside / "a.dcm").write_bytes(b"x")
    (root / "series" / "b.dcm").write_bytes(b"x")
    assert folder_files(root / "series", root) == [root / "series" / "b.dcm"]
    (root / "series" / "a.dcm").symlink_to(outside / "a.dcm")
    with pytest.raises(DataError, match=r"lies outside the folder"):
        folder_files(root / "series", root)
    assert len(folder_files(root / "series")) == 2  # no root: a caller's own folder, links followed


# ------------------------------------------------------------------------------------ requests


def test_the_number_of_items_is_limited_before_decoding(monkeypatch):
    from datamint_lightning.serving.rest import check_request_size

    check_request_size([{"array": [[0, 1]]}] * 1000)
    with pytest.raises(InputTooLarge, match=r"number of inputs is 1,001.*DATAMINT_MAX_REQUEST_ITEMS"):
        check_request_size([{"array": [[0, 1]]}] * 1001)
    monkeypatch.setenv("DATAMINT_MAX_REQUEST_ITEMS", "2")
    with pytest.raises(InputTooLarge, match=r"DATAMINT_MAX_REQUEST_ITEMS"):
        check_request_size(["a", "b", "c"])


def test_inline_arrays_meet_the_pixel_and_voxel_limits_from_their_declared_shape(monkeypatch):
    from datamint_lightning.serving.rest import load_request_item

    monkeypatch.setenv("DATAMINT_MAX_PIXELS", "100")
    with pytest.raises(InputTooLarge, match=r"DATAMINT_MAX_PIXELS"):
        load_request_item({"array": np.zeros((11, 10)).tolist()}, 0)
    monkeypatch.setenv("DATAMINT_MAX_VOXELS", "1000")
    with pytest.raises(InputTooLarge, match=r"DATAMINT_MAX_VOXELS"):
        load_request_item({"array": np.zeros((11, 10, 10)).tolist()}, 0)
    tiny = base64.b64encode(b"\0").decode()
    for shape, error in (([10**6, 10**6], "DATAMINT_MAX_PIXELS"), ([10**9, 10**9, 10**9], "DATAMINT_MAX_VOXELS")):
        with pytest.raises(InputTooLarge, match=error):  # from the declared shape: nothing is decoded
            load_request_item({"array_b64": tiny, "dtype": "uint8", "shape": shape}, 0)
    for shape in ([-1, 3], [0, 3], [2.5, 3], ["2", "3"], [2], [1, 2, 3, 4], "2x3", None):
        with pytest.raises(PredictionError, match=r"positive whole numbers"):
            load_request_item({"array_b64": tiny, "dtype": "uint8", "shape": shape}, 0)


@pytest.mark.parametrize("spacing", [["a", "b", "c"], [float("inf"), 1, 1], [float("nan"), 1, 1], [0, 1, 1], [1, 1]])
def test_spacing_must_be_three_positive_finite_numbers(spacing):
    from datamint_lightning.serving.rest import load_request_item

    with pytest.raises(PredictionError, match=r"spacing=.* must be three positive, finite"):
        load_request_item({"array": np.zeros((2, 4, 4)).tolist(), "spacing": spacing}, 0)


def test_paths_with_a_nul_or_not_a_string_are_client_errors(served):
    from datamint_lightning.serving.decode import load_input

    for value in ({"path": "a\0b.png"}, {"path": 12}, {"path": ["a"]}, {"path": "x" * 5000}):
        with pytest.raises(PredictionError, match=r"must be a file path"):
            load_input(value, 0)


def test_messages_quote_only_an_excerpt_of_what_the_client_sent():
    from datamint_lightning.serving.request_error import InvalidRequest
    from datamint_lightning.serving.rest import load_request_item

    with pytest.raises(PredictionError) as caught:
        load_request_item({"data": "AAAA", "mime_type": "x" * 1_000_000}, 0)
    assert len(str(caught.value)) < 400
    assert len(InvalidRequest("y" * 1_000_000).message) <= 1000


def test_a_served_batch_size_is_capped_by_the_model_setting(monkeypatch):
    from datamint_lightning.serving.path_policy import SERVING_ENV
    from datamint_lightning.serving.segmentation_model import resolve_batch_size
    from datamint_lightning.serving.settings import ModelSettings

    settings = ModelSettings(batch_size=16, sw_batch_size=4)
    assert resolve_batch_size(settings, 10**12) == 10**12  # in process: the caller's own memory
    monkeypatch.setenv(SERVING_ENV, "true")
    assert resolve_batch_size(settings, None) == 16 and resolve_batch_size(settings, 8) == 8
    with pytest.raises(PredictionError, match=r"over this model's batch_size of 16 .model_settings.batch_size"):
        resolve_batch_size(settings, 10**12)
    with pytest.raises(PredictionError, match=r"model_settings.sw_batch_size"):
        resolve_batch_size(settings, 5, "sw_batch_size")
    for value in ("many", 2.5, 0, -1, True, float("inf")):
        with pytest.raises(PredictionError, match=r"must be a positive integer"):
            resolve_batch_size(settings, value)


def test_resampling_is_bounded_by_growth_and_by_voxels(monkeypatch):
    from datamint_lightning.serving.settings import ModelSettings
    from datamint_lightning.serving.volume_segmentation import check_resampling

    settings = ModelSettings(input_size=(16, 32, 32), spacing=(2.0, 1.0, 1.0))
    assert check_resampling((10, 20, 20), (5.0, 1.0, 1.0), settings, "v") == (25, 20, 20)
    assert check_resampling((10, 20, 20), None, settings, "v") == (10, 20, 20)
    with pytest.raises(InputTooLarge, match=r"1,024 -> 65,536,000 voxels.*growth factor is 64,000.*RESAMPLE_FACTOR"):
        check_resampling((4, 16, 16), (80.0, 40.0, 40.0), settings, "v")
    monkeypatch.setenv("DATAMINT_MAX_VOXELS", "100000")
    with pytest.raises(InputTooLarge, match=r"DATAMINT_MAX_VOXELS"):
        check_resampling((40, 64, 64), (4.0, 1.0, 1.0), settings, "v")


def test_list_masks_are_bounded():
    from datamint_lightning.serving.encoding import encode_mask

    assert encode_mask(np.ones((4, 4), np.uint8), "list") == [[1] * 4] * 4
    with pytest.raises(InputTooLarge, match=r"mask_format='rle'"):
        encode_mask(np.zeros((200, 200, 101), np.uint8), "list")


# ------------------------------------------------------------------------------------ the time budget


def test_the_time_budget_defaults_under_mlflows_timeout(monkeypatch):
    from datamint_lightning.data.limits import request_seconds

    monkeypatch.delenv("DATAMINT_MAX_REQUEST_SECONDS", raising=False)
    monkeypatch.delenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", raising=False)
    assert request_seconds(served=False) is None and request_seconds(served=True) == 54
    monkeypatch.setenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "120")
    assert request_seconds(served=True) == 108
    monkeypatch.setenv("DATAMINT_MAX_REQUEST_SECONDS", "2.5")
    assert request_seconds(served=False) == request_seconds(served=True) == 2.5
    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv("DATAMINT_MAX_REQUEST_SECONDS", bad)
        with pytest.raises(ConfigError, match=r"DATAMINT_MAX_REQUEST_SECONDS"):
            request_seconds(served=True)


def test_a_request_over_its_budget_stops_between_batches_and_answers_413(monkeypatch):
    from datamint_lightning.data.limits import check_time
    from datamint_lightning.serving.base_model import BaseDatamintModel
    from datamint_lightning.serving.request_error import InvalidRequest

    batches = []

    class Slow(BaseDatamintModel):
        task_type = "image_segmentation"

        def predict_default(self, inputs, **params):
            for _ in range(100):
                check_time("Segmenting")
                batches.append(1)
                time.sleep(0.05)
            return [[] for _ in inputs]

    monkeypatch.setenv("DATAMINT_MAX_REQUEST_SECONDS", "0.3")
    with pytest.raises(InvalidRequest, match=r"time budget of 0.3 s.*DATAMINT_MAX_REQUEST_SECONDS") as caught:
        Slow().predict([np.zeros((4, 4))])
    assert caught.value.get_http_status_code() == 413 and 3 <= len(batches) < 20
    check_time()  # outside a request: no budget


# ------------------------------------------------------------------------------------ MLflow's own answers


def test_the_scoring_guard_answers_mlflows_request_errors_briefly(monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    from datamint_lightning.serving import scoring_guard

    body = "x" * 1_000_000
    failures = {
        "deep": RecursionError("maximum recursion depth exceeded while decoding a JSON array"),
        "not json": scoring_server.MlflowInvalidInputException(f"Ensure that input is valid JSON.\nInput: \n{body}"),
        "param": MlflowException(f"Invalid parameters found: batch_size value `{body}`"),  # MLflow: 500
    }

    def invocations(data, content_type, model, input_schema):
        if data == "param":
            model.predict(None, params={})
        raise failures[data]

    class Model:
        def predict(self, data, params=None):
            raise failures["param"]

    monkeypatch.setattr(scoring_server, "invocations", invocations)
    assert scoring_guard.install() and not scoring_guard.install()  # once
    for data, status in (("deep", 400), ("not json", 400), ("param", 400)):
        with pytest.raises(MlflowException) as caught:
            scoring_server.invocations(data, "application/json", Model(), None)
        assert caught.value.get_http_status_code() == status
        assert len(caught.value.serialize_as_json()) < 600 and "stack_trace" not in caught.value.serialize_as_json()
