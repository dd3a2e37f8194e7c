"""``BaseDatamintModel``: an MLflow ``PythonModel`` whose ``predict`` routes by ``params['mode']`` to handlers.

Subclasses implement ``predict_default(inputs, **params)`` and optionally other modes (``@prediction_mode`` or
``predict_<mode>``, see ``modes.py``); ``predict(model_input, params=None)`` decodes the inputs, lets the
``PredictionRouter`` pick and call the handler, and makes the answer JSON-friendly. It must not be overridden.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import mlflow.pyfunc

from datamint_lightning.errors import DataError, InputTooLarge, PredictionError
from datamint_lightning.serving.enums import PredictionMode, TaskType
from datamint_lightning.serving.modes import PredictionRouter
from datamint_lightning.serving.settings import ModelSettings

logger = logging.getLogger(__name__)

DEVICE_ENV = "MLFLOW_DEFAULT_PREDICTION_DEVICE"


def inference_device(explicit: str | None = None) -> str:
    """The saved/requested device > ``MLFLOW_DEFAULT_PREDICTION_DEVICE`` > CUDA when available > CPU.

    A CUDA device asked for where CUDA is missing falls back to the CPU with a warning (as the SDK does).
    """
    import torch

    device = str(explicit or os.environ.get(DEVICE_ENV) or "")
    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("Inference device %r was requested but CUDA is not available; using the CPU.", device)
        return "cpu"
    return device


class BaseDatamintModel(mlflow.pyfunc.PythonModel):
    """Routes ``predict`` to mode handlers. ``default`` goes to the ``image`` handler when every input is an
    image and to ``volume`` when every input is a volume (when the model has them), else to ``predict_default``.
    """

    task_type: ClassVar[TaskType | None] = None
    # Inputs are free-form on purpose (paths, arrays, request dicts): there is no type hint for MLflow to wrap
    # predict with, and this opt-out (MLflow's own, as for ChatModel) avoids its warning about that.
    _skip_type_hint_validation: ClassVar[bool] = True
    # Attributes rebuilt at load time, never saved with the package (see packaging/model_state.py).
    transient_attributes: ClassVar[tuple[str, ...]] = ("_router", "_inference_device")
    # Distributions this class needs besides flavor.BASE_REQUIREMENTS (pinned in the package's requirements).
    pip_packages: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "predict" in vars(cls):
            raise TypeError(
                f"{cls.__name__} overrides predict(); implement predict_default and "
                "@prediction_mode handlers instead (predict routes by params['mode'])."
            )

    def __init__(self, settings: ModelSettings | dict[str, Any] | None = None):
        self._settings = ModelSettings.coerce(settings)
        self._inference_device: str | None = None

    @property
    def settings(self) -> ModelSettings:
        return self.__dict__.get("_settings") or ModelSettings()

    @settings.setter
    def settings(self, value: ModelSettings | dict[str, Any] | None) -> None:
        self._settings = ModelSettings.coerce(value)

    @property
    def inference_device(self) -> str:
        """The device set by ``load_context`` (``load_model(device=...)``), else the environment's default."""
        return self.__dict__.get("_inference_device") or inference_device()

    @property
    def router(self) -> PredictionRouter:
        if self.__dict__.get("_router") is None:
            self._router = PredictionRouter(self, BaseDatamintModel)
        return self._router

    def get_supported_modes(self) -> list[str]:
        """Exactly the modes with a handler (linked Datamint models' modes included once loaded)."""
        return self.router.supported_modes()

    def load_context(self, context) -> None:
        """Pick the inference device (``model_config['device']`` > environment > CUDA > CPU), rebuild the saved
        networks and move every torch module this model holds to the device.

        Subclasses that override it call ``super().load_context(context)`` first.
        """
        from datamint_lightning.serving import scoring_guard
        from datamint_lightning.serving.saved_state import restore_modules

        if scoring_guard.in_scoring_server():  # clean answers for what MLflow checks before predict runs
            scoring_guard.install()
        config = dict(getattr(context, "model_config", None) or {})
        self._inference_device = inference_device(config.get("device"))
        if self.settings.need_gpu and not self._inference_device.startswith("cuda"):
            logger.warning(
                "This model was saved with need_gpu=true but runs on %s; expect slow inference.", self._inference_device
            )
        restore_modules(self, dict(getattr(context, "artifacts", None) or {}))
        self.to_device()

    def to_device(self) -> None:
        """Move every ``torch.nn.Module`` attribute to ``inference_device``."""
        import torch

        for name, value in list(vars(self).items()):
            if isinstance(value, torch.nn.Module):
                setattr(self, name, value.to(self.inference_device))

    def predict_default(self, model_input: list[Any], **kwargs: Any) -> list[list[dict[str, Any]]]:
        raise NotImplementedError(f"{type(self).__name__} must implement predict_default(model_input, **kwargs).")

    # The SDK's documented hooks; a subclass that defines one supports that mode (these base stubs do not count).
    def predict_image(self, model_input: list[Any], **kwargs: Any) -> list[list[dict[str, Any]]]:
        raise PredictionError(f"{type(self).__name__} does not implement mode 'image'.")

    def predict_slice(
        self, model_input: list[Any], slice_index: int, axis: Any = 0, **kwargs: Any
    ) -> list[list[dict[str, Any]]]:
        raise PredictionError(f"{type(self).__name__} does not implement mode 'slice'.")

    def predict_volume(self, model_input: list[Any], **kwargs: Any) -> list[list[dict[str, Any]]]:
        raise PredictionError(f"{type(self).__name__} does not implement mode 'volume'.")

    def predict(self, model_input, params=None):  # no type hints: MLflow would try to build a schema from them
        """Main entry point: one list of annotations per input, from the handler of ``params['mode']``."""
        from datamint_lightning.data.limits import request_seconds, time_budget
        from datamint_lightning.serving.encoding import jsonable, resolve_mask_format
        from datamint_lightning.serving.path_policy import serving_requests
        from datamint_lightning.serving.request_error import InvalidRequest, ServerFailure

        try:
            # MLflow fills params missing from a request with the signature's defaults (None): drop those.
            params = {k: v for k, v in dict(params or {}).items() if v is not None}
            mask_format = resolve_mask_format(params.pop("mask_format", None))
            self.router.resolve_mode(params.get("mode"))  # an unknown mode fails before decoding the inputs
            with time_budget(request_seconds(serving_requests())):  # checked between items, batches, windows
                inputs = self.decode_inputs(model_input)
                results = self.router.dispatch(inputs, params)
                if not isinstance(results, list) or len(results) != len(inputs):
                    raise RuntimeError(
                        f"{type(self).__name__} mode {params.get('mode', 'default')!r} returned "
                        f"{type(results).__name__} of "
                        f"{len(results) if isinstance(results, list) else '?'} items for "
                        f"{len(inputs)} inputs."
                    )
                return jsonable(results, mask_format)
        except InputTooLarge as error:
            raise InvalidRequest(str(error), status=413) from error
        except (PredictionError, DataError) as error:
            raise InvalidRequest(str(error)) from error
        except RecursionError:  # a request nested deeper than the decoders recurse
            raise InvalidRequest("The request's inputs are nested too deeply; send flat input items.") from None
        except Exception as error:
            if not serving_requests():
                raise
            # A client must not see a stack trace or server paths (MLflow would send both): log them here.
            logger.exception("Prediction failed")
            raise ServerFailure() from error

    def decode_inputs(self, model_input: Any) -> list[Any]:
        """A list of ``ImageInput``/``VolumeInput`` from a list of items or a single item (see ``inputs.py``)."""
        from datamint_lightning.data.limits import check_time
        from datamint_lightning.serving.decode import load_input, split_items
        from datamint_lightning.serving.rest import check_request_size

        items = split_items(model_input)
        if not items:
            raise PredictionError("The input is empty; pass a list of file paths, arrays or input dicts.")
        check_request_size(items)  # before decoding any of them
        inputs = []
        for index, item in enumerate(items):
            check_time("Decoding the request's inputs")
            inputs.append(load_input(item, index))
        return inputs

    def default_mode(self, inputs: list[Any]) -> str:
        return self.router.resolve_mode(PredictionMode.DEFAULT, inputs).value
