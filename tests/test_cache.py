"""The preprocessing cache: hits on unchanged inputs, misses on a changed file or config, atomic and self-healing."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_datamodule_helpers import make_project

from datamint_lightning.data.cache import ArrayCache, cache_key
from datamint_lightning.data.phantom import make_phantom
from datamint_lightning.data.preprocessing import Preprocessing
from datamint_lightning.data.projects import ProjectStore
from datamint_lightning.data.slices import extract_slices, label_lookup
from datamint_lightning.data.volume_items import prepare_volume
from datamint_lightning.data.volumes import nifti_bytes


@pytest.fixture()
def project(tmp_path):
    return make_project(ProjectStore(tmp_path / "store"), "Cached", patients=2)


def slices(project, cache_dir, preprocessing=Preprocessing(32)):
    lookup = label_lookup(project, ["liver"])
    return extract_slices(project, project.resources[0], lookup, preprocessing, 0.5, 0, cache_dir)


def test_warm_call_reads_the_cache(project, tmp_path):
    cold = slices(project, tmp_path / "c")
    [entry] = [p / "images.npy" for p in (tmp_path / "c" / "slices").iterdir()]
    stamp = entry.stat().st_mtime_ns
    warm = slices(project, tmp_path / "c")
    assert entry.stat().st_mtime_ns == stamp and len(list((tmp_path / "c" / "slices").iterdir())) == 1
    np.testing.assert_array_equal(cold.images, warm.images)
    np.testing.assert_array_equal(cold.labels, warm.labels)


def test_changed_config_or_file_is_never_stale(project, tmp_path):
    first = slices(project, tmp_path / "c")
    windowed = slices(project, tmp_path / "c", Preprocessing(32, window_center=0.0, window_width=100.0))
    assert not np.array_equal(first.images, windowed.images)
    assert len(list((tmp_path / "c" / "slices").iterdir())) == 2
    other = make_phantom(seed=999, shape=(8, 32, 32))  # the same path, new content
    project.path(project.resources[0].image).write_bytes(nifti_bytes(other.image, other.spacing))
    project.path(project.resources[0].label).write_bytes(nifti_bytes(other.label, other.spacing))
    changed = slices(project, tmp_path / "c")
    assert len(list((tmp_path / "c" / "slices").iterdir())) == 3
    fresh = slices(project, tmp_path / "fresh")
    np.testing.assert_array_equal(changed.images, fresh.images)


def test_volume_cache_key_includes_spacing(project, tmp_path):
    lookup = label_lookup(project, ["liver"])
    native = prepare_volume(project, project.resources[0], lookup, Preprocessing(32), None, tmp_path / "v")
    coarse = prepare_volume(project, project.resources[0], lookup, Preprocessing(32), (10.0, 6.0, 6.0), tmp_path / "v")
    assert native != coarse
    assert prepare_volume(project, project.resources[0], lookup, Preprocessing(64), None, tmp_path / "v") == native


def test_concurrent_writers_and_damaged_entries(tmp_path):
    cache = ArrayCache(tmp_path)
    key = cache_key(anything=1)
    arrays = {"images": np.arange(200_000, dtype=np.float32)}
    threads = [threading.Thread(target=cache.put, args=(key, arrays)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_array_equal(cache.get(key)["images"], arrays["images"])
    assert [p.name for p in cache.root.iterdir()] == [f"{key}.npz"]
    cache.path(key).write_bytes(cache.path(key).read_bytes()[:100])  # a torn file from a crash elsewhere
    assert cache.get(key) is None
