"""Lineage: splits as mlflow.data Datasets, logged as run inputs; any imported project trains through the recipe."""

from __future__ import annotations

import json

import mlflow
import pytest
from conftest import TINY_OVERRIDES
from test_datamodule_helpers import make_project

from datamint_lightning.data.datamodule import DatamintDataModule
from datamint_lightning.data.lineage import DatamintMLflowDataset, DatamintProjectSource
from datamint_lightning.data.projects import ProjectStore


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    store = ProjectStore(tmp_path_factory.mktemp("store"))
    make_project(store, "Lineage", patients=4)
    dm = DatamintDataModule(
        "Lineage",
        labels=["liver", "kidney"],
        image_size=32,
        augment=False,
        split={"train": 0.5, "val": 0.25, "test": 0.25},
        store_dir=str(store.root),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    dm.setup()
    return dm


def test_datasets_describe_each_split(datamodule):
    described = datamodule.mlflow_datasets()
    assert set(described) == {"train", "val", "test"}
    train = described["train"]
    assert isinstance(train, mlflow.data.dataset.Dataset) and train.name == "Lineage/train"
    assert train.profile["resources"] == 2 and train.profile["items"] == len(datamodule.datasets["train"])
    assert set(train.profile["label_counts"]) == {"liver", "kidney"}
    config = train.to_dict()
    assert json.loads(config["profile"])["label_counts"] == train.profile["label_counts"]
    assert "image" in config["schema"] and config["source_type"] == "datamint_project"
    assert len({d.digest for d in described.values()}) == 3
    assert datamodule.mlflow_datasets()["train"].digest == train.digest  # stable across calls


def test_digest_follows_ids_and_content(datamodule):
    resources = datamodule.split_resources["train"]
    base = DatamintMLflowDataset("pid", "Lineage", "train", resources, content_hashes={r.id: "a" for r in resources})
    same = DatamintMLflowDataset("pid", "Renamed", "val", resources, content_hashes={r.id: "a" for r in resources})
    edited = DatamintMLflowDataset(
        "pid",
        "Lineage",
        "train",
        resources,
        content_hashes={r.id: "b" if i == 0 else "a" for i, r in enumerate(resources)},
    )
    fewer = DatamintMLflowDataset("pid", "Lineage", "train", resources[:1], content_hashes={resources[0].id: "a"})
    assert base.digest == same.digest and len({base.digest, edited.digest, fewer.digest}) == 3


def test_logged_as_run_inputs_and_source_round_trips(datamodule, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run() as run:
        for context, dataset in datamodule.mlflow_datasets().items():
            mlflow.log_input(dataset, context=context)
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    contexts = {i.tags[0].value: i.dataset for i in inputs}
    assert set(contexts) == {"train", "val", "test"}
    source = mlflow.data.get_source(contexts["train"])
    assert isinstance(source, DatamintProjectSource) and source.load().name == "Lineage"
    mlflow.set_tracking_uri(None)


def test_recipe_trains_any_imported_project_and_logs_inputs(tmp_path):
    """Item 8: a project created through ProjectStore.create trains with the liver_seg recipe from Python."""
    from datamint_lightning.training.segmentation_trainer import UNetPPTrainer

    make_project(ProjectStore(), "My Liver CT", patients=4)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    results = UNetPPTrainer(
        project="My Liver CT",
        tracking_uri=uri,
        output_dir=str(tmp_path / "out"),
        overrides=[
            *TINY_OVERRIDES,
            "data.image_size=32",
            "data.split={train: 0.5, val: 0.25, test: 0.25}",
            "packaging.enabled=false",
        ],
    ).fit()
    run = mlflow.MlflowClient(uri).get_run(results["run_id"])
    logged = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(logged) == {"train", "val", "test"} and logged["train"].name == "My Liver CT/train"
    assert run.data.tags["datamint.project_name"] == "My Liver CT"
