"""A registered 3D model (MONAI U-Net, sliding window) behind ``mlflow models serve``: volumes sent as raw
base64 arrays and as gzipped NIfTI files answer masks on the input's grid, equal to local predictions."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from serving_helpers import post, serve_model, tracking_store

from datamint_lightning.serving.encoding import decode_mask

MODEL_NAME = "serving_test_volume"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real sqlite registry holding a tiny ``DatamintVolumeSegmentationModel`` as ``models:/<name>@champion``."""
    import mlflow
    from mlflow import MlflowClient
    from model_factories import TINY_3D_NETWORK, TINY_3D_SETTINGS, tiny_3d_network

    from datamint_lightning.packaging.flavor import default_pip_requirements, log_model
    from datamint_lightning.packaging.packager import request_example, segmentation_specs
    from datamint_lightning.packaging.volume_segmentation import volume_segmentation_artifacts
    from datamint_lightning.serving.volume_model import DatamintVolumeSegmentationModel

    folder = tmp_path_factory.mktemp("registry_volume")
    with tracking_store(folder) as uri:
        network = tiny_3d_network()
        example = request_example(np.zeros((8, 32, 32), np.float32), {"mode": "volume"}, max_side=32)
        experiment_id = MlflowClient().create_experiment(  # not set_experiment: no global state
            "serving-volume-test", artifact_location=(folder / "artifacts").as_uri()
        )
        with mlflow.start_run(experiment_id=experiment_id) as run:
            artifacts = volume_segmentation_artifacts(folder, network, TINY_3D_NETWORK, ["liver"], TINY_3D_SETTINGS)
            info = log_model(
                DatamintVolumeSegmentationModel,
                artifacts=artifacts,
                annotation_specs=segmentation_specs(["liver"], "volume"),
                model_settings=TINY_3D_SETTINGS,
                pip_requirements=default_pip_requirements(("monai",)),
                run_id=run.info.run_id,
                registered_model_name=MODEL_NAME,
                input_example=example,
            )
        MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", str(info.registered_model_version))
        yield {"uri": uri, "folder": folder, "model_uri": info.model_uri}


@pytest.fixture(scope="module")
def server(registry):
    with serve_model(f"models:/{MODEL_NAME}@champion", registry["uri"], registry["folder"] / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def local(registry):
    from datamint_lightning.packaging.flavor import load_model

    return load_model(registry["model_uri"], device="cpu")


def volume(shape=(12, 40, 36), seed=0) -> np.ndarray:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    blob = ((y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < 80) * 200.0
    return (blob + np.random.default_rng(seed).normal(0, 60, shape) + z).astype(np.int16)


def liver_mask(answer: list[dict]) -> np.ndarray:
    assert [a["identifier"] for a in answer] == ["liver"]
    return decode_mask(answer[0]["mask"])


def test_array_b64_volume_equals_local_prediction(server, local):
    data = volume()
    item = {
        "array_b64": base64.b64encode(data.astype("<i2").tobytes()).decode(),
        "dtype": "int16",
        "shape": list(data.shape),
        "spacing": [3.0, 0.8, 0.8],
    }  # not the model's (2, 1, 1): resampled
    response = post(server, [item], mode="volume")
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]
    assert answer[0]["mask"]["format"] == "rle" and answer[0]["spacing"] == [3.0, 0.8, 0.8]
    mask = liver_mask(answer)
    assert mask.shape == data.shape
    expected = local.predict([{"array": data, "spacing": [3.0, 0.8, 0.8]}])[0][0]["mask"]  # in-process, numpy
    np.testing.assert_array_equal(mask, expected)
    one = post(server, [item], mode="slice", slice_index=4).json()["predictions"][0][0]
    assert one["slice_index"] == 4
    np.testing.assert_array_equal(decode_mask(one["mask"]), expected[4])


def test_gzipped_nifti_volume_equals_local_prediction(server, local, tmp_path):
    import nibabel as nib

    from datamint_lightning.data.volumes import read_nifti

    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(volume((36, 40, 10), seed=1), np.diag([0.9, 0.9, 2.5, 1.0])), str(path))
    display, spacing = read_nifti(path)
    item = {"data": base64.b64encode(path.read_bytes()).decode(), "mime_type": "application/x-nifti"}
    response = post(server, [item])  # default mode: volume
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]
    mask = liver_mask(answer)  # on the file's own (i, j, k) grid, which the answer describes
    assert display.shape == (10, 40, 36) and mask.shape == (36, 40, 10) == tuple(answer[0]["grid"]["shape"])
    assert answer[0]["spacing"] == pytest.approx([0.9, 0.9, 2.5]) == list(spacing)[::-1]
    assert answer[0]["grid"]["orientation"] == "RAS" and answer[0]["grid"]["affine"][2][2] == pytest.approx(2.5)
    np.testing.assert_array_equal(mask, local.predict([str(path)])[0][0]["mask"])


def test_a_2d_image_is_a_400_and_the_server_keeps_serving(server):
    response = post(server, [{"array": [[0.0, 1.0], [2.0, 3.0]]}], mode="volume")
    assert response.status_code == 400 and "takes (Z, H, W) volumes" in response.json()["message"]
    data = volume((4, 16, 16))
    assert post(server, [{"array": data.tolist()}]).status_code == 200
