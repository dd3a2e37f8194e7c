"""MSD / nnU-Net raw importer on NIfTI files written with nibabel, and training the liver_seg recipe on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.errors import DataError


def write_msd(root: Path, cases: int = 3, shape=(12, 48, 48), v2: bool = False) -> Path:
    """A tiny Task03_Liver-like dataset from the phantoms: imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz."""
    import nibabel as nib

    from datamint_lightning.data.phantom import make_phantom
    from datamint_lightning.data.volumes import display_to_ras

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    labels = {"background": 0, "liver": 1, "cancer": 2} if v2 else {"0": "background", "1": "liver", "2": "cancer"}
    description = {"name": "Liver", "labels": labels, "numTraining": cases}
    description.update({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz"} if v2 else {"modality": {"0": "CT"}})
    (root / "dataset.json").write_text(json.dumps(description))
    for index in range(cases):
        phantom = make_phantom(seed=index, shape=shape)
        affine = np.diag([phantom.spacing[2], phantom.spacing[1], phantom.spacing[0], 1.0])
        label = (phantom.label == 1).astype(np.uint8)
        nib.save(
            nib.Nifti1Image(display_to_ras(phantom.image), affine), root / "imagesTr" / f"liver_{index}_0000.nii.gz"
        )
        nib.save(nib.Nifti1Image(display_to_ras(label), affine), root / "labelsTr" / f"liver_{index}.nii.gz")
    (root / "labelsTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork, as in MSD tars
    return root


@pytest.mark.parametrize("v2", [False, True])
def test_msd_and_nnunet_label_forms(tmp_path, v2):
    from datamint_lightning.data.importers.msd import import_msd
    from datamint_lightning.data.phantom import make_phantom
    from datamint_lightning.data.volumes import read_nifti

    src = write_msd(tmp_path / "Task03_Liver", v2=v2)
    store = ProjectStore(tmp_path / "store")
    project = import_msd(src, "Liver MSD", store=store)
    assert project.labels == {"liver": 1, "cancer": 2} and project.task == "segmentation"
    assert project.patients == ["liver_0", "liver_1", "liver_2"]
    resource = project.resources[0]
    assert resource.modality == "CT" and resource.kind == "volume" and resource.spacing == (5.0, 3.0, 3.0)
    image, _spacing = read_nifti(project.path(resource.image))
    np.testing.assert_array_equal(image, make_phantom(seed=0, shape=(12, 48, 48)).image)
    assert resource.metadata["source"] == "imagesTr/liver_0_0000.nii.gz" and len(resource.metadata["sha256"]) == 64


def test_msd_bad_items(tmp_path):
    import nibabel as nib

    from datamint_lightning.data.importers.msd import import_msd

    src = write_msd(tmp_path / "ds", cases=4)
    nib.save(
        nib.Nifti1Image(np.full((48, 48, 12), 7, np.uint8), np.diag([3.0, 3.0, 5.0, 1.0])),
        src / "labelsTr" / "liver_1.nii.gz",
    )  # value 7 is not a declared label
    nib.save(
        nib.Nifti1Image(np.zeros((40, 48, 12), np.uint8), np.diag([3.0, 3.0, 5.0, 1.0])),
        src / "labelsTr" / "liver_2.nii.gz",
    )  # wrong size
    (src / "imagesTr" / "liver_3_0000.nii.gz").write_bytes(b"not a nifti")
    store = ProjectStore(tmp_path / "store")
    existing = store.create("Keep me", {"a": 1}, [], {})
    with pytest.raises(DataError, match=r"liver_1\.nii\.gz has value\(s\) \[7\] outside the declared labels"):
        import_msd(src, "Bad", store=store)
    assert store.names() == ["Keep me"] and store.open("Keep me").id == existing.id
    assert sorted(p.name for p in store.root.iterdir()) == ["keep-me"]

    project = import_msd(src, "Bad", store=store, skip_bad=True, report=tmp_path / "r.json")
    assert project.patients == ["liver_0"]
    errors = {s["item"].split("/")[-1]: s["error"] for s in json.loads((tmp_path / "r.json").read_text())["skipped"]}
    assert "outside the declared labels" in errors["liver_1.nii.gz"]
    assert "shape (12, 48, 40)" in errors["liver_2.nii.gz"] or "shape" in errors["liver_2.nii.gz"]
    assert "Cannot read NIfTI file" in errors["liver_3.nii.gz"] and "liver_3_0000.nii.gz" in errors["liver_3.nii.gz"]


def test_msd_without_dataset_json_is_a_clear_error(tmp_path):
    from datamint_lightning.data.importers.msd import import_msd

    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="no dataset.json"):
        import_msd(tmp_path / "x", "X", store=ProjectStore(tmp_path / "store"))


def test_imported_msd_project_trains_with_liver_seg_recipe(tmp_path):
    """End to end: CLI import, then `python -m datamint_lightning recipe=liver_seg data.project=<name>`."""
    import os
    import subprocess
    import sys

    from conftest import TINY_OVERRIDES

    src = write_msd(tmp_path / "Task03_Liver", cases=5, shape=(12, 64, 64))
    env = {**os.environ, "DATAMINT_LIGHTNING_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    run = lambda *args: subprocess.run(
        [sys.executable, "-m", "datamint_lightning", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    imported = run("projects", "import", "msd", str(src), "--name", "MSD Liver")
    assert imported.returncode == 0, imported.stderr
    trained = run(
        "recipe=liver_seg", "data.project=MSD Liver", "data.labels=[liver]", "packaging.enabled=false", *TINY_OVERRIDES
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Training finished." in trained.stdout
    shown = run("projects", "show", "MSD Liver", "--json")
    splits = json.loads(shown.stdout)["splits"]
    assert splits and sum(c["patients"] for c in next(iter(splits.values())).values()) == 5


@pytest.mark.parametrize("ending", ["/../../outside/secret.nii.gz", "../x.nii.gz", ".nii.gz/../../a", ".mha", 3])
def test_a_file_ending_that_walks_out_of_the_dataset_is_refused(tmp_path, ending):
    """dataset.json is the downloaded file: its file_ending is joined to case names and must stay a suffix."""
    import shutil

    from datamint_lightning.data.importers.msd import import_msd

    src = write_msd(tmp_path / "Task03_Liver", cases=1)
    (tmp_path / "outside").mkdir()
    shutil.copy(src / "imagesTr" / "liver_0_0000.nii.gz", tmp_path / "outside" / "secret.nii.gz")
    description = json.loads((src / "dataset.json").read_text())
    (src / "dataset.json").write_text(json.dumps({**description, "file_ending": ending}))
    store = ProjectStore(tmp_path / "store")
    with pytest.raises(DataError, match=r"file_ending .* is not one of"):
        import_msd(src, "Escaped", store=store)
    assert store.list_projects() == []
