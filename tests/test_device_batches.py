"""Batches made on the training device: the default 2D augmentation batched (the same resampling as MONAI's
``Affine``), a split held on the device and served by index (``data.device_cache``), and their fallbacks."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
from model_factories import TINY_2D_NETWORK, TINY_CLASSIFIER
from test_datamodule_helpers import make_project

from datamint_lightning.data.batch_augment import DEFAULT_2D, BatchAugment2d, affine_theta
from datamint_lightning.data.datamodule import DatamintDataModule
from datamint_lightning.data.device_batches import DeviceBatches
from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.errors import ConfigError


def _label_map(height=48, width=64):
    label = torch.zeros(1, 1, height, width)
    label[0, 0, 10:30, 20:50] = 1
    label[0, 0, 5:12, 5:15] = 2
    return label


@pytest.mark.parametrize(
    "angle, scale, shift",
    [(0.3, (1.1, 0.9), (5.0, -3.0)), (-0.2, (0.95, 1.05), (-8.0, 2.0)), (0.0, (1.0, 1.0), (3.0, 0.0))],
)
def test_the_batched_affine_resamples_exactly_as_monai_affine(angle, scale, shift):
    from monai.transforms import Affine

    label = _label_map()
    expected = Affine(
        rotate_params=angle,
        scale_params=scale,
        translate_params=shift,
        mode="nearest",
        padding_mode="zeros",
        image_only=True,
    )(label[0])[0]
    theta = affine_theta(torch.tensor([angle]), torch.tensor([scale]), torch.tensor([shift]), 48, 64)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 48, 64], align_corners=True)
    ours = torch.nn.functional.grid_sample(label, grid, mode="nearest", align_corners=True)[0, 0]
    assert torch.equal(ours, expected.as_tensor() if hasattr(expected, "as_tensor") else expected)


def test_labels_move_with_their_images_and_identity_parameters_change_nothing():
    label = _label_map().repeat(64, 1, 1, 1).long()
    image = label.float() / 2
    moved = BatchAugment2d(True, seed=1, affine_prob=1.0, intensity_prob=0.0, noise_prob=0.0)(
        {"image": image, "label": label, "patient_index": torch.arange(64)}
    )
    assert moved["label"].dtype == torch.long and moved["patient_index"].equal(torch.arange(64))
    assert not torch.equal(moved["label"], label)  # every item was moved
    # bilinear image and nearest label agree away from the edges of each region
    agree = ((moved["image"] * 2 - moved["label"].float()).abs() < 0.5).float().mean()
    assert agree > 0.97
    still = BatchAugment2d(
        True, seed=1, affine_prob=1.0, rotate=0.0, scale=0.0, translate=0.0, intensity_prob=0.0, noise_prob=0.0
    )({"image": image, "label": label})
    assert torch.equal(still["label"], label)
    assert torch.allclose(still["image"], image, atol=1e-5)


def test_each_random_step_is_drawn_per_item_with_its_probability():
    count = 4000
    image = torch.ones(count, 1, 8, 8)
    out = BatchAugment2d(False, seed=3, affine_prob=0.0, noise_prob=0.0)({"image": image, "label": torch.arange(count)})
    factors = out["image"][:, 0, 0, 0]
    scaled = (factors - 1).abs() > 1e-6
    assert abs(scaled.float().mean().item() - DEFAULT_2D["intensity_prob"]) < 0.03
    assert factors.min() >= 1 - DEFAULT_2D["intensity_factor"] - 1e-6
    assert factors.max() <= 1 + DEFAULT_2D["intensity_factor"] + 1e-6
    assert out["label"].equal(torch.arange(count))  # classification targets are never touched
    noisy = BatchAugment2d(False, seed=3, affine_prob=0.0, intensity_prob=0.0)({"image": image, "label": None})
    touched = (noisy["image"] - 1).abs().flatten(1).amax(1) > 0
    assert abs(touched.float().mean().item() - DEFAULT_2D["noise_prob"]) < 0.03
    moved = BatchAugment2d(True, seed=3)(
        {"image": torch.rand(count, 1, 16, 16), "label": torch.ones(count, 1, 16, 16, dtype=torch.long)}
    )
    affine = (moved["label"] != 1).flatten(1).any(1)  # an affine moves zero padding into most label maps
    assert 0.4 < affine.float().mean().item() <= DEFAULT_2D["affine_prob"] + 0.03
    with pytest.raises(ValueError, match="unknown parameter"):
        BatchAugment2d(True, rotation=1.0)


@pytest.fixture()
def store(tmp_path):
    store = ProjectStore(tmp_path / "store")
    make_project(store, "OnDevice", patients=6, volumes_per_patient=1)
    return store


def _datamodule(store, tmp_path, **options):
    options = {"augment": False, **options}
    return DatamintDataModule(
        "OnDevice",
        labels=["liver"],
        image_size=32,
        batch_size=4,
        seed=5,
        split={"train": 2 / 3, "val": 1 / 3},
        store_dir=str(store.root),
        cache_dir=str(tmp_path / "cache"),
        **options,
    )


def test_device_batches_serve_every_row_once_per_epoch_as_the_loader_would(store, tmp_path):
    dm = _datamodule(store, tmp_path)
    dm.setup()
    dataset = dm.datasets["train"]
    epoch = {"n": 0}
    batches = DeviceBatches(dataset, 4, "cpu", shuffle=True, seed=5, epoch=lambda: epoch["n"])
    seen = list(batches)
    assert len(seen) == len(batches) == -(-len(dataset) // 4)
    order = [int(i) for b in seen for i in b["slice_index"]]  # slice_index + resource_id name a row
    rows = [(r, int(s)) for b in seen for r, s in zip(b["resource_id"], b["slice_index"])]
    assert sorted(rows) == sorted((m["resource_id"], m["slice_index"]) for m in dataset.metadata)
    by_key = {(m["resource_id"], m["slice_index"]): i for i, m in enumerate(dataset.metadata)}
    first = seen[0]
    for position, key in enumerate(zip(first["resource_id"], first["slice_index"].tolist())):
        item = dataset[by_key[key]]  # what the DataLoader collates for that row
        assert torch.equal(first["image"][position], item["image"])
        assert torch.equal(first["label"][position], item["label"])
        assert first["patient_index"][position] == item["patient_index"]
    assert first["image"].dtype == torch.float32 and first["label"].dtype == torch.long
    epoch["n"] = 1
    assert [int(i) for b in batches for i in b["slice_index"]] != order  # a new permutation each epoch
    ranks = [DeviceBatches(dataset, 4, "cpu", shuffle=True, seed=5, rank=r, world_size=2) for r in (0, 1)]
    shares = [[(r, int(s)) for b in part for r, s in zip(b["resource_id"], b["slice_index"])] for part in ranks]
    assert len(ranks[0]) == len(ranks[1])
    assert set(shares[0]) | set(shares[1]) == set(rows)


class _Batches(L.Callback):
    def __init__(self):
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append({k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)})

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch["image"].clone())


def _fit(dm, callback, max_epochs=1):
    from datamint_lightning.training.segmentation_module import SegmentationModule

    network = {k: v for k, v in TINY_2D_NETWORK.items() if k not in ("classes", "in_channels")}
    module = SegmentationModule(network, ["liver"])
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[callback],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    return trainer


def test_a_split_cached_on_the_device_trains_with_the_augmentation_batched_there(store, tmp_path):
    dm = _datamodule(store, tmp_path, augment=True, device_cache=True)
    seen = _Batches()
    trainer = _fit(dm, seen)
    assert isinstance(trainer.train_dataloader, DeviceBatches) and isinstance(trainer.val_dataloaders, DeviceBatches)
    assert dm._batch_augment is not None
    rows = dm.datasets["train"]
    raw = {
        (int(p), int(s))
        for p, s in zip(*(np.array([m[k] for m in rows.metadata]) for k in ("patient_index", "slice_index")))
    }
    assert len(seen.train) == len(trainer.train_dataloader) and raw
    # augmented on the device: most training images differ from every cached row; validation images do not
    cached = torch.stack([rows[i]["image"] for i in range(len(rows))])
    train_images = torch.cat([b["image"] for b in seen.train])
    same = [(cached == image).flatten(1).all(1).any().item() for image in train_images]
    assert sum(same) < len(same) * 0.8
    val_cached = torch.stack([dm.datasets["val"][i]["image"] for i in range(len(dm.datasets["val"]))])
    assert torch.equal(torch.cat(seen.val), val_cached)


def test_the_loader_path_augments_on_the_device_when_asked_and_per_item_otherwise(store, tmp_path):
    dm = _datamodule(store, tmp_path, augment=True, augment_on_device=True, device_cache=False)
    trainer = _fit(dm, _Batches())
    assert isinstance(trainer.train_dataloader, torch.utils.data.DataLoader)
    assert trainer.train_dataloader.dataset.transform is None and dm._batch_augment is not None
    assert dm.datasets["train"].transform is not None  # the dataset itself keeps its per-item transforms
    per_item = _datamodule(store, tmp_path, augment=True, augment_on_device=False)
    trainer = _fit(per_item, _Batches())
    assert trainer.train_dataloader.dataset.transform is not None and per_item._batch_augment is None


def test_a_cache_that_does_not_fit_falls_back_with_one_warning_naming_the_option(store, tmp_path):
    dm = _datamodule(store, tmp_path, device_cache=True, device_cache_fraction=1e-12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _fit(dm, _Batches())
    notes = [str(w.message) for w in caught if "data.device_cache" in str(w.message)]
    assert len(notes) == 2 and all("streamed from the on-disk cache" in n for n in notes)  # train, val
    assert isinstance(trainer.train_dataloader, torch.utils.data.DataLoader)


def test_contradicting_device_options_fail_before_anything_runs(store, tmp_path):
    with pytest.raises(ConfigError, match="data.device_cache=true .* data.augment_on_device"):
        _datamodule(store, tmp_path, device_cache=True, augment_on_device=False)
    with pytest.raises(ConfigError, match="data.device_cache='gpu' must be auto, true or false"):
        _datamodule(store, tmp_path, device_cache="gpu")
    with pytest.raises(ConfigError, match="device_cache_fraction"):
        _datamodule(store, tmp_path, device_cache_fraction=0)


def test_a_loader_taken_without_a_trainer_keeps_its_augmentation(store, tmp_path):
    """A user's own loop never calls Lightning's on_after_batch_transfer: the loader must augment per item."""
    dm = _datamodule(store, tmp_path, augment=True, augment_on_device=True)
    dm.setup()
    loader = dm.train_dataloader()
    assert dm._batch_augment is None and loader.dataset.transform is not None


@pytest.mark.parametrize(
    "task, categories",
    [("classification", [("tumor",), ("normal",)]), ("multilabel_classification", [("edema", "tumor"), ("normal",)])],
)
def test_classification_batches_keep_their_targets_on_the_device(tmp_path, task, categories):
    """Class indices and multi-hot vectors pass through the device cache and the batched augmentation untouched,
    while the images are augmented."""
    from datamint_lightning.training.classification_module import ClassificationModule

    store = ProjectStore(tmp_path / "store")
    make_project(store, "Classes", patients=6, kind="image", task=task, categories=categories)
    dm = DatamintDataModule(
        "Classes",
        image_size=32,
        batch_size=4,
        seed=5,
        split={"train": 2 / 3, "val": 1 / 3},
        store_dir=str(store.root),
        cache_dir=str(tmp_path / "cache"),
        device_cache=True,
    )
    dm.setup()
    seen = _Batches()
    module = ClassificationModule(TINY_CLASSIFIER, dm.labels, multilabel=task.startswith("multilabel"))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[seen],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    assert isinstance(trainer.train_dataloader, DeviceBatches)
    rows = dm.datasets["train"]
    changed = 0
    for batch in seen.train:
        for position, index in enumerate(batch["patient_index"].tolist()):
            row = next(rows[i] for i in range(len(rows)) if rows.metadata[i]["patient_index"] == index)
            assert torch.equal(batch["label"][position], row["label"])
            changed += not torch.equal(batch["image"][position], row["image"])
    assert changed  # the images were augmented
    assert batch["label"].dtype == (torch.float32 if task.startswith("multilabel") else torch.long)
