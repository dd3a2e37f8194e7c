"""The registered model behind ``mlflow models serve``: JSON requests for images and volumes, and HTTP 400s."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from serving_helpers import post, serve_model, tracking_store

from datamint_lightning.serving.encoding import decode_mask

MODEL_NAME = "serving_test_seg"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real sqlite tracking/registry store holding the packaged 2D model as ``models:/<name>@champion``."""
    import mlflow
    from mlflow import MlflowClient
    from model_factories import TINY_2D_NETWORK, tiny_2d_network

    from datamint_lightning.data.preprocessing import Preprocessing
    from datamint_lightning.packaging.segmentation import log_segmentation_model

    folder = tmp_path_factory.mktemp("registry")
    with tracking_store(folder) as uri:
        network, preprocessing = tiny_2d_network(), Preprocessing(image_size=64)
        examples = [np.random.default_rng(i).normal(40, 80, (48, 56)).astype(np.float32) for i in range(2)]
        experiment_id = MlflowClient().create_experiment(  # not set_experiment: no global state
            "serving-test", artifact_location=(folder / "artifacts").as_uri()
        )
        with mlflow.start_run(experiment_id=experiment_id) as run:
            packaged = log_segmentation_model(
                network,
                TINY_2D_NETWORK,
                ["liver"],
                preprocessing,
                run.info.run_id,
                examples,
                registered_model_name=MODEL_NAME,
            )
        MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", packaged.registered_model_version)
        yield {
            "uri": uri,
            "folder": folder,
            "network": network,
            "preprocessing": preprocessing,
            "model_uri": packaged.model_uri,
        }


@pytest.fixture(scope="module")
def server(registry):
    with serve_model(f"models:/{MODEL_NAME}@champion", registry["uri"], registry["folder"] / "serve.log") as url:
        yield url


def local_masks(registry, inputs, **params):
    from datamint_lightning.packaging.flavor import load_model

    answer = load_model(registry["model_uri"], device="cpu").predict(inputs, params=params)
    return [[np.asarray(a["mask"]) for a in annotations] for annotations in answer]


def png_item(array: np.ndarray) -> dict:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return {"data": base64.b64encode(buffer.getvalue()).decode(), "mime_type": "image/png"}


def test_images_over_rest_equal_local_predictions(registry, server):
    rng = np.random.default_rng(5)
    image = rng.normal(100, 60, (48, 56))
    items = [png_item(image), {"array": image.tolist()}]
    response = post(server, items, mode="image")
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [a["identifier"] for a in predictions[0]] == ["liver"]
    assert predictions[0][0]["mask"]["format"] == "rle"
    expected = local_masks(registry, items)
    for answer, masks in zip(predictions, expected):
        np.testing.assert_array_equal(decode_mask(answer[0]["mask"]), masks[0])


def test_volume_over_rest_with_slice_params(registry, server):
    volume = np.random.default_rng(6).normal(40, 90, (5, 32, 40)).astype(np.float32)
    item = {
        "array_b64": base64.b64encode(volume.astype("<f4").tobytes()).decode(),
        "dtype": "float32",
        "shape": list(volume.shape),
        "spacing": [3.0, 0.7, 0.7],
    }
    response = post(server, [item], mode="slice", slice_index=2, axis=1, threshold=0.3)
    assert response.status_code == 200, response.text
    annotation = response.json()["predictions"][0][0]
    assert annotation["slice_index"] == 2 and annotation["axis"] == 1
    expected = local_masks(registry, [volume], mode="slice", slice_index=2, axis=1, threshold=0.3)
    np.testing.assert_array_equal(decode_mask(annotation["mask"]), expected[0][0])
    whole = post(server, [item], mode="volume").json()["predictions"][0][0]
    assert decode_mask(whole["mask"]).shape == volume.shape


@pytest.mark.parametrize(
    "inputs, params, message",
    [
        ([{"data": base64.b64encode(b"garbage").decode(), "mime_type": "image/png"}], {}, "Cannot read image file"),
        ([{"array": [[[[1.0]]]]}], {}, "expected (H, W) for an image or (Z, H, W)"),
        ([{"array": [[1.0, 2.0], [3.0, 4.0]]}], {"mode": "teleport"}, "supported modes: ['default', 'image'"),
        (
            [{"array": np.zeros((3, 8, 8)).tolist()}],
            {"mode": "slice", "slice_index": 3},
            "slice_index=3 is out of range",
        ),
        ([{"array": np.zeros((3, 8, 8)).tolist()}], {"mode": "slice"}, "needs the param(s) ['slice_index']"),
    ],
)
def test_bad_requests_are_400_and_the_server_keeps_serving(server, inputs, params, message):
    response = post(server, inputs, **params)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert len(response.text) < 2000  # the request is not echoed back
    assert post(server, [{"array": [[0.0, 1.0], [2.0, 3.0]]}]).status_code == 200
