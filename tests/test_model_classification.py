"""The packaged 2D classifier (multi-class and multi-label): flavor metadata, modes, correctness, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from model_factories import save_tiny_classification_model

from datamint_lightning.errors import PackagingError, PredictionError
from datamint_lightning.packaging.flavor import load_model

LABELS = ("normal", "nodule", "mass")
TIMM_CONFIG = {"library": "timm", "arch": "test_resnet", "in_channels": 1}  # timm's tiny test network


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("cls") / "model"
    network, preprocessing = save_tiny_classification_model(path, labels=LABELS)
    return path, network, preprocessing


@pytest.fixture(scope="module")
def model(saved):
    return load_model(str(saved[0]), device="cpu")


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    path = tmp_path_factory.mktemp("cls_ml") / "model"
    network, preprocessing = save_tiny_classification_model(path, labels=LABELS, multilabel=True, config=TIMM_CONFIG)
    return path, network, preprocessing, load_model(str(path), device="cpu")


def reference(
    network, preprocessing, image: np.ndarray, display_8bit: bool = False, multilabel: bool = False
) -> np.ndarray:
    """Class probabilities (K,) from the in-memory network, no packaging involved."""
    with torch.inference_mode():
        logits = network(preprocessing.prepare(image[None], display_8bit)).float()[0]
    return (logits.sigmoid() if multilabel else logits.softmax(dim=0)).numpy()


def assert_matches(annotations: list[dict], probs: np.ndarray) -> None:
    """One multi-class annotation: the top label of ``probs`` and every score."""
    assert len(annotations) == 1
    annotation = annotations[0]
    assert annotation["type"] == "category"
    assert annotation["identifier"] == LABELS[int(np.argmax(probs))]
    np.testing.assert_allclose([annotation["scores"][name] for name in LABELS], probs, atol=1e-5)
    assert annotation["confidence"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_mlmodel_has_the_classification_flavor(saved, multilabel):
    path = saved[0]
    flavor = yaml.safe_load((path / "MLmodel").read_text())["flavors"]["datamint"]
    assert flavor["task_type"] == "image_classification"
    assert flavor["supported_modes"] == ["default", "image", "slice", "volume"]
    assert flavor["annotation_specs"] == [
        {"identifier": name, "type": "category", "scope": "image", "required": False} for name in LABELS
    ]
    assert not list(path.rglob("*.pkl"))
    assert "torchvision==" in (path / "requirements.txt").read_text()
    spec = json.loads((path / "artifacts" / "model_spec.json").read_text())
    assert spec["network"]["num_classes"] == 3 and spec["multilabel"] is False
    ml_flavor = yaml.safe_load((multilabel[0] / "MLmodel").read_text())["flavors"]["datamint"]
    assert ml_flavor["task_type"] == "multilabel_image_classification"
    assert "timm==" in (multilabel[0] / "requirements.txt").read_text()


def test_png_array_and_volume_slice_equal_the_in_memory_network(saved, model, tmp_path):
    from PIL import Image

    _, network, preprocessing = saved
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (50, 70)).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "image.png")
    array = rng.normal(40, 120, (48, 56)).astype(np.float32)
    volume = rng.normal(40, 120, (5, 36, 44)).astype(np.float32)

    answer = model.predict([str(tmp_path / "image.png"), array], params={"mode": "image"})
    assert_matches(answer[0], reference(network, preprocessing, picture.astype(np.float32), display_8bit=True))
    assert_matches(answer[1], reference(network, preprocessing, array))
    one = model.predict([volume], params={"mode": "slice", "slice_index": 3, "axis": 2})[0]
    assert_matches(one, reference(network, preprocessing, np.ascontiguousarray(volume[:, :, 3])))
    assert one[0]["slice_index"] == 3 and one[0]["axis"] == 2


def test_volume_mode_classifies_every_slice_and_batch_size_does_not_matter(saved, model):
    _, network, preprocessing = saved
    volume = np.random.default_rng(1).normal(0, 200, (4, 32, 32)).astype(np.float32)
    answer = model.predict([volume], params={"batch_size": 3})[0]  # default mode -> volume
    assert [a["slice_index"] for a in answer] == [0, 1, 2, 3]
    for index, annotations in enumerate(answer):
        assert_matches([annotations], reference(network, preprocessing, volume[index]))
    again = model.predict([volume], params={"mode": "volume", "batch_size": 1})[0]
    assert [a["identifier"] for a in again] == [a["identifier"] for a in answer]


def test_multilabel_thresholding(multilabel):
    _, network, preprocessing, model = multilabel
    image = np.random.default_rng(2).normal(60, 150, (40, 40)).astype(np.float32)
    probs = reference(network, preprocessing, image, multilabel=True)
    # Thresholds between sorted scores, so which labels pass is unambiguous.
    ordered = np.sort(probs)
    for threshold in ((ordered[0] + ordered[1]) / 2, (ordered[1] + ordered[2]) / 2, 1.0):
        answer = model.predict([image], params={"confidence_threshold": float(threshold)})[0]
        assert {a["identifier"] for a in answer} == {LABELS[i] for i in np.flatnonzero(probs >= threshold)}
        for annotation in answer:
            assert annotation["confidence"] == pytest.approx(annotation["scores"][annotation["identifier"]])
            np.testing.assert_allclose([annotation["scores"][n] for n in LABELS], probs, atol=1e-5)
    default = model.predict([image])[0]  # threshold 0.5 unless the request or the saved settings say otherwise
    assert {a["identifier"] for a in default} == {LABELS[i] for i in np.flatnonzero(probs >= 0.5)}


def test_multiclass_threshold_drops_an_unsure_top_label(model):
    image = np.zeros((32, 32), np.float32)
    assert model.predict([image], params={"threshold": 1.0})[0] == []
    assert len(model.predict([image], params={"threshold": 0.0})[0]) == 1


def test_output_is_json_serialisable(model, multilabel):
    inputs = [np.zeros((20, 24), np.float32), np.ones((2, 16, 16), np.float32)]
    for loaded in (model, multilabel[3]):
        answer = loaded.predict(inputs)
        assert json.loads(json.dumps(answer)) == answer


def test_saved_input_example_is_a_valid_request(saved, model):
    example = json.loads((saved[0] / "serving_input_example.json").read_text())
    answer = model.predict(example["inputs"], params=example["params"])
    assert answer[0][0]["identifier"] in LABELS


@pytest.mark.parametrize(
    "inputs, params, message",
    [
        ([np.zeros((1, 2, 8, 8), np.float32)], {}, r"expected \(H, W\) for an image or \(Z, H, W\)"),
        (
            [np.zeros((8, 8), np.float32)],
            {"mode": "teleport"},
            r"supported modes: \['default', 'image', 'slice', 'volume'\]",
        ),
        ([np.zeros((8, 8), np.float32)], {"mode": "volume"}, r"takes \(Z, H, W\) volumes; .* is a 2D image"),
        ([np.zeros((3, 8, 8), np.float32)], {"mode": "image"}, "Mode 'image' takes 2D images"),
        ([np.zeros((3, 8, 8), np.float32)], {"mode": "slice", "slice_index": 3}, "slice_index=3 is out of range"),
        ([np.zeros((3, 8, 8), np.float32)], {"mode": "slice"}, r"needs the param\(s\) \['slice_index'\]"),
        ([np.zeros((8, 8), np.float32)], {"threshold": 2}, r"threshold=2.0 must be within \[0, 1\]"),
    ],
)
def test_bad_requests(model, inputs, params, message):
    with pytest.raises(PredictionError, match=message):
        model.predict(inputs, params=params)


def test_save_refuses_a_config_that_does_not_describe_the_network(tmp_path):
    from model_factories import tiny_classifier

    from datamint_lightning.data.preprocessing import Preprocessing
    from datamint_lightning.packaging.classification import save_classification

    network = tiny_classifier(2, config=TIMM_CONFIG)
    with pytest.raises(PackagingError, match="num_classes=5 but there are 2 labels"):
        save_classification(
            tmp_path / "a", network, {**TIMM_CONFIG, "num_classes": 5}, ["a", "b"], Preprocessing(image_size=32)
        )
    with pytest.raises(PackagingError, match="does not describe the given network"):
        save_classification(
            tmp_path / "b", network, {**TIMM_CONFIG, "in_channels": 3}, ["a", "b"], Preprocessing(image_size=32)
        )
