"""The project store and the ``projects`` CLI: list, show/inspect (counts per label/split/patient), delete."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from datamint_lightning.data.projects import ProjectStore, Resource
from datamint_lightning.errors import DataError, ProjectNotFoundError


def make_project(store: ProjectStore, name: str = "Tiny", patients: int = 3):
    from datamint_lightning.data.volumes import nifti_bytes

    resources, files = [], {}
    for index in range(patients):
        label = np.zeros((2, 8, 8), np.uint8)
        label[0, :2, :2] = 1 if index % 2 == 0 else 2
        files[f"v{index}.nii.gz"] = nifti_bytes(np.zeros((2, 8, 8), np.int16), (1.0, 1.0, 1.0))
        files[f"l{index}.nii.gz"] = nifti_bytes(label, (1.0, 1.0, 1.0))
        resources.append(
            Resource(
                id=f"r{index}",
                patient_id=f"P{index}",
                modality="MR",
                kind="volume",
                image=f"v{index}.nii.gz",
                label=f"l{index}.nii.gz",
            )
        )
    return store.create(name, {"liver": 1, "spleen": 2}, resources, files)


def cli(*args: str, store) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "datamint_lightning", "projects", "--store", str(store), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_inspect_counts_labels_patients_and_splits(tmp_path):
    store = ProjectStore(tmp_path)
    project = make_project(store)
    (project.root / "splits").mkdir()
    (project.root / "splits" / "seed1.json").write_text(
        json.dumps(
            {
                "seed": 1,
                "fractions": {"train": 0.67, "val": 0.33},
                "patients": {"P0": "train", "P1": "train", "P2": "val"},
            }
        )
    )
    info = store.inspect("tiny")
    assert info["labels"] == {
        "liver": {"value": 1, "resources": 2, "patients": 2},
        "spleen": {"value": 2, "resources": 1, "patients": 1},
    }
    assert info["splits"] == {
        "seed1": {"train": {"patients": 2, "resources": 2}, "val": {"patients": 1, "resources": 1}}
    }
    assert info["modalities"] == {"MR": 3} and info["resources_per_patient"] == {"P0": 1, "P1": 1, "P2": 1}


def test_store_location_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAMINT_LIGHTNING_HOME", str(tmp_path / "home"))
    assert ProjectStore().root == tmp_path / "home" / "projects"
    assert ProjectStore(tmp_path / "elsewhere").root == tmp_path / "elsewhere"


def test_failed_create_leaves_store_unchanged(tmp_path):
    store = ProjectStore(tmp_path)
    make_project(store, "First")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(FileNotFoundError):
        store.create("Second", {}, [], {"a.nii.gz": tmp_path / "does-not-exist"})
    with pytest.raises(DataError, match="already exists"):
        make_project(store, "first")
    with pytest.raises(DataError, match="escapes the project folder"):
        store.create("Third", {}, [], {"../evil": b"x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == before and store.names() == ["First"]


def test_damaged_project_does_not_hide_others(tmp_path):
    store = ProjectStore(tmp_path)
    make_project(store, "Good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "project.json").write_text("{not json")
    rows = store.list_projects()
    assert [r["name"] for r in rows if "error" not in r] == ["Good"]
    assert any("unreadable" in r.get("error", "") for r in rows)
    assert store.open("Good").name == "Good"


def test_delete(tmp_path):
    store = ProjectStore(tmp_path)
    make_project(store, "Gone")
    store.delete("gone")
    assert store.names() == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(ProjectNotFoundError, match="No project named 'gone'"):
        store.delete("gone")


def test_cli_list_show_delete(tmp_path):
    store = ProjectStore(tmp_path)
    make_project(store, "Tiny CT")
    listed = cli("list", store=tmp_path)
    assert listed.returncode == 0 and "Tiny CT  [segmentation]  3 resource(s), 3 patient(s)" in listed.stdout
    shown = cli("show", "Tiny CT", store=tmp_path)
    assert shown.returncode == 0 and "label 'liver' (value 1): 2 resource(s), 2 patient(s)" in shown.stdout
    assert json.loads(cli("inspect", "tiny-ct", "--json", store=tmp_path).stdout)["patients"] == 3
    refused = cli("delete", "Tiny CT", store=tmp_path)  # no terminal to confirm on: refuse
    assert refused.returncode == 1 and store.names() == ["Tiny CT"]
    assert cli("delete", "Tiny CT", "--yes", store=tmp_path).returncode == 0 and store.names() == []
    missing = cli("show", "Nope", store=tmp_path)
    assert missing.returncode == 2 and "error: No project named 'Nope'" in missing.stderr


def test_cli_import_error_and_skip_report(tmp_path):
    from PIL import Image

    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "dogs").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "data" / "cats" / "c.png")
    (tmp_path / "data" / "dogs" / "d.jpg").write_bytes(b"broken")
    failed = cli("import", "class-folders", str(tmp_path / "data"), "--name", "Pets", store=tmp_path / "s")
    assert failed.returncode == 2 and "d.jpg" in failed.stderr and "Traceback" not in failed.stderr
    done = cli(
        "import",
        "class-folders",
        str(tmp_path / "data"),
        "--name",
        "Pets",
        "--skip-bad",
        "--report",
        str(tmp_path / "report.json"),
        store=tmp_path / "s",
    )
    assert done.returncode == 0, done.stderr
    assert "Imported 1 resource(s)" in done.stdout and "Skipped 1 bad item(s)" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "committed" and report["skipped"][0]["item"].endswith("d.jpg")
    empty = cli("import", "class-folders", str(tmp_path / "data" / "dogs"), "--name", "E", store=tmp_path / "s")
    assert empty.returncode == 2 and "class sub-folders" in empty.stderr
