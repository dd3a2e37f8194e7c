"""Datasets through the DataModule on real NIfTI projects: slices per axis, 2D images, classification, 3D patches."""

from __future__ import annotations

import pytest
import torch
from test_datamodule_helpers import SHAPE, make_project

from datamint_lightning.data.datamodule import DatamintDataModule
from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.errors import ConfigError, DataError

SPLIT = {"train": 0.5, "val": 0.25, "test": 0.25}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ProjectStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def volumes(store):
    return make_project(store, "Volumes", patients=4)


def module(store, tmp_path, name, **options):
    options = {
        "labels": ["liver"],
        "image_size": 32,
        "batch_size": 4,
        "split": SPLIT,
        "augment": False,
        "store_dir": str(store.root),
        "cache_dir": str(tmp_path / "cache"),
        **options,
    }
    return DatamintDataModule(name, **options)


def test_slices_along_each_axis_and_empty_fraction(store, volumes, tmp_path):
    dm = module(store, tmp_path, "Volumes", empty_slice_fraction=1.0)
    dm.setup()
    assert sum(len(d) for d in dm.datasets.values()) == 4 * SHAPE[0]
    item = dm.datasets["train"][0]
    assert item["image"].shape == (1, 32, 32) and item["label"].shape == (1, 32, 32)
    assert item["label"].dtype == torch.long and {"resource_id", "patient_id", "slice_index"} <= set(item)
    only_annotated = module(store, tmp_path, "Volumes", empty_slice_fraction=0.0)
    only_annotated.setup()
    train = only_annotated.datasets["train"]
    assert all(train[i]["label"].any() for i in range(len(train)))
    for split in ("val", "test"):  # held-out splits keep every slice: their Dice sees empty-slice false positives
        assert len(only_annotated.datasets[split]) == len(dm.datasets[split])
        assert not all(only_annotated.datasets[split][i]["label"].any() for i in range(len(dm.datasets[split])))
    coronal = module(store, tmp_path, "Volumes", axis=1, empty_slice_fraction=1.0)
    coronal.setup()
    assert sum(len(d) for d in coronal.datasets.values()) == 4 * SHAPE[1]
    batch = next(iter(coronal.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["image"].dtype == torch.float32


def test_slices_of_a_volume_never_cross_splits(store, tmp_path):
    make_project(store, "Two Per Patient", patients=4, volumes_per_patient=2)
    dm = module(store, tmp_path, "Two Per Patient")
    dm.setup()
    owners: dict[str, set[str]] = {}
    for split, dataset in dm.datasets.items():
        for meta in dataset.metadata:
            owners.setdefault(meta["patient_id"], set()).add(split)
            owners.setdefault(meta["resource_id"], set()).add(split)
    assert all(len(splits) == 1 for splits in owners.values())


def test_2d_images_project(store, tmp_path):
    make_project(store, "Images", patients=4, kind="image", modality="MR")
    dm = module(store, tmp_path, "Images", intensity="auto", empty_slice_fraction=1.0)
    assert dm.preprocessing.intensity == "percentile"
    dm.setup()
    assert sum(len(d) for d in dm.datasets.values()) == 4
    assert dm.datasets["train"][0]["image"].shape == (1, 32, 32)
    assert len(dm.raw_examples(2)) >= 1 and dm.raw_examples(1)[0].shape == SHAPE[1:]


def test_multiclass_and_multilabel_targets(store, tmp_path):
    make_project(
        store,
        "Classes",
        patients=4,
        kind="image",
        task="classification",
        with_labels=False,
        categories=[("normal",), ("tumor",)],
    )
    dm = module(store, tmp_path, "Classes", labels=None)
    dm.setup()
    assert dm.labels == ["normal", "tumor"]
    item = dm.datasets["train"][0]
    assert item["label"].dtype == torch.long and item["label"].shape == ()
    assert sum(dm.label_counts["train"].values()) == len(dm.datasets["train"])
    make_project(
        store,
        "Findings",
        patients=4,
        kind="image",
        task="multilabel_classification",
        with_labels=False,
        categories=[("cyst",), ("cyst", "stone"), ()],
    )
    multi = module(store, tmp_path, "Findings", labels=["cyst", "stone"], augment=True)
    multi.setup()
    targets = torch.stack([d[i]["label"] for d in multi.datasets.values() for i in range(len(d))])
    assert targets.dtype == torch.float32 and targets.shape == (4, 2)
    assert sorted(targets.sum(1).tolist()) == [0.0, 1.0, 1.0, 2.0]


def test_volume_dataset_patches(store, volumes, tmp_path):
    dm = module(
        store,
        tmp_path,
        "Volumes",
        dims=3,
        patch_size=[4, 16, 16],
        samples_per_volume=3,
        batch_size=2,
        intensity="auto",
        augment=True,
    )
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (6, 1, 4, 16, 16) and batch["label"].shape == (6, 1, 4, 16, 16)
    assert batch["label"].dtype == torch.long and batch["label"].max() <= 1
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (1, 1, *SHAPE)
    assert dm.label_counts["train"] == {"liver": 2}
    resampled = module(store, tmp_path, "Volumes", dims=3, patch_size=[4, 16, 16], spacing=[10.0, 6.0, 6.0])
    resampled.setup()
    assert resampled.datasets["val"][0]["image"].shape == (1, SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2)


def test_bad_input_errors_name_project_split_label(store, volumes, tmp_path):
    with pytest.raises(DataError, match=r"pancreas.*'Volumes'"):
        module(store, tmp_path, "Volumes", labels=["pancreas"]).open_project()
    with pytest.raises(DataError, match=r"val split of project 'Volumes' is empty"):
        module(store, tmp_path, "Volumes", split={"train": 1.0}).setup()
    store.create("Nothing Here", labels={"liver": 1}, resources=[], files={})
    with pytest.raises(DataError, match="'Nothing Here'.*no resources"):
        module(store, tmp_path, "Nothing Here").setup()
    with pytest.raises(ConfigError, match="patch_size"):
        module(store, tmp_path, "Volumes", dims=3)
    with pytest.raises(ConfigError, match=r"Class\(es\) \['x'\]"):
        make_project(
            store,
            "Cls",
            patients=2,
            kind="image",
            task="classification",
            with_labels=False,
            categories=[("a",), ("b",)],
        )
        module(store, tmp_path, "Cls", labels=["x"]).open_project()
