"""One preprocessing for every source: the float32 contract, the explicit rule for 8-bit pictures vs native
values, what is stored with the model, mismatch warnings, and percentile/auto models that package and serve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamint_lightning.data.preprocessing import Preprocessing, intensity_for
from datamint_lightning.errors import ConfigError


def mr_slice(seed: int = 0) -> np.ndarray:
    """An uncalibrated MR-like slice: values in the hundreds, a bright blob, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :40]
    image = 300 + 200 * ((yy - 24) ** 2 + (xx - 20) ** 2 < 150) + 400 * ((yy - 18) ** 2 + (xx - 25) ** 2 < 12)
    return (image + rng.normal(0, 15, image.shape)).clip(0).astype(np.float32)


def png_export(image: np.ndarray) -> np.ndarray:
    """What a typical exporter writes: min-max to 0..255, rounded to uint8."""
    low, high = image.min(), image.max()
    return np.round((image - low) / (high - low) * 255).astype(np.uint8)


@pytest.mark.parametrize("intensity", ["ct_window", "percentile"])
@pytest.mark.parametrize("display_8bit", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float64])
def test_output_is_float32_in_unit_range_whatever_comes_in(intensity, display_8bit, dtype):
    preprocessing = Preprocessing(32, intensity)
    raw = (mr_slice() if dtype != np.uint8 else png_export(mr_slice())).astype(dtype)
    for out in (
        preprocessing.normalize(raw, display_8bit),
        preprocessing.normalize(raw[None], display_8bit),
        preprocessing.normalize_volume(np.stack([raw, raw]), display_8bit),
    ):
        assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    tensor = preprocessing.prepare(np.stack([raw, raw]), display_8bit)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (2, 1, 32, 32)


def test_percentile_maps_a_png_export_and_its_native_slice_alike():
    native = mr_slice()
    picture = png_export(native)
    percentile = Preprocessing(48, "percentile")
    assert percentile.pictures == "percentile"
    difference = np.abs(percentile.normalize(native) - percentile.normalize(picture, display_8bit=True))
    assert difference.max() < 0.02  # 8-bit rounding only
    window = Preprocessing(48, "ct_window")  # a CT window knows nothing of an MR export: the kinds disagree
    assert window.pictures == "scale_255"
    assert np.abs(window.normalize(native) - window.normalize(picture, display_8bit=True)).mean() > 0.3


def test_rule_is_stored_with_the_model_and_old_specs_keep_theirs():
    trained = Preprocessing(64, "percentile").with_sources([True, True, False])
    saved = trained.to_dict()
    assert saved["pictures"] == "percentile" and saved["trained_on"] == ["8bit", "native"]
    assert Preprocessing.from_dict(saved) == trained
    legacy = Preprocessing.from_dict(
        {"image_size": 64, "intensity": "percentile", "window_center": 60.0, "window_width": 400.0}
    )
    assert legacy.pictures == "scale_255" and legacy.trained_on == ()  # what models saved before divided by
    three_d = Preprocessing.from_dict({"intensity": "ct_window", "window_center": 40, "window_width": 350})
    assert three_d.image_size is None and three_d.prepare(np.zeros((1, 5, 7))).shape[-2:] == (5, 7)
    with pytest.raises(ConfigError, match="pictures='gamma'"):
        Preprocessing(64, pictures="gamma")
    with pytest.raises(ConfigError, match="trained_on"):
        Preprocessing(64, trained_on=("jpeg",))


def test_mismatch_is_named_only_where_the_kinds_map_differently():
    on_pictures = Preprocessing(64, "ct_window").with_sources([True])
    assert "trained on 8-bit pictures" in on_pictures.mismatch(display_8bit=False)
    assert on_pictures.mismatch(display_8bit=True) is None
    on_ct = Preprocessing(64, "ct_window").with_sources([False])
    assert "this input is an 8-bit picture" in on_ct.mismatch(display_8bit=True)
    for kinds in ([True], [False], [True, False]):
        assert Preprocessing(64, "percentile").with_sources(kinds).mismatch(not kinds[0]) is None
    assert Preprocessing(64, "ct_window").mismatch(True) is None  # unknown training sources: nothing to say


