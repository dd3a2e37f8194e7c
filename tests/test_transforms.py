"""Per-split transforms from Hydra ``_target_`` lists; deterministic preprocessing identical to the packaged one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_datamodule_helpers import make_project, raw_slice

from datamint_lightning.data import transforms
from datamint_lightning.data.datamodule import DatamintDataModule
from datamint_lightning.data.preprocessing import Preprocessing, intensity_for
from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.errors import ConfigError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = ProjectStore(tmp_path_factory.mktemp("store"))
    make_project(store, "Transforms", patients=3)
    return store


def test_build_from_target_mappings():
    flip = transforms.build(
        [{"_target_": "monai.transforms.RandFlipd", "keys": ["image", "label"], "prob": 1.0, "spatial_axis": 1}]
    )
    image = torch.arange(16.0).reshape(1, 4, 4)
    out = flip({"image": image, "label": image.clone()})
    assert torch.equal(torch.as_tensor(out["image"]), image.flip(-1))
    assert transforms.build(None) is None and transforms.build([]) is None
    with pytest.raises(ConfigError, match="_target_"):
        transforms.build([{"keys": "image"}])


def test_hydra_config_sets_per_split_transforms(store, tmp_path):
    from hydra.utils import instantiate

    from datamint_lightning.config import compose_config

    cfg = compose_config(
        "liver_seg",
        [
            "data.project=Transforms",
            f"data.store_dir={store.root}",
            f"data.cache_dir={tmp_path}",
            "data.image_size=32",
            "data.split={train: 0.34, val: 0.33, test: 0.33}",
            "data.train_transforms=[{_target_: monai.transforms.RandFlipd, keys: [image, label], prob: 1.0, "
            "spatial_axis: 1}]",
        ],
    )
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    train = dm.datasets["train"]
    assert torch.equal(train[0]["image"], torch.from_numpy(train.images[0]).flip(-1)[None])
    assert dm.datasets["val"].transform is None


def test_training_input_matches_the_packaged_preprocessing(store, tmp_path):
    dm = DatamintDataModule(
        "Transforms",
        labels=["liver"],
        image_size=32,
        split={"train": 2 / 3, "val": 1 / 3},
        store_dir=str(store.root),
        cache_dir=str(tmp_path),
        augment=False,
    )
    dm.setup()
    saved = Preprocessing.from_dict(dm.preprocessing.to_dict())  # what the packaged model gets
    meta = dm.datasets["val"].metadata[0]
    expected = saved.prepare(raw_slice(dm.project, meta["resource_id"], meta["slice_index"])[None])[0]
    assert torch.allclose(dm.datasets["val"][0]["image"], expected)


def test_intensity_by_modality():
    assert intensity_for({"CT"}) == "ct_window"
    assert intensity_for({"MR"}) == intensity_for({"CT", "MR"}) == intensity_for(set()) == "percentile"
    volume = np.stack([np.full((4, 4), v, np.float32) for v in (0.0, 100.0, 200.0)])
    normalized = Preprocessing(4, "percentile").normalize_volume(volume)
    assert normalized[0].max() < 0.1 and normalized[2].min() > 0.9  # one scale for the whole volume
