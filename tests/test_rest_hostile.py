"""A hostile client against a real ``mlflow models serve`` of the packaged 2D model (issue 18): headers never make
the server read another file, no special file is ever opened, every request is bounded before its work, client
mistakes are 400s (413 over a limit) whose bodies quote at most a short excerpt, and the server keeps serving."""

from __future__ import annotations

import base64
import gzip
import json
import os
import time

import numpy as np
import pytest
import requests
from serving_helpers import post, serve_model
from test_serving_rest import MODEL_NAME, registry  # noqa: F401 (the packaged model, as a fixture)

SECRET = b"the quick brown fox jumps!\n"  # 27 bytes: what the probe rebuilt byte by byte
TIMEOUT_S = 60  # a request the server would never answer fails the test instead of hanging it


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A path root holding a detached NRRD header, a FIFO, a folder of links to an outside DICOM series, a folder
    of too many files and one too deep; a secret file and the series outside it."""
    from test_import_dicom import write_series

    folder = tmp_path_factory.mktemp("hostile")
    root, outside = folder / "root", folder / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.raw").write_bytes(SECRET)
    write_series(outside / "series", slices=3)
    (root / "detached.nhdr").write_text(_nrrd_header("raw", data_file="../outside/secret.raw"))
    os.mkfifo(root / "fifo.nrrd")
    os.mkfifo(root / "fifo.png")
    (root / "linked").mkdir()
    for source in sorted((outside / "series").iterdir()):
        (root / "linked" / source.name).symlink_to(source)
    (root / "many").mkdir()
    for index in range(60):
        (root / "many" / f"{index:03d}.dcm").write_bytes(b"x")
    deep = root / "deep" / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    (deep / "x.dcm").write_bytes(b"x")
    return {"folder": folder, "root": root, "outside": outside}


@pytest.fixture(scope="module")
def server(registry, files):  # noqa: F811
    env = {
        "DATAMINT_SERVING_PATH_ROOT": str(files["root"]),
        "DATAMINT_MAX_FOLDER_FILES": "50",
        "DATAMINT_MAX_PIXELS": "1000000",
    }
    with serve_model(f"models:/{MODEL_NAME}@champion", registry["uri"], registry["folder"] / "hostile.log", env) as url:
        yield url


def _nrrd_header(encoding: str, data_file: str | None = None, sizes: str = "3 3 3") -> str:
    return (
        f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {sizes}\nencoding: {encoding}\n"
        "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n"
        + (f"data file: {data_file}\n" if data_file else "\n")
    )


def nrrd_item(header: str, data: bytes = b"") -> dict:
    return {"data": base64.b64encode(header.encode() + data).decode(), "mime_type": "application/x-nrrd"}


def _send(url: str, body, **params) -> requests.Response:
    payload = body if isinstance(body, (str, bytes)) else json.dumps({"inputs": body, "params": params})
    return requests.post(
        f"{url}/invocations", data=payload, headers={"Content-Type": "application/json"}, timeout=TIMEOUT_S
    )


def _refused(response: requests.Response, status: int, *names: str) -> str:
    """The message of a clean refusal: the status, no stack trace, a short body, and every name in ``names``."""
    assert response.status_code == status, response.text[:500]
    assert len(response.text) < 2000, f"{len(response.text):,} characters of body"
    body = response.json()
    assert "stack_trace" not in body and "Traceback" not in response.text
    for name in names:
        assert name in body["message"], body["message"]
    return body["message"]


def _still_serving(url: str) -> None:
    assert post(url, [{"array": [[0.0, 1.0], [2.0, 3.0]]}]).status_code == 200


# ---------------------------------------------------------------------------------------- 1. headers name no file


def test_a_detached_nrrd_header_in_a_request_reads_no_server_file(server, files):
    answers = [
        _send(server, [nrrd_item(_nrrd_header("raw", data_file=name))], mode="volume")
        for name in (str(files["outside"] / "secret.raw"), "/nonexistent/secret.raw", "../../etc/passwd")
    ]
    messages = [_refused(a, 400, "detached NRRD is not accepted") for a in answers]
    assert len(set(messages)) == 1  # the same answer whether the named file exists or not: nothing leaks
    assert "secret.raw" not in messages[0] and "27" not in messages[0]
    gzip_header = _nrrd_header("gzip", data_file=str(files["outside"] / "secret.raw"))
    _refused(_send(server, [nrrd_item(gzip_header)], mode="volume"), 400, "detached NRRD")
    _still_serving(server)


def test_a_detached_header_in_the_path_root_is_refused_too(server, files):
    message = _refused(_send(server, [{"path": "detached.nhdr"}], mode="volume"), 400, "detached NRRD")
    assert str(files["root"]) not in message and str(files["outside"]) not in message


def test_a_corrupt_compressed_stream_is_named_without_its_bytes(server):
    answer = _send(server, [nrrd_item(_nrrd_header("gzip"), SECRET)], mode="volume")
    message = _refused(answer, 400, "gzip data is corrupt")
    assert "b'" not in message and "quick" not in message and "th" not in message.split("corrupt")[-1]


# ---------------------------------------------------------------------------------------- 2. no special files


def test_fifos_in_the_path_root_never_block_a_worker(server, files):
    """The issue's probe wedged a worker per request until all six were stuck; each now answers at once."""
    started = time.monotonic()
    for _ in range(3):
        for name in ("fifo.nrrd", "fifo.png"):
            message = _refused(_send(server, [{"path": name}], mode="volume"), 400, "not a regular file")
            assert str(files["root"]) not in message
    assert time.monotonic() - started < TIMEOUT_S
    _still_serving(server)
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200


