"""The 2D data path streams slices from the cache files: datasets hold no pixels, cache entries are written
atomically, and one process at a time builds a project's cache."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from filelock import FileLock
from test_datamodule_helpers import make_project

from datamint_lightning.data.cache import NpyRows, RowCache, cache_key
from datamint_lightning.data.datamodule import DatamintDataModule
from datamint_lightning.data.projects import ProjectStore


@pytest.fixture()
def store(tmp_path):
    store = ProjectStore(tmp_path / "store")
    make_project(store, "Streamed", patients=6, volumes_per_patient=2)
    return store


def _datamodule(store, tmp_path, **options):
    return DatamintDataModule(
        "Streamed",
        labels=["liver"],
        image_size=32,
        split={"train": 2 / 3, "val": 1 / 3},
        store_dir=str(store.root),
        cache_dir=str(tmp_path / "cache"),
        augment=False,
        **options,
    )


def test_datasets_hold_no_pixels_and_read_the_cached_rows(store, tmp_path):
    dm = _datamodule(store, tmp_path)
    dm.setup()
    train = dm.datasets["train"]
    pixels = len(train) * 32 * 32 * 5  # float32 image + uint8 label per slice
    assert len(pickle.dumps(train)) < pixels / 4  # what each DataLoader worker receives: paths and metadata
    assert all(isinstance(part, NpyRows) for part in train.images.parts)
    folder = tmp_path / "cache" / "slices"
    first = sorted(folder.iterdir())
    assert all((entry / "images.npy").is_file() for entry in first)
    item = train[len(train) - 1]
    assert item["image"].shape == (1, 32, 32) and item["label"].shape == (1, 32, 32)
    assert item["label"].dtype.is_floating_point is False
    # the same rows as a fresh, in-memory extraction
    last = train.images.parts[-1]
    np.testing.assert_array_equal(item["image"][0].numpy(), np.load(last.path)[-1])
    assert dm.label_counts["train"]["liver"] > 0


def test_row_cache_concurrent_writers_and_a_damaged_entry(tmp_path):
    cache = RowCache(tmp_path, "slices")
    key = cache_key(anything=1)
    arrays = {"images": np.arange(60_000, dtype=np.float32).reshape(600, 10, 10)}
    threads = [threading.Thread(target=cache.put, args=(key, arrays)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.name for p in cache.root.iterdir()] == [key]  # no temporary folders left
    rows = NpyRows(cache.path(key) / "images.npy")
    np.testing.assert_array_equal(rows[599], arrays["images"][599])
    with pytest.raises(IndexError):
        rows[600]
    (cache.path(key) / "images.npy").write_bytes(b"\x93NUMPY torn")
    assert cache.get(key) is None and not cache.path(key).exists()  # a miss, rebuilt next time


def test_one_process_builds_a_project_cache_at_a_time(store, tmp_path):
    dm = _datamodule(store, tmp_path)
    lock = FileLock(str(tmp_path / "cache" / f".build-{dm.open_project().id}.lock"))
    (tmp_path / "cache").mkdir(exist_ok=True)
    with lock:
        worker = threading.Thread(target=dm.setup)
        worker.start()
        worker.join(timeout=3)
        assert worker.is_alive() and not dm.datasets  # waits for the holder (another rank building)
    worker.join(timeout=60)
    assert set(dm.datasets) >= {"train", "val"}
