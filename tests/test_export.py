"""``export``: each packaged model kind as ONNX and TorchScript, checked against the package on held-out inputs
(largest probability difference <= 1e-4) by running the package's own inference code with each network; a failing
check writes nothing; log=true attaches the files to the registered version."""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_factories import save_tiny_classification_model, save_tiny_segmentation_model, save_tiny_volume_model

from datamint_lightning.errors import ConfigError, PackagingError
from datamint_lightning.export.exporter import ExportedNetwork, export_model, held_out_inputs, probabilities

SAVERS = {
    "seg2d": lambda path: save_tiny_segmentation_model(path, labels=("liver", "spleen")),
    "seg3d": save_tiny_volume_model,
    "cls": lambda path: save_tiny_classification_model(path, labels=("normal", "tumour")),
}
KINDS = {"seg2d": "image_segmentation", "seg3d": "volume_segmentation", "cls": "classification"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    for name, save in SAVERS.items():
        save(root / name)
    return root


@pytest.mark.parametrize(
    "name, fmt",
    [("seg2d", "onnx"), ("seg2d", "torchscript"), ("cls", "onnx"), ("cls", "torchscript"), ("seg3d", "torchscript")],
)
def test_exported_networks_match_the_package(models, tmp_path, name, fmt):
    from datamint_lightning.packaging.flavor import load_model

    output = tmp_path / f"{name}.{fmt}"
    report = export_model(str(models / name), fmt, output)
    assert report.max_difference <= 1e-4 and output.is_file()
    spec = json.loads((tmp_path / f"{name}.{fmt}.json").read_text())
    assert spec["verification"]["max_abs_probability_difference"] == report.max_difference
    assert spec["labels"] and spec["input"]["shape"][0] == "batch" and spec["preprocessing"]["intensity"]
    # independently of export_model: reload the written file and compare on inputs of a different seed
    package = load_model(str(models / name), device="cpu")
    kind = KINDS[name]
    inputs = [(volume[::-1].copy(), spacing) for volume, spacing in held_out_inputs(kind, 2)]
    exported = probabilities(package, kind, ExportedNetwork(output, fmt), inputs)
    reference = probabilities(package, kind, package.network, inputs)
    assert max(float(np.abs(a - b).max()) for a, b in zip(exported, reference)) <= 1e-4
    assert spec["preprocessing"].get("spacing") == ([2.0, 1.0, 1.0] if name == "seg3d" else None)


def test_an_export_beyond_the_tolerance_writes_nothing(models, tmp_path):
    with pytest.raises(PackagingError, match=r"differs from the packaged model by up to .* nothing was written"):
        export_model(str(models / "seg2d"), "onnx", tmp_path / "m.onnx", tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_bad_export_commands(models, tmp_path):
    with pytest.raises(ConfigError, match="format='tflite' is not one of onnx, torchscript"):
        export_model(str(models / "seg2d"), "tflite", tmp_path / "m")
    with pytest.raises(ConfigError, match="log=true attaches the export to a registered version"):
        export_model(str(models / "seg2d"), "onnx", tmp_path / "m.onnx", log=True)
    assert list(tmp_path.iterdir()) == []


def test_log_attaches_the_export_to_the_registered_version(tmp_path):
    from mlflow import MlflowClient
    from model_factories import TINY_CLASSIFIER, tiny_classifier
    from serving_helpers import tracking_store

    from datamint_lightning.data.preprocessing import Preprocessing
    from datamint_lightning.packaging.classification import log_classification

    with tracking_store(tmp_path) as uri:
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("export"))
        labels = ["normal", "tumour"]
        network = tiny_classifier(2).eval()
        log_classification(
            network, TINY_CLASSIFIER, labels, Preprocessing(image_size=32), run.info.run_id, registered_model_name="E"
        )
        report = export_model("models:/E/1", "onnx", tmp_path / "cls.onnx", log=True)
        version = client.get_model_version("E", "1")
    assert version.tags["datamint.export.onnx"] == report.logged
    if version.model_id:  # the version's LoggedModel holds the export beside the package
        assert report.logged == f"models:/{version.model_id}/exports/onnx"
        names = {a.path for a in client.list_logged_model_artifacts(version.model_id, "exports/onnx")}
    else:  # a version registered from a run's artifacts: the run holds it
        assert report.logged == f"runs:/{version.run_id}/exports/onnx"
        names = {a.path for a in client.list_artifacts(version.run_id, "exports/onnx")}
    assert names == {"exports/onnx/cls.onnx", "exports/onnx/cls.onnx.json"}
    assert float(version.tags["datamint.export.onnx.max_diff"]) <= 1e-4