def test_auto_takes_a_window_only_for_native_ct():
    assert intensity_for({"CT"}) == "ct_window"
    assert intensity_for({"CT"}, pictures=True) == "percentile"
    assert intensity_for({"MR"}) == intensity_for({"CT", "MR"}) == intensity_for(set()) == "percentile"


def test_datamodule_records_sources_and_warns_about_windowed_pictures(tmp_path):
    from PIL import Image

    from datamint_lightning.data.datamodule import DatamintDataModule
    from datamint_lightning.data.importers.image_masks import import_image_masks
    from datamint_lightning.data.projects import ProjectStore

    for folder in ("img", "masks"):
        (tmp_path / folder).mkdir()
    for index in range(2):
        Image.fromarray(png_export(mr_slice(index))).save(tmp_path / "img" / f"s{index}.png")
        Image.fromarray(((png_export(mr_slice(index)) > 200) * 255).astype(np.uint8)).save(
            tmp_path / "masks" / f"s{index}.png"
        )
    store = ProjectStore(tmp_path / "store")
    import_image_masks(
        tmp_path / "img", "Pictures", masks=tmp_path / "masks", store=store, modality="CT", labels={"lesion": 1}
    )
    options = {"labels": ["lesion"], "image_size": 32, "store_dir": str(store.root)}
    auto = DatamintDataModule("Pictures", intensity="auto", **options)
    assert auto.preprocessing.intensity == "percentile" and auto.preprocessing.trained_on == ("8bit",)
    window = DatamintDataModule("Pictures", intensity="ct_window", **options)
    with pytest.warns(UserWarning, match="2 of 2 resources .* are 8-bit pictures"):
        assert window.preprocessing.trained_on == ("8bit",)
    with pytest.raises(ConfigError, match="intensity='hu'"):
        DatamintDataModule("Pictures", intensity="hu", **options)


def test_percentile_and_auto_models_package_serve_and_agree(tmp_path):
    """The registration path (log the package, reload it, compare with the network) on an MR project; it used to fail
    with 'expected scalar type Double but found Float'. ``auto`` and ``percentile`` resolve to one preprocessing
    on MR, so packaging it once covers both."""
    import mlflow
    from model_factories import TINY_2D_NETWORK, tiny_2d_network
    from test_datamodule_helpers import make_project

    from datamint_lightning.data.datamodule import DatamintDataModule
    from datamint_lightning.data.projects import ProjectStore
    from datamint_lightning.packaging.flavor import load_model
    from datamint_lightning.packaging.segmentation import log_segmentation_model, network_masks, package_masks
    from datamint_lightning.serving.segmentation import segment_slices

    store = ProjectStore(tmp_path / "store")
    make_project(store, "MR", patients=4, modality="MR")
    options = {
        "labels": ["liver"],
        "image_size": 32,
        "split": {"train": 0.5, "val": 0.25, "test": 0.25},
        "store_dir": str(store.root),
        "cache_dir": str(tmp_path / "cache"),
    }
    datamodule = DatamintDataModule("MR", intensity="auto", **options)
    preprocessing = datamodule.preprocessing
    assert DatamintDataModule("MR", intensity="percentile", **options).preprocessing == preprocessing
    assert preprocessing.intensity == "percentile" and preprocessing.trained_on == ("native",)
    examples = datamodule.raw_examples(2)
    network = tiny_2d_network()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("pack", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        packaged = log_segmentation_model(network, TINY_2D_NETWORK, ["liver"], preprocessing, run.info.run_id, examples)
        model = load_model(packaged.model_uri, device="cpu")
        for expected_masks, actual_masks in zip(
            network_masks(network, preprocessing, ["liver"], examples), package_masks(model, examples)
        ):
            np.testing.assert_array_equal(actual_masks, expected_masks)
    finally:
        mlflow.set_tracking_uri(None)
    answer = model.predict([examples[0]], params={"mode": "image"})[0]
    expected = segment_slices(network, preprocessing, examples[0][None])[0][0]
    np.testing.assert_array_equal(answer[0]["mask"], expected == 1)
    assert "preprocessing_warning" not in answer[0]
    spec = model.preprocessing  # load_model returns the Datamint model itself
    assert spec == preprocessing  # the training rule, stored in model_spec.json