# ---------------------------------------------------------------------------------------- 3. bounded before work


def test_ten_thousand_items_are_refused_before_any_is_decoded(server):
    started = time.monotonic()
    answer = _send(server, [{"array": [[0.0, 1.0], [2.0, 3.0]]}] * 10_000, mode="image")
    _refused(answer, 413, "10,000", "DATAMINT_MAX_REQUEST_ITEMS")
    assert time.monotonic() - started < TIMEOUT_S / 2
    _still_serving(server)


def test_a_client_batch_size_is_capped_by_the_model(server):
    item = {"array": [[0.0, 1.0], [2.0, 3.0]]}
    _refused(_send(server, [item], batch_size=10**12), 400, "model_settings.batch_size", "at most 16")
    assert _send(server, [item], batch_size=4).status_code == 200


def test_inline_arrays_meet_the_pixel_and_voxel_limits(server):
    _refused(_send(server, [{"array": np.zeros((1001, 1000), np.uint8).tolist()}]), 413, "DATAMINT_MAX_PIXELS")
    declared = {"array_b64": base64.b64encode(b"\0" * 8).decode(), "dtype": "uint8", "shape": [100000, 100000]}
    _refused(_send(server, [declared]), 413, "DATAMINT_MAX_PIXELS")
    volume = {**declared, "shape": [4000, 4000, 4000]}
    _refused(_send(server, [volume]), 413, "DATAMINT_MAX_VOXELS")


# ---------------------------------------------------------------------------------------- 5. the path root


def test_a_folder_of_links_to_outside_files_is_refused(server, files):
    message = _refused(_send(server, [{"path": "linked"}], mode="volume"), 400, "outside the folder")
    assert str(files["outside"]) not in message and str(files["root"]) not in message


def test_folder_requests_are_bounded_in_files_and_depth(server):
    _refused(_send(server, [{"path": "many"}], mode="volume"), 413, "DATAMINT_MAX_FOLDER_FILES")
    _refused(_send(server, [{"path": "deep"}], mode="volume"), 413, "DATAMINT_MAX_FOLDER_DEPTH")
    _refused(_send(server, [{"path": "."}], mode="volume"), 413, "DATAMINT_MAX_FOLDER_")  # the whole root: bounded
    _still_serving(server)


# ---------------------------------------------------------------------------------------- 8. status codes


@pytest.mark.parametrize(
    "items, params, expected",
    [
        ([{"array_b64": "AAAA", "dtype": "uint8", "shape": [-1, 3]}], {}, "positive whole numbers"),
        ([{"array_b64": "AAAA", "dtype": "uint8", "shape": [2**70, 2**70]}], {}, "DATAMINT_MAX_PIXELS"),
        ([{"array": np.zeros((2, 4, 4)).tolist(), "spacing": ["a", "b", "c"]}], {}, "spacing="),
        ([{"array": np.zeros((2, 4, 4)).tolist(), "spacing": [float("inf"), 1, 1]}], {}, "finite"),
        ([{"path": "case\u0000.png"}], {}, "without NUL characters"),
        ([{"array": [[0.0, 1.0], [2.0, 3.0]]}], {"threshold": "x" * 100_000}, "threshold"),
    ],
)
def test_client_mistakes_are_400s_or_413s_never_500s(server, items, params, expected):
    answer = _send(server, items, **params)
    assert answer.status_code in (400, 413), answer.text[:500]
    _refused(answer, answer.status_code, expected)


def test_deep_json_is_a_400(server):
    body = '{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}"
    _refused(_send(server, body), 400, "nested too deeply")
    _still_serving(server)


def test_a_wrongly_typed_param_does_not_echo_the_request(server):
    """MLflow checks params against the signature before predict and quoted the whole request back."""
    payload = base64.b64encode(gzip.compress(os.urandom(3 << 20))).decode()
    item = {"data": payload, "mime_type": "image/png"}
    message = _refused(_send(server, [item], batch_size="many"), 400, "batch_size")
    assert payload[:100] not in message
    _refused(_send(server, "{not json" + "x" * 1_000_000), 400)
    _still_serving(server)
