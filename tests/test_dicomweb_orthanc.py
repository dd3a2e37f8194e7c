"""PACS in and out: ``predict`` reads a study from a real Orthanc (DICOMweb plugin) over QIDO-RS/WADO-RS and stores
the DICOM SEG back with STOW-RS; credentials come from the environment and never appear in what it prints.

Orthanc is started on 127.0.0.1 by the test (Debian packages ``orthanc`` and ``orthanc-dicomweb``; CI does not
install them, so there the test is skipped, saying so)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from model_factories import save_tiny_segmentation_model
from test_import_dicom import write_series

pytestmark = pytest.mark.slow

ORTHANC = shutil.which("Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "radiographer", "s3cret-pw"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    import requests

    if ORTHANC is None or not PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    config = {
        "Name": "datamint-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,  # only clients on this machine
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    with open(root / "orthanc.log", "w") as log:
        process = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if requests.get(f"{url}/system", auth=(USER, PASSWORD), timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(0.1)
            else:
                pytest.fail(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-2000:]}")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_a_study_is_predicted_from_and_its_seg_stored_to_orthanc(orthanc, tmp_path, monkeypatch, capsys):
    import requests

    from datamint_lightning.data.importers.dicom_tree import import_dicom
    from datamint_lightning.data.projects import ProjectStore
    from datamint_lightning.data.readers import dicom_series_volume
    from datamint_lightning.data.volumes import read_nifti
    from datamint_lightning.packaging.flavor import load_model
    from datamint_lightning.predict.cli import main

    write_series(tmp_path / "ct", patient="PACS-1", slices=4)
    for path in sorted((tmp_path / "ct").iterdir()):
        assert requests.post(f"{orthanc}/instances", data=path.read_bytes(), auth=(USER, PASSWORD)).ok
    study = requests.get(f"{orthanc}/studies?expand", auth=(USER, PASSWORD)).json()[0]["MainDicomTags"]
    study_uid = study["StudyInstanceUID"]
    save_tiny_segmentation_model(tmp_path / "model", labels=("liver",))
    web = orthanc.replace("http://", "dicomweb://") + "/dicom-web"
    command = [
        f"model={tmp_path / 'model'}",
        f"input={web}?study={study_uid}",
        f"output={web}",
        f"report={tmp_path / 'report'}",
    ]

    monkeypatch.setenv("DICOMWEB_USERNAME", USER)
    monkeypatch.setenv("DICOMWEB_PASSWORD", "wrong")
    assert main(command) == 2
    refused = capsys.readouterr()
    assert "refused the credentials (HTTP 401)" in refused.err and "wrong" not in refused.err + refused.out
    assert not (tmp_path / "report").exists()

    monkeypatch.setenv("DICOMWEB_PASSWORD", PASSWORD)
    assert main(command) == 0
    printed = capsys.readouterr()
    assert PASSWORD not in printed.out + printed.err and "1 predicted" in printed.out
    # Orthanc now lists the SEG in the study, referencing the series
    series = requests.get(f"{orthanc}/studies/{_orthanc_id(orthanc, study_uid)}/series", auth=(USER, PASSWORD)).json()
    modalities = sorted(s["MainDicomTags"]["Modality"] for s in series)
    assert modalities == ["CT", "SEG"]
    seg_series = next(s for s in series if s["MainDicomTags"]["Modality"] == "SEG")
    instance = seg_series["Instances"][0]
    stored = requests.get(f"{orthanc}/instances/{instance}/file", auth=(USER, PASSWORD)).content
    # re-imported beside the source series: exactly the model's own prediction for that series
    shutil.copytree(tmp_path / "ct", tmp_path / "tree" / "ct")
    (tmp_path / "tree" / "seg.dcm").write_bytes(stored)
    project = import_dicom(tmp_path / "tree", "from orthanc", store=ProjectStore(tmp_path / "store"))
    label, _ = read_nifti(project.path(project.resources[0].label), dtype=np.int16)
    expected = load_model(str(tmp_path / "model")).predict([str(tmp_path / "ct")])[0][0]["mask"]
    grid = dicom_series_volume(tmp_path / "ct")[3]
    np.testing.assert_array_equal(label == project.labels.get("liver", -1), grid.to_display(expected).astype(bool))
    assert list((tmp_path / "report").rglob("*.seg.dcm"))  # the local copy, the resume state

    assert main(command) == 0  # a re-run finds the stored case and stores nothing twice
    assert "1 already written" in capsys.readouterr().out
    assert len(requests.get(f"{orthanc}/series/{seg_series['ID']}", auth=(USER, PASSWORD)).json()["Instances"]) == 1
    assert (
        len(requests.get(f"{orthanc}/studies/{_orthanc_id(orthanc, study_uid)}/series", auth=(USER, PASSWORD)).json())
        == 2
    )


def test_a_server_that_is_down_is_one_clear_error(tmp_path, capsys):
    from datamint_lightning.predict.cli import main

    save_tiny_segmentation_model(tmp_path / "model")
    web = f"dicomweb://127.0.0.1:{_free_port()}/dicom-web"
    assert main([f"model={tmp_path / 'model'}", f"input={web}?study=1.2.3", f"output={tmp_path / 'out'}"]) == 2
    assert "cannot be reached" in capsys.readouterr().err and not (tmp_path / "out").exists()


def _orthanc_id(url: str, study_uid: str) -> str:
    import requests

    found = requests.post(
        f"{url}/tools/find", json={"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}, auth=(USER, PASSWORD)
    ).json()
    return found[0]
