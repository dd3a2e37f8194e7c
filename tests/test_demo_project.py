"""The built-in demo: deterministic, realistic CT phantoms with varied livers, stored as a project."""

from __future__ import annotations

import numpy as np
import pytest

from datamint_lightning.data.demo import DEMO_PROJECT_NAME, ensure_demo_project, is_demo_project
from datamint_lightning.data.phantom import LABELS, make_phantom
from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.data.volumes import read_nifti


def test_phantoms_are_deterministic():
    first, second = make_phantom(3, shape=(12, 48, 48)), make_phantom(3, shape=(12, 48, 48))
    assert np.array_equal(first.image, second.image) and np.array_equal(first.label, second.label)


def test_hounsfield_ranges_and_labels_are_realistic():
    phantom = make_phantom(1)
    image, label = phantom.image.astype(float), phantom.label
    assert image.dtype == float and phantom.image.dtype == np.int16
    assert np.median(image[0, :3, :3]) < -900  # air in the corners
    assert 80 < np.median(image[label == LABELS["liver"]]) < 120  # enhanced liver parenchyma
    assert np.median(image[(label == 0) & (image > 300)]) > 400  # bone
    assert set(np.unique(label)) == {0, *LABELS.values()}
    liver_slices = np.flatnonzero((label == LABELS["liver"]).any(axis=(1, 2)))
    assert 0 < len(liver_slices) < label.shape[0]  # the liver spans some, not all, axial slices


def test_livers_vary_between_patients():
    volumes = [(make_phantom(seed, shape=(20, 64, 64)).label == LABELS["liver"]).sum() for seed in range(4)]
    assert len(set(volumes)) == 4
    assert max(volumes) / min(volumes) > 1.1


def test_liver_is_on_the_patients_right(tmp_path):
    label = make_phantom(2, shape=(20, 64, 64)).label
    columns = np.nonzero(label == LABELS["liver"])[2]
    assert columns.mean() < 32  # radiological convention: patient right on the image left


def test_demo_project_round_trips_through_nifti(tmp_path):
    store = ProjectStore(tmp_path)
    project = ensure_demo_project(store, patients=3, shape=(8, 32, 32))
    assert is_demo_project("liver ct demo") and project.name == DEMO_PROJECT_NAME
    assert project.labels == LABELS and len(project.patients) == 3
    resource = project.resources[0]
    image, spacing = read_nifti(project.path(resource.image))
    assert image.shape == (8, 32, 32) and spacing == pytest.approx((5.0, 3.0, 3.0))
    assert np.array_equal(image, make_phantom(1000, shape=(8, 32, 32)).image)
    assert ensure_demo_project(store).id == project.id  # created once, never regenerated over a project
