"""The built-in brain tumour demo: deterministic MR-like pictures of varied sizes, imported as class folders and
created on first use by name like the liver demo."""

from __future__ import annotations

import numpy as np

from datamint_lightning.data.brain_demo import BRAIN_DEMO_NAME, ensure_brain_demo_project, make_brain_slice
from datamint_lightning.data.demo import DEMO_PROJECTS, is_demo_project
from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.data.volumes import read_nifti


def test_slices_are_deterministic_and_differ_between_seeds():
    assert np.array_equal(make_brain_slice(3, True), make_brain_slice(3, True))
    assert not np.array_equal(make_brain_slice(3, True), make_brain_slice(4, True))


def test_a_lesion_adds_a_bright_enhancing_rim():
    with_lesion, without = make_brain_slice(11, True), make_brain_slice(11, False)
    assert with_lesion.shape == without.shape and with_lesion.dtype == np.uint8
    changed = np.abs(with_lesion.astype(int) - without.astype(int)) > 60
    assert 20 < changed.sum() < 0.2 * changed.size  # a local mass, not a global change
    assert np.percentile(with_lesion[changed], 90) > 180


def test_demo_is_imported_as_class_folders_of_varied_sizes(tmp_path):
    project = ensure_brain_demo_project(ProjectStore(tmp_path), images=20)
    assert project.name == BRAIN_DEMO_NAME and project.task == "classification"
    assert project.categories == ("no", "yes")
    counts = {c: sum(r.categories == (c,) for r in project.resources) for c in project.categories}
    assert counts == {"no": 8, "yes": 12}
    shapes = {read_nifti(project.path(r.image))[0].shape for r in project.resources}
    assert len(shapes) > 10 and all(64 <= h <= 160 and 64 <= w <= 160 for _, h, w in shapes)
    assert all(r.modality == "MR" and r.metadata["display_8bit"] for r in project.resources)
    assert ensure_brain_demo_project(ProjectStore(tmp_path)).id == project.id  # created once


def test_every_demo_is_created_on_first_use_by_the_datamodule(tmp_path):
    from datamint_lightning.data.datamodule import DatamintDataModule

    assert set(DEMO_PROJECTS) == {"Liver CT Demo", BRAIN_DEMO_NAME}
    assert is_demo_project("brain tumor demo") and is_demo_project("Liver CT Demo") and not is_demo_project("x")
    data = DatamintDataModule("brain tumor demo", image_size=48, store_dir=str(tmp_path), intensity="auto")
    data.setup()
    assert data.labels == ["no", "yes"] and data.task == "classification"
    item = data.datasets["train"][0]
    assert item["image"].shape == (1, 48, 48) and item["label"].ndim == 0  # every size resized to image_size
    assert len(ProjectStore(tmp_path).open(BRAIN_DEMO_NAME).resources) == 120
