"""``BaseDatamintModel``: an MLflow ``PythonModel`` that routes ``predict`` by ``params['mode']``."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import mlflow.pyfunc

from datamint_lightning.errors import PredictionError

DEVICE_ENV = "MLFLOW_DEFAULT_PREDICTION_DEVICE"


def inference_device(explicit: str | None = None) -> str:
    """Explicit argument > ``MLFLOW_DEFAULT_PREDICTION_DEVICE`` > CUDA when available > CPU."""
    if explicit:
        return explicit
    if os.environ.get(DEVICE_ENV):
        return os.environ[DEVICE_ENV]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class BaseDatamintModel(mlflow.pyfunc.PythonModel):
    """Subclasses implement ``predict_<mode>(inputs, params)`` handlers; ``predict`` itself is not overridden.

    ``default`` goes to ``predict_image`` when every input is an image and ``predict_volume`` when every input
    is a volume (when those exist), else to ``predict_default``.
    """

    task_type: ClassVar[str] = ""

    def __init__(self, device: str | None = None):
        self.device = device

    @classmethod
    def get_supported_modes(cls) -> list[str]:
        modes = sorted(name[len("predict_"):] for name in dir(cls)
                       if name.startswith("predict_") and callable(getattr(cls, name))
                       and not hasattr(mlflow.pyfunc.PythonModel, name))  # e.g. predict_stream
        return ["default", *[m for m in modes if m != "default"]] if "default" in modes else modes

    def predict(self, context, model_input: Any, params: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        params = dict(params or {})
        mode = str(params.pop("mode", None) or "default")
        if mode not in self.get_supported_modes():
            raise PredictionError(f"Prediction mode {mode!r} is not supported by this "
                                  f"{self.task_type or 'model'}; supported modes: {self.get_supported_modes()}.")
        inputs = self.decode_inputs(model_input)
        if mode == "default":
            mode = self.default_mode(inputs)
        return getattr(self, f"predict_{mode}")(inputs, params)

    def decode_inputs(self, model_input: Any) -> list[Any]:
        from datamint_lightning.serving.inputs import load_input

        if isinstance(model_input, (list, tuple)):
            items = list(model_input)
        elif getattr(model_input, "dtype", None) == object:  # a 1-D object array of inputs
            items = list(model_input)
        else:  # one path or one array (an (H, W) image or a (Z, H, W) volume)
            items = [model_input]
        if not items:
            raise PredictionError("The input is empty; pass a list of file paths or arrays.")
        return [load_input(item, index) for index, item in enumerate(items)]

    def default_mode(self, inputs: list[Any]) -> str:
        from datamint_lightning.serving.inputs import ImageInput, VolumeInput

        modes = self.get_supported_modes()
        if all(isinstance(i, ImageInput) for i in inputs) and "image" in modes:
            return "image"
        if all(isinstance(i, VolumeInput) for i in inputs) and "volume" in modes:
            return "volume"
        return "default"
