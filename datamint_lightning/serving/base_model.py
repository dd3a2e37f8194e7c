"""``BaseDatamintModel``: an MLflow ``PythonModel`` whose ``predict`` routes by ``params['mode']`` to handlers.

Subclasses implement ``predict_default(inputs, **params)`` and optionally other modes (see ``modes.py``);
``predict`` itself decodes the inputs, validates the mode and its params, calls the handler and makes the
answer JSON-friendly. It must not be overridden.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import mlflow.pyfunc

from datamint_lightning.errors import DataError, InputTooLarge, PredictionError
from datamint_lightning.serving.enums import PredictionMode, TaskType
from datamint_lightning.serving.modes import ModeHandler, ModeNotApplicable, discover_handlers, handler_params

DEVICE_ENV = "MLFLOW_DEFAULT_PREDICTION_DEVICE"
ROUTER_PARAMS = ("mode", "mask_format")  # consumed by ``predict`` itself, never by handlers
log = logging.getLogger(__name__)


def inference_device(explicit: str | None = None) -> str:
    """Explicit argument > ``MLFLOW_DEFAULT_PREDICTION_DEVICE`` > CUDA when available > CPU."""
    if explicit:
        return str(explicit)
    if os.environ.get(DEVICE_ENV):
        return os.environ[DEVICE_ENV]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class BaseDatamintModel(mlflow.pyfunc.PythonModel):
    """Routes ``predict`` to mode handlers. ``default`` goes to the ``image`` handler when every input is an
    image and to ``volume`` when every input is a volume (when the model has them), else to ``predict_default``.
    """

    task_type: ClassVar[TaskType | str] = ""
    # Inputs are free-form on purpose (paths, arrays, request dicts): there is no type hint for MLflow to wrap
    # predict with, and this opt-out (MLflow's own, as for ChatModel) avoids its warning about that.
    _skip_type_hint_validation: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "predict" in vars(cls):
            raise TypeError(f"{cls.__name__} overrides predict(); implement predict_default and "
                            "@prediction_mode handlers instead (predict routes by params['mode']).")

    def __init__(self, device: str | None = None):
        self.device = device

    @classmethod
    def mode_handlers(cls) -> dict[str, ModeHandler]:
        return discover_handlers(cls)

    @classmethod
    def get_supported_modes(cls) -> list[str]:
        """Exactly the modes with a handler, in ``PredictionMode`` order."""
        return list(cls.mode_handlers())

    @classmethod
    def declared_params(cls) -> list[str]:
        """Every param some handler of this class accepts (used for the MLflow signature)."""
        names: list[str] = []
        for handler in cls.mode_handlers().values():
            for name in handler.accepted_params(cls) or ():
                if name not in names:
                    names.append(name)
        return names

    def predict_default(self, inputs: list[Any], **params: Any) -> list[list[dict[str, Any]]]:
        raise NotImplementedError(f"{type(self).__name__} must implement predict_default(inputs, **params).")

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        from datamint_lightning.serving.encoding import jsonable, resolve_mask_format
        from datamint_lightning.serving.path_policy import serving_requests
        from datamint_lightning.serving.request_error import InvalidRequest, ServerFailure

        try:
            # MLflow fills params missing from a request with the signature's defaults (None): drop those.
            params = {k: v for k, v in dict(params or {}).items() if v is not None}
            mode = self._requested_mode(params.pop("mode", None))
            mask_format = resolve_mask_format(params.pop("mask_format", None))
            inputs = self.decode_inputs(model_input)
            if mode == PredictionMode.DEFAULT.value:
                mode = self.default_mode(inputs)
            results = self._run(mode, inputs, params)
            if not isinstance(results, list) or len(results) != len(inputs):
                raise RuntimeError(f"{type(self).__name__}.{mode} returned {type(results).__name__} of "
                                   f"{len(results) if isinstance(results, list) else '?'} items for "
                                   f"{len(inputs)} inputs.")
            return jsonable(results, mask_format)
        except InputTooLarge as error:
            raise InvalidRequest(str(error), status=413) from error
        except (PredictionError, DataError) as error:
            raise InvalidRequest(str(error)) from error
        except Exception as error:
            if not serving_requests():
                raise
            # A client must not see a stack trace or server paths (MLflow would send both): log them here.
            log.exception("Prediction failed")
            raise ServerFailure() from error

    def _requested_mode(self, mode: Any) -> str:
        mode = str(getattr(mode, "value", mode) or PredictionMode.DEFAULT.value)
        supported = self.get_supported_modes()
        if mode not in supported:
            kind = str(getattr(self.task_type, "value", self.task_type)) or "model"
            raise PredictionError(f"Prediction mode {mode!r} is not supported by this {kind} model; "
                                  f"supported modes: {supported}.")
        return mode

    def _run(self, mode: str, inputs: list[Any], params: dict[str, Any]) -> list[list[dict[str, Any]]]:
        handlers = self.mode_handlers()
        handler = handlers[mode]
        try:
            return getattr(self, handler.method)(inputs, **handler_params(handler, type(self), params))
        except ModeNotApplicable:
            if not handler.fallback_to_default or mode == PredictionMode.DEFAULT.value:
                raise
            default = handlers[PredictionMode.DEFAULT.value]
            return getattr(self, default.method)(inputs, **handler_params(default, type(self), params))

    def decode_inputs(self, model_input: Any) -> list[Any]:
        """A list of ``ImageInput``/``VolumeInput`` from a list of items or a single item (see ``inputs.py``)."""
        from datamint_lightning.serving.decode import load_input, split_items
        from datamint_lightning.serving.rest import check_request_size

        items = split_items(model_input)
        if not items:
            raise PredictionError("The input is empty; pass a list of file paths, arrays or input dicts.")
        check_request_size(items)  # before decoding any of them
        return [load_input(item, index) for index, item in enumerate(items)]

    def default_mode(self, inputs: list[Any]) -> str:
        from datamint_lightning.serving.inputs import ImageInput, VolumeInput

        modes = self.get_supported_modes()
        if all(isinstance(i, ImageInput) for i in inputs) and PredictionMode.IMAGE.value in modes:
            return PredictionMode.IMAGE.value
        if all(isinstance(i, VolumeInput) for i in inputs) and PredictionMode.VOLUME.value in modes:
            return PredictionMode.VOLUME.value
        return PredictionMode.DEFAULT.value
