"""One confinement rule for every path form over REST, size limits answered 413, clean error bodies and no
request temp files left behind: against a real ``mlflow models serve`` (one server for every case)."""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np
import pytest
from PIL import Image
from serving_helpers import post, serve_model
from test_hostile_inputs import png_claiming
from test_serving_rest import MODEL_NAME, registry  # noqa: F401 (the packaged model, as a fixture)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A root the server may read, a folder beside it that it must not, and a link from one to the other."""
    folder = tmp_path_factory.mktemp("confinement")
    root, outside = folder / "inputs", folder / "outside"
    picture = np.random.default_rng(3).integers(0, 255, (48, 56), dtype=np.uint8)
    for path in (root / "case" / "slice.png", outside / "secret.png"):
        path.parent.mkdir(parents=True)
        Image.fromarray(picture).save(path)
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "outside-dir").symlink_to(outside, target_is_directory=True)
    return {"folder": folder, "root": root, "outside": outside, "tmp": folder / "server_tmp"}


@pytest.fixture(scope="module")
def server(registry, files):  # noqa: F811
    files["tmp"].mkdir()
    env = {
        "DATAMINT_SERVING_PATH_ROOT": str(files["root"]),
        "TMPDIR": str(files["tmp"]),
        "DATAMINT_MAX_REQUEST_BYTES": str(2_000_000),
        "DATAMINT_MAX_DECOMPRESSED_BYTES": str(16 << 20),
    }
    with serve_model(
        f"models:/{MODEL_NAME}@champion", registry["uri"], registry["folder"] / "confined.log", env
    ) as url:
        yield url


@pytest.fixture(scope="module")
def tmp_at_start(server, files):
    """What the server's temp folder holds once it is up (its model download), before any request."""
    return sorted(p.name for p in files["tmp"].iterdir())


def _refused(response, status: int, files, sent: str = "") -> str:
    """The error message, after checking the body holds no stack trace and no server path the client did not
    send itself (``sent``: the value it sent, which the message may quote)."""
    assert response.status_code == status, response.text[:500]
    body = response.json()
    text = response.text.replace(sent, "<sent>") if sent else response.text
    assert "stack_trace" not in body and "Traceback" not in text
    assert str(files["folder"]) not in text and "/tmp/" not in text
    return body["message"]


def test_plain_string_paths_outside_the_root_are_refused(server, files, tmp_at_start):
    outside = files["outside"]
    for value in (
        str(outside / "secret.png"),
        "../outside/secret.png",
        "link.png",
        "outside-dir/secret.png",
        str(outside),
        "/etc/passwd",
    ):
        message = _refused(post(server, [value], mode="image"), 400, files, value)
        assert "not inside the server's input folder" in message, (value, message)
    # The answer for a file outside the root is the same whether or not it exists.
    there, missing = str(outside / "secret.png"), str(outside / "nothing.png")
    assert _refused(post(server, [there], mode="image"), 400, files, there).replace(there, "X") == _refused(
        post(server, [missing], mode="image"), 400, files, missing
    ).replace(missing, "X")
    for value in (there, "link.png"):  # the dict form: the same rule
        assert "not inside" in _refused(post(server, [{"path": value}], mode="image"), 400, files, value)


def test_paths_inside_the_root_are_read_in_every_form(server, files, tmp_at_start):
    forms = ["case/slice.png", str(files["root"] / "case" / "slice.png"), {"path": "case/slice.png"}]
    answers = [post(server, [form], mode="image") for form in forms]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text[:300] for a in answers]
    assert answers[0].json() == answers[1].json() == answers[2].json()
    message = _refused(post(server, ["case/missing.png"], mode="image"), 400, files)
    assert "'case/missing.png' does not exist in the server's input folder" in message


def test_size_limits_are_answered_413(server, files, tmp_at_start):
    bomb = png_claiming(files["folder"] / "bomb.png", 30000, 30000).read_bytes()
    item = {"data": base64.b64encode(bomb).decode(), "mime_type": "image/png"}
    assert "DATAMINT_MAX_PIXELS" in _refused(post(server, [item], mode="image"), 413, files)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("a.dcm", b"\0" * (64 << 20))
    item = {"data": base64.b64encode(archive.getvalue()).decode(), "mime_type": "application/zip"}
    assert "DATAMINT_MAX_DECOMPRESSED_BYTES" in _refused(post(server, [item], mode="image"), 413, files)
    big = {"data": base64.b64encode(b"\0" * 3_000_000).decode(), "mime_type": "image/png"}
    assert "DATAMINT_MAX_REQUEST_BYTES" in _refused(post(server, [big], mode="image"), 413, files)
    corrupt = {"data": base64.b64encode(b"\x89PNG not really").decode(), "mime_type": "image/png"}
    assert "input[0]" in _refused(post(server, [corrupt], mode="image"), 400, files)


def test_requests_leave_no_temp_files(server, files, tmp_at_start):
    """Runs last in this module: every request above wrote its inline files to the server's temp folder."""
    assert sorted(p.name for p in files["tmp"].iterdir()) == tmp_at_start


def test_in_process_predict_still_reads_any_path(registry, files):  # noqa: F811
    from datamint_lightning.packaging.flavor import load_model

    model = load_model(registry["model_uri"], device="cpu")
    answer = model.predict([str(files["outside"] / "secret.png")], params={"mode": "image"})
    assert len(answer) == 1 and answer[0][0]["identifier"] == "liver"
