"""The SDK's model API: an instance saved without pickle (torch_model as config + weights), linked MLflow models
copied into the package and loaded from there offline, modes merged, and the save-time errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from model_factories import save_tiny_segmentation_model
from user_models import TINY_NET, RefinedSegmentation, TorchSegmenter, Untyped

from datamint_lightning.errors import PackagingError
from datamint_lightning.mlflow import DatamintModel, load_model, save_model
from datamint_lightning.networks import build_network

IMAGE = np.random.default_rng(0).normal(0, 100, (32, 32)).astype(np.float32)


def test_torch_model_is_saved_as_config_and_weights(tmp_path):
    torch.manual_seed(0)
    model = TorchSegmenter(build_network(TINY_NET).eval(), threshold=0.4)
    expected = model.predict([IMAGE])
    save_model(model, tmp_path / "m")  # task_type and supported_modes inferred
    flavor = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())["flavors"]["datamint"]
    assert flavor["task_type"] == "image_segmentation" and flavor["supported_modes"] == ["default"]
    assert not list((tmp_path / "m").rglob("*.pkl"))
    assert (tmp_path / "m" / "artifacts" / "datamint_module_torch_model" / "weights.safetensors").is_file()
    assert (tmp_path / "m" / "code" / "user_models.py").is_file()  # the class's own module travels
    assert "segmentation-models-pytorch==" in (tmp_path / "m" / "requirements.txt").read_text()

    loaded = load_model(str(tmp_path / "m"), device="cpu")
    assert type(loaded) is TorchSegmenter and loaded.threshold == 0.4 and loaded.inference_device == "cpu"
    assert loaded.get_pytorch_model() is not model.get_pytorch_model()
    np.testing.assert_array_equal(loaded.predict([IMAGE])[0][0]["mask"], expected[0][0]["mask"])


def test_modules_the_networks_package_cannot_describe_are_refused(tmp_path):
    # torch's Linear keeps in_features/out_features but not `bias` (a Parameter): the error says what to add
    with pytest.raises(
        PackagingError,
        match=r"TorchSegmenter\._torch_model is a Linear .* argument\(s\) 'bias' .* Add `self\.bias = bias` .*"
        r"datamint_init_args = \{'in_features': \.\.\., 'out_features': \.\.\., 'bias': \.\.\.\}",
    ):
        save_model(TorchSegmenter(torch.nn.Linear(1, 1)), tmp_path / "m")
    model = TorchSegmenter(build_network(TINY_NET))
    model.lookup = object()
    with pytest.raises(PackagingError, match=r"TorchSegmenter\.lookup holds a object"):
        save_model(model, tmp_path / "m2")
    assert not (tmp_path / "m2").exists()


def test_classes_defined_in_main_are_refused_at_save_time(tmp_path):
    notebook_class = type(
        "NotebookModel",
        (DatamintModel,),
        {
            "__module__": "__main__",
            "task_type": "image_segmentation",
            "predict_default": lambda self, model_input, **kwargs: [[] for _ in model_input],
        },
    )
    with pytest.raises(PackagingError, match=r"NotebookModel is defined in __main__ .* Move the class to a module"):
        save_model(notebook_class(), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_task_type_and_supported_modes_are_checked(tmp_path):
    with pytest.raises(PackagingError, match="task_type of Untyped is unset and cannot be inferred"):
        save_model(Untyped(), tmp_path / "a")
    with pytest.raises(PackagingError, match="task_type='segmentation' is not one of"):
        save_model(Untyped(), tmp_path / "b", task_type="segmentation")
    with pytest.raises(PackagingError, match="supported_modes entry 'volume' is not implemented by Untyped"):
        save_model(Untyped(), tmp_path / "c", task_type="image_classification", supported_modes=["default", "volume"])
    save_model(
        Untyped(),
        tmp_path / "d",
        task_type="image_classification",
        supported_modes=["default"],
        extra_pip_requirements=["pyyaml"],
        model_config={"custom": 1},
    )
    mlmodel = yaml.safe_load((tmp_path / "d" / "MLmodel").read_text())
    assert mlmodel["flavors"]["datamint"]["task_type"] == "image_classification"
    assert mlmodel["flavors"]["python_function"]["config"]["custom"] == 1
    assert "pyyaml" in (tmp_path / "d" / "requirements.txt").read_text()


def _linked_models(tmp_path):
    import mlflow.pytorch

    segmenter = tmp_path / "segmenter"
    save_tiny_segmentation_model(segmenter)
    scorer = tmp_path / "scorer"
    torch.manual_seed(0)
    mlflow.pytorch.save_model(
        torch.nn.Linear(1, 1), str(scorer), pip_requirements=["torch"], input_example=np.ones((1, 1), np.float32)
    )
    return segmenter, scorer


def test_linked_models_travel_in_the_package_and_load_offline(tmp_path):
    segmenter, scorer = _linked_models(tmp_path)
    direct = load_model(str(segmenter)).predict([IMAGE])
    model = RefinedSegmentation(
        mlflow_models_uri={"segmenter": str(segmenter)}, mlflow_torch_models_uri={"scorer": str(scorer)}
    )
    save_model(model, tmp_path / "combined")
    flavor = yaml.safe_load((tmp_path / "combined" / "MLmodel").read_text())["flavors"]["datamint"]
    assert flavor["linked_models"] == {"segmenter": str(segmenter), "scorer": str(scorer)}
    # the segmenter's modes join the wrapper's own (default, frame)
    assert flavor["supported_modes"] == ["default", "image", "frame", "slice", "slice_range", "primary_slice", "volume"]
    copies = tmp_path / "combined" / "artifacts" / DatamintModel.LINKED_MODELS_DIR
    assert (copies / "segmenter" / "MLmodel").is_file() and (copies / "scorer" / "MLmodel").is_file()
    shutil.rmtree(segmenter)
    shutil.rmtree(scorer)  # the originals are gone: the package must not need them

    loaded = load_model(str(tmp_path / "combined"), device="cpu")
    assert isinstance(loaded.get_mlflow_torch_models()["scorer"], torch.nn.Module)
    answer = loaded.predict([IMAGE])
    np.testing.assert_array_equal(answer[0][0]["mask"], direct[0][0]["mask"])
    torch.manual_seed(0)
    assert torch.equal(loaded.get_mlflow_torch_models()["scorer"].weight, torch.nn.Linear(1, 1).weight)
    assert loaded.get_supported_modes() == flavor["supported_modes"]
    # a mode only the linked segmenter implements is served by it
    sliced = loaded.predict([np.stack([IMAGE, IMAGE])], params={"mode": "slice", "slice_index": 1})
    assert sliced[0][0]["slice_index"] == 1

    meta = load_model(str(tmp_path / "combined"), device="meta")
    assert next(meta.get_mlflow_torch_models()["scorer"].parameters()).device.type == "meta"
    assert meta.get_mlflow_models()["segmenter"].unwrap_python_model().inference_device == "meta"


def test_unresolvable_links_are_clear_errors(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(PackagingError, match=r"Cannot resolve linked model 'segmenter' at .*missing"):
        save_model(RefinedSegmentation(mlflow_models_uri={"segmenter": missing}), tmp_path / "m")
    segmenter, _scorer = _linked_models(tmp_path)
    save_model(RefinedSegmentation(mlflow_models_uri={"segmenter": str(segmenter)}), tmp_path / "ok")
    shutil.rmtree(tmp_path / "ok" / "artifacts" / DatamintModel.LINKED_MODELS_DIR / "segmenter")
    shutil.rmtree(segmenter)
    with pytest.raises(Exception, match=r"Cannot load linked model 'segmenter' from .*segmenter"):
        load_model(str(tmp_path / "ok"))
