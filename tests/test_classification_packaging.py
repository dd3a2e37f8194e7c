"""Classification packages for the registration gate: a logged multi-label classifier reloads and answers the
in-memory network's scores on pictures and on arrays in modality units; the agreement measure catches drift."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import yaml
from serving_helpers import tracking_store

from datamint_lightning.data.brain_demo import make_brain_slice
from datamint_lightning.data.preprocessing import Preprocessing
from datamint_lightning.packaging.classification import (
    log_classification,
    network_scores,
    package_scores,
    score_agreement,
)

LABELS = ["lesion", "oedema", "vessel"]
CONFIG = {"library": "torchvision", "arch": "resnet18", "in_channels": 1}


def png_item(image: np.ndarray) -> dict:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return {"data": base64.b64encode(buffer.getvalue()).decode(), "mime_type": "image/png"}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    import mlflow
    import torch

    from datamint_lightning.networks import build_network
    from datamint_lightning.packaging.flavor import load_model

    folder = tmp_path_factory.mktemp("cls_package")
    torch.manual_seed(0)
    network = build_network({**CONFIG, "num_classes": len(LABELS)})
    preprocessing = Preprocessing(48, "percentile")
    with tracking_store(folder):
        experiment = mlflow.MlflowClient().create_experiment("cls", artifact_location=(folder / "a").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            info = log_classification(network, CONFIG, LABELS, preprocessing, run.info.run_id, multilabel=True)
        yield network, preprocessing, info, load_model(info.model_uri, device="cpu")


def test_logged_as_multilabel_image_classification(logged):
    import mlflow

    *_, info, _ = logged
    mlmodel = yaml.safe_load(open(f"{mlflow.artifacts.download_artifacts(info.model_uri)}/MLmodel"))
    assert mlmodel["flavors"]["datamint"]["task_type"] == "multilabel_image_classification"
    assert [s["identifier"] for s in mlmodel["flavors"]["datamint"]["annotation_specs"]] == LABELS


def test_package_scores_equal_the_network_on_pictures_and_mr_arrays(logged):
    network, preprocessing, _, model = logged
    examples = [
        png_item(make_brain_slice(1, True)),
        png_item(make_brain_slice(2, False)),
        np.random.default_rng(0).normal(600, 150, (70, 90)).astype(np.float32),
    ]  # MR units, percentile
    expected = network_scores(network, preprocessing, examples, multilabel=True)
    actual = package_scores(model, examples, LABELS)
    assert [e.shape for e in expected] == [(3,)] * 3
    assert score_agreement(expected, actual) == 1.0
    assert not np.allclose(expected[0], expected[2])  # the inputs really differ


def test_agreement_counts_examples_that_drift_or_change_their_answer():
    first, second = np.array([0.7, 0.3]), np.array([0.4, 0.6])
    assert score_agreement([first, second], [first + 5e-5, second]) == 1.0
    assert score_agreement([first, second], [first + 1e-3, second]) == 0.5  # a score drifted
    assert score_agreement([first, second], [second, second]) == 0.5  # the top label changed
    assert score_agreement([first], []) == 0.0
