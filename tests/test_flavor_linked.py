"""Linked models: MLflow models named by URI, loaded at serve time (datamint pyfunc and PyTorch flavors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from datamint_lightning.packaging.flavor import load_model, save_model
from datamint_lightning.serving.datamint_model import DatamintModel
from datamint_lightning.serving.enums import TaskType
from model_factories import save_tiny_segmentation_model


class RefinedSegmentation(DatamintModel):
    """Segments with the linked ``segmenter`` and scales each mask's confidence by the linked ``scorer``."""

    task_type = TaskType.IMAGE_SEGMENTATION

    def predict_default(self, inputs, **params):
        answer = self.linked("segmenter").predict([i.array for i in inputs])
        with torch.inference_mode():
            weight = float(self.linked("scorer")(torch.ones(1, 1, device=self.device)).sigmoid())
        return [[{**a, "confidence": a["confidence"] * weight} for a in annotations] for annotations in answer]


def test_linked_uris_are_loaded_on_the_inference_device(tmp_path):
    import mlflow.pytorch

    segmenter = tmp_path / "segmenter"
    save_tiny_segmentation_model(segmenter)
    scorer = tmp_path / "scorer"
    mlflow.pytorch.save_model(torch.nn.Linear(1, 1), str(scorer), pip_requirements=["torch"],
                              input_example=np.ones((1, 1), np.float32))
    combined = tmp_path / "combined"
    save_model(combined, RefinedSegmentation, artifacts={}, annotation_specs=[],
               linked_models={"segmenter": str(segmenter), "scorer": str(scorer)})
    assert yaml.safe_load((combined / "MLmodel").read_text())["flavors"]["datamint"]["linked_models"] == {
        "segmenter": str(segmenter), "scorer": str(scorer)}

    model = load_model(str(combined), device="cpu")
    image = np.random.default_rng(0).normal(0, 100, (32, 32)).astype(np.float32)
    answer = model.predict([image])
    python_model = model.unwrap_python_model()
    assert isinstance(python_model.linked("scorer"), torch.nn.Module)
    assert python_model.linked("segmenter").unwrap_python_model().device == "cpu"
    direct = load_model(str(segmenter)).predict([image])
    np.testing.assert_array_equal(answer[0][0]["mask"], direct[0][0]["mask"])

    meta = load_model(str(combined), device="meta").unwrap_python_model()
    assert next(meta.linked("scorer").parameters()).device.type == "meta"
    assert meta.linked("segmenter").unwrap_python_model().device == "meta"


def test_modules_must_be_logged_before_they_can_be_saved_as_links(tmp_path):
    with pytest.raises(TypeError, match=r"linked_models\['net'\] must be an MLflow model URI"):
        save_model(tmp_path / "m", RefinedSegmentation, {}, [], linked_models={"net": torch.nn.Linear(1, 1)})


def test_unloadable_link_is_a_clear_error(tmp_path):
    save_model(tmp_path / "m", RefinedSegmentation, {}, [], linked_models={"segmenter": str(tmp_path / "missing")})
    with pytest.raises(Exception, match="Cannot load linked model .*missing"):
        load_model(str(tmp_path / "m"))
