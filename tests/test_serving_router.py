"""The prediction-mode router, enums, settings, device choice, mask encoding and linked models (no network files)."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException

from datamint_lightning.errors import ConfigError, PredictionError
from datamint_lightning.serving.base_model import BaseDatamintModel, inference_device
from datamint_lightning.serving.datamint_model import DatamintModel
from datamint_lightning.serving.encoding import decode_mask, rle_encode
from datamint_lightning.serving.enums import PredictionMode, TaskType
from datamint_lightning.serving.modes import ModeNotApplicable, ModeSpec, PredictionRouter, prediction_mode
from datamint_lightning.serving.settings import ModelSettings


class EchoModel(BaseDatamintModel):
    """Answers with the handler name and the params it received."""

    task_type = TaskType.IMAGE_CLASSIFICATION

    def predict_default(self, inputs, **params):
        return [[{"handler": "default", "params": params}] for _ in inputs]

    def predict_image(self, inputs, batch_size=None):  # convention-named: its signature is its param keys
        return [[{"handler": "image", "batch_size": batch_size}] for _ in inputs]

    @prediction_mode(PredictionMode.SLICE, param_keys=("slice_index", "axis"), fallback_to_default=False)
    def one_slice(self, inputs, slice_index, axis=0):
        return [[{"handler": "slice", "slice_index": slice_index, "axis": axis}] for _ in inputs]

    @prediction_mode("primary_slice", param_keys=("axis",))
    def primary(self, inputs, axis=0):
        raise ModeNotApplicable("not for these inputs")

    @prediction_mode("frame", param_keys=(), fallback_to_default=False)
    def frame(self, inputs):
        raise ModeNotApplicable("frames need a video")

    def predict_batch(self, inputs):  # not a PredictionMode name: not a mode
        raise AssertionError


def run(model, inputs, **params):
    return model.predict(inputs, params=params)


def test_enums_have_the_sdk_values():
    assert [m.value for m in PredictionMode] == [
        "default",
        "image",
        "frame",
        "frame_range",
        "all_frames",
        "temporal_sequence",
        "slice",
        "slice_range",
        "primary_slice",
        "volume",
        "interactive",
        "few_shot",
    ]
    assert len(TaskType) == 12 and TaskType("volume_segmentation") is TaskType.VOLUME_SEGMENTATION
    assert TaskType.IMAGE_SEGMENTATION == "image_segmentation" and str(PredictionMode.SLICE) == "slice"


def test_supported_modes_are_exact_and_ordered():
    assert EchoModel().get_supported_modes() == ["default", "image", "frame", "slice", "primary_slice"]
    assert BaseDatamintModel().get_supported_modes() == ["default"]  # its predict_* stubs are not modes
    assert EchoModel().router.accepted_params() == ["batch_size", "slice_index", "axis"]


def test_router_api_as_documented():
    model = EchoModel()
    registry = PredictionRouter.discover(model, BaseDatamintModel)
    handler, spec = registry[PredictionMode.SLICE]
    assert handler == model.one_slice and spec == ModeSpec(PredictionMode.SLICE, ("slice_index", "axis"), False)
    assert registry[PredictionMode.IMAGE][1].param_keys == ("batch_size",)  # convention-named: its signature
    router = PredictionRouter(model, BaseDatamintModel)
    assert router.dispatch([np.zeros((2, 2))], {"mode": "slice", "slice_index": 0, "junk": 1}) == [
        [{"handler": "slice", "slice_index": 0, "axis": 0}]
    ]

    class VolumeOnly(BaseDatamintModel):
        def predict_default(self, inputs, **params):
            return [[{"handler": "other default"}] for _ in inputs]

        @prediction_mode(PredictionMode.VOLUME)
        def whole(self, inputs):
            return [[{"handler": "volume of the linked model"}] for _ in inputs]

    router.update_registry(VolumeOnly(), BaseDatamintModel)
    assert router.supported_modes() == ["default", "image", "frame", "slice", "primary_slice", "volume"]
    image, volume = model.decode_inputs([np.zeros((2, 2))]), model.decode_inputs([np.zeros((2, 2, 2))])
    assert router.dispatch(image, {"mode": "default"})[0][0]["handler"] == "image"  # ours kept
    assert router.dispatch(volume, {"mode": "volume"})[0][0]["handler"] == "volume of the linked model"
    assert router.dispatch(volume, {})[0][0]["handler"] == "volume of the linked model"  # default -> volume
    router.update_registry(VolumeOnly(), BaseDatamintModel, overwrite=True)
    assert router.dispatch([np.zeros((2, 2))], {"mode": "default"})[0][0]["handler"] == "other default"


def test_default_mode_routes_images_to_the_image_handler():
    assert run(EchoModel(), [np.zeros((4, 4))], batch_size=2) == [[{"handler": "image", "batch_size": 2}]]
    # volumes: no volume handler, so default (which accepts any param)
    assert run(EchoModel(), [np.zeros((2, 4, 4))], batch_size=2)[0][0] == {
        "handler": "default",
        "params": {"batch_size": 2},
    }


def test_param_keys_filter_params_and_none_means_absent():
    answer = run(EchoModel(), [np.zeros((2, 4, 4))], mode="slice", slice_index=1, batch_size=3, axis=None)
    assert answer == [[{"handler": "slice", "slice_index": 1, "axis": 0}]]


def test_missing_mode_param_is_a_clear_error():
    with pytest.raises(PredictionError, match=r"Mode 'slice' needs the param\(s\) \['slice_index'\]"):
        run(EchoModel(), [np.zeros((2, 4, 4))], mode="slice")


def test_unknown_mode_lists_the_supported_ones():
    with pytest.raises(PredictionError, match=r"'volume' is not supported .* \['default', 'image', 'frame', 'slice'"):
        run(EchoModel(), [np.zeros((2, 4, 4))], mode="volume")


def test_fallback_to_default_only_where_allowed():
    assert run(EchoModel(), [np.zeros((2, 4, 4))], mode="primary_slice", axis=1)[0][0]["handler"] == "default"
    with pytest.raises(PredictionError, match="frames need a video"):
        run(EchoModel(), [np.zeros((2, 4, 4))], mode="frame")


def test_errors_are_mlflow_400s_keeping_their_message():
    with pytest.raises(MlflowException) as caught:
        run(EchoModel(), [np.zeros((2, 4, 4))], mode="bogus")
    assert caught.value.get_http_status_code() == 400
    caught.value.message = "Failed to predict data '<huge>'. Error: ..."  # what the scoring server does
    assert caught.value.message.startswith("Prediction mode 'bogus'")


def test_bad_inputs_name_the_input():
    with pytest.raises(PredictionError, match=r"input\[1\] \(array\) has shape \(1, 2, 3, 4\)"):
        run(EchoModel(), [np.zeros((2, 2)), np.zeros((1, 2, 3, 4))])
    with pytest.raises(PredictionError, match="input is empty"):
        run(EchoModel(), [])
    with pytest.raises(PredictionError, match=r"input\[0\] is a set"):
        run(EchoModel(), [{1}])


def test_predict_cannot_be_overridden():
    with pytest.raises(TypeError, match="overrides predict"):
        type("Bad", (BaseDatamintModel,), {"predict": lambda self, model_input, params=None: []})


def test_decorator_rejects_unknown_modes():
    with pytest.raises(ValueError, match="not a PredictionMode"):
        prediction_mode("segment_everything")


def test_model_settings_round_trip_and_validation():
    settings = ModelSettings.from_dict({"need_gpu": True, "input_size": [16, 32, 32], "threshold": 0.4, "custom": 1})
    assert settings.input_size == (16, 32, 32) and settings.extra == {"custom": 1}
    assert ModelSettings.from_dict(settings.to_dict()) == settings
    assert settings.to_dict()["need_gpu"] is True and "spacing" not in settings.to_dict()
    with pytest.raises(ConfigError, match="threshold=2"):
        ModelSettings(threshold=2)


def test_inference_device_order(monkeypatch):
    monkeypatch.setenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", "meta")
    assert inference_device("cpu") == "cpu"
    assert inference_device() == "meta"
    assert EchoModel().inference_device == "meta"
    monkeypatch.delenv("MLFLOW_DEFAULT_PREDICTION_DEVICE")
    assert inference_device() == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without CUDA")
def test_cuda_without_cuda_falls_back_to_cpu_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cuda:3")
    with caplog.at_level("WARNING"):
        assert inference_device() == "cpu"
        assert inference_device("cuda") == "cpu"
    assert "'cuda:3' was requested but CUDA is not available" in caplog.text


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_rle_round_trip(shape):
    rng = np.random.default_rng(0)
    for mask in (rng.random(shape) > 0.5, np.ones(shape, bool), np.zeros(shape, bool)):
        encoded = rle_encode(mask)
        assert sum(encoded["counts"]) == mask.size
        np.testing.assert_array_equal(decode_mask(encoded), mask.astype(np.uint8))


class TorchModel(DatamintModel):
    task_type = TaskType.IMAGE_SEGMENTATION

    def predict_default(self, inputs, **params):
        return [[{"device": str(next(self.get_pytorch_model().parameters()).device)}] for _ in inputs]


def test_torch_modules_move_to_the_inference_device():
    model = TorchModel(settings={"need_gpu": False}, torch_model=torch.nn.Linear(2, 2))
    model.head = torch.nn.Linear(2, 1)
    context = mlflow.pyfunc.PythonModelContext(artifacts={}, model_config={"device": "meta"})
    model.load_context(context)
    assert model.inference_device == "meta" and isinstance(model.settings, ModelSettings)
    assert model.get_pytorch_model().weight.device.type == "meta" and model.head.weight.device.type == "meta"
    assert model.get_mlflow_models() == {} and model.get_mlflow_torch_models() == {}
    assert DatamintModel.LINKED_MODELS_DIR == "linked_models"


def test_linked_model_names_must_be_uris_and_distinct():
    with pytest.raises(Exception, match="'net' must be an MLflow model URI"):
        TorchModel(mlflow_torch_models_uri={"net": torch.nn.Linear(1, 1)})
    with pytest.raises(Exception, match=r"\['a'\] are in both"):
        TorchModel(mlflow_models_uri={"a": "models:/x/1"}, mlflow_torch_models_uri={"a": "models:/y/1"})
