"""Patient-wise splits: seeded, persisted, pinned, stable when the project grows, safe with concurrent writers."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing

import pytest
from test_datamodule_helpers import make_project

from datamint_lightning.data.projects import ProjectStore, Resource
from datamint_lightning.data.splits import load_or_create_split, resolve_split
from datamint_lightning.errors import ConfigError, DataError

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(
        ProjectStore(tmp_path_factory.mktemp("store")), "Split Study", patients=10, volumes_per_patient=2
    )


def test_fraction_split_is_seeded_grouped_and_persisted(project):
    first = resolve_split(project, FRACTIONS, seed=7)
    assert set(first) == set(project.patients) and set(first.values()) == {"train", "val", "test"}
    assert sorted(first.values()).count("train") == 6
    files = list((project.root / "splits").glob("seed7-*.json"))
    stored = json.loads(files[0].read_text())
    assert stored["patients"] == first and stored["seed"] == 7
    assert resolve_split(project, dict(FRACTIONS), seed=7) == first
    assert resolve_split(project, FRACTIONS, seed=8) != first


def _split_in_process(args):
    project, seed = args
    return load_or_create_split(project, FRACTIONS, seed)


def test_concurrent_writers_agree(project):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_split_in_process, [(project, 99)] * 8)
    assert all(r == results[0] for r in results)
    [path] = (project.root / "splits").glob("seed99-*.json")
    assert json.loads(path.read_text())["patients"] == results[0]
    assert not list((project.root / "splits").glob("*.tmp"))


def test_grown_project_keeps_earlier_assignments(project):
    before = resolve_split(project, FRACTIONS, seed=11)
    extra = tuple(
        Resource(id=f"NEW{i}", patient_id=f"NEW{i}", modality="CT", kind="volume", image=project.resources[0].image)
        for i in range(30)
    )
    grown = dataclasses.replace(project, resources=project.resources + extra)
    after = resolve_split(grown, FRACTIONS, seed=11)
    assert {p: after[p] for p in before} == before
    assert {after[f"NEW{i}"] for i in range(30)} == {"train", "val", "test"}
    assert resolve_split(grown, FRACTIONS, seed=11) == after
    shrunk = dataclasses.replace(project, resources=project.resources[2:])
    assert resolve_split(shrunk, FRACTIONS, seed=11) == {p: before[p] for p in shrunk.patients}


def test_pinned_lists_and_file(project, tmp_path):
    patients = project.patients
    lists = {"train": patients[:6], "val": patients[6:8], "test": patients[8:]}
    pinned = resolve_split(project, lists, seed=0)
    assert [p for p in patients if pinned[p] == "val"] == patients[6:8]
    assert list((project.root / "splits").glob("pinned-*.json"))
    merged = {"train": patients[:8], "val": patients[8:], "test": 0.1}  # Hydra merges lists into the default
    assert [p for p in patients if resolve_split(project, merged, seed=0)[p] == "val"] == patients[8:]
    as_file = tmp_path / "split.json"
    as_file.write_text(json.dumps({"patients": pinned}))
    assert resolve_split(project, str(as_file), seed=123) == pinned
    as_file.write_text(json.dumps(lists))
    assert resolve_split(project, as_file, seed=123) == pinned


@pytest.mark.parametrize(
    "lists, message",
    [
        ({"train": ["P00"], "val": ["P00"]}, "both"),
        ({"train": ["P00", "NOBODY"]}, "NOBODY"),
        ({"train": ["P00"]}, "without a split"),
        ({"holdout": ["P00"]}, "holdout"),
    ],
)
def test_pinned_errors_name_the_problem(project, lists, message):
    with pytest.raises((DataError, ConfigError), match=message):
        resolve_split(project, lists, seed=0)


def test_bad_specs_and_empty_project(project, tmp_path):
    with pytest.raises(ConfigError, match="neither"):
        resolve_split(project, str(tmp_path / "missing.json"), seed=0)
    with pytest.raises(ConfigError, match="non-negative"):
        resolve_split(project, {"train": -1.0, "val": 0.5}, seed=0)
    empty = ProjectStore(tmp_path / "store").create("Empty One", labels={"liver": 1}, resources=[], files={})
    with pytest.raises(DataError, match="Empty One.*no resources"):
        resolve_split(empty, FRACTIONS, seed=0)
