"""The packaged 3D segmentation model (MONAI U-Net, sliding-window inference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from model_factories import save_tiny_volume_model

from datamint_lightning.errors import PredictionError
from datamint_lightning.packaging.flavor import load_model
from datamint_lightning.serving.settings import ModelSettings


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("seg3d") / "model"
    network = save_tiny_volume_model(path, labels=("liver",))
    return path, network


@pytest.fixture(scope="module")
def model(saved):
    return load_model(str(saved[0]), device="cpu")


def volume(shape=(20, 40, 36), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(50, 100, shape).astype(np.float32)


def test_flavor_and_requirements(saved):
    mlmodel = yaml.safe_load((saved[0] / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["datamint"]
    assert flavor["task_type"] == "volume_segmentation"
    assert flavor["supported_modes"] == ["default", "slice", "volume"]
    assert flavor["model_settings"]["input_size"] == [16, 32, 32]
    assert "monai==" in (saved[0] / "requirements.txt").read_text()


def test_sliding_window_equals_the_in_memory_network(saved, model):
    from monai.inferers import sliding_window_inference

    from datamint_lightning.serving.volume_segmentation import normalize_intensity

    _, network = saved
    data = volume()
    answer = model.predict([data])  # no spacing: no resampling
    settings = ModelSettings.from_dict(
        yaml.safe_load((saved[0] / "MLmodel").read_text())["flavors"]["datamint"]["model_settings"]
    )
    with torch.inference_mode():
        tensor = torch.from_numpy(normalize_intensity(data, settings.intensity))[None, None]
        logits = sliding_window_inference(tensor, (16, 32, 32), 4, network, overlap=0.25, mode="gaussian")
    expected = (torch.as_tensor(logits).argmax(dim=1)[0] == 1).numpy().astype(np.uint8)
    assert answer[0][0]["mask"].shape == data.shape
    np.testing.assert_array_equal(answer[0][0]["mask"], expected)
    assert answer[0][0]["scope"] == "volume"


def test_spacing_resamples_but_answers_on_the_input_grid(model):
    data = volume((10, 30, 30))
    answer = model.predict([{"array": data, "spacing": [4.0, 0.5, 0.5]}])  # trained at (2, 1, 1)
    assert answer[0][0]["mask"].shape == (10, 30, 30) and answer[0][0]["spacing"] == [4.0, 0.5, 0.5]


def test_slice_mode_and_batch_size_do_not_change_the_answer(model):
    data = volume((12, 34, 34), seed=3)
    whole = model.predict([data], params={"batch_size": 1})[0][0]["mask"]
    np.testing.assert_array_equal(model.predict([data], params={"batch_size": 8})[0][0]["mask"], whole)
    one = model.predict([data], params={"mode": "slice", "slice_index": 5})[0][0]
    assert one["slice_index"] == 5
    np.testing.assert_array_equal(one["mask"], whole[5])


@pytest.mark.parametrize(
    "inputs, params, message",
    [
        ([np.zeros((8, 8), np.float32)], {"mode": "volume"}, "takes .Z, H, W. volumes; .* is a 2D image"),
        ([volume((4, 8, 8))], {"mode": "slice", "slice_index": 4}, "slice_index=4 is out of range"),
        ([volume((4, 8, 8))], {"mode": "image"}, r"supported modes: \['default', 'slice', 'volume'\]"),
        ([{"array": volume((4, 8, 8)), "spacing": [0, 1, 1]}], {}, "spacing=.* must be three positive"),
    ],
)
def test_bad_requests(model, inputs, params, message):
    with pytest.raises(PredictionError, match=message):
        model.predict(inputs, params=params)
