"""Registering and discovering prediction-mode handlers.

A handler is a method ``handler(self, inputs, **params)`` registered with ``@prediction_mode(mode, param_keys=...)``
or named ``predict_<mode>`` after a ``PredictionMode``. ``param_keys`` are the only params that reach it; a
keyword without a default in its signature is a required param of that mode.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from datamint_lightning.errors import PredictionError
from datamint_lightning.serving.enums import PredictionMode

MODE_ATTRIBUTE = "_datamint_prediction_mode"

# MLflow signature types of the params handlers may declare (unknown keys are sent as strings).
PARAM_TYPES: dict[str, str] = {
    "confidence_threshold": "double", "threshold": "double", "batch_size": "long", "slice_index": "long",
    "axis": "long", "slice_start": "long", "slice_stop": "long", "model_name": "string", "prompts": "string",
    "log_predictions": "boolean",
}


class ModeNotApplicable(PredictionError):
    """Raised by a handler whose mode does not fit the inputs; ``fallback_to_default`` handlers go to default."""


@dataclass(frozen=True)
class ModeHandler:
    mode: str
    method: str
    param_keys: tuple[str, ...] | None  # None: every param the method's signature accepts
    fallback_to_default: bool = True

    def required_params(self, owner: type) -> list[str]:
        signature = inspect.signature(getattr(owner, self.method))
        return [p.name for p in list(signature.parameters.values())[2:]
                if p.default is inspect.Parameter.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def accepted_params(self, owner: type) -> tuple[str, ...] | None:
        if self.param_keys is not None:
            return self.param_keys
        parameters = list(inspect.signature(getattr(owner, self.method)).parameters.values())[2:]
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            return None
        return tuple(p.name for p in parameters)


def _mode_value(mode: str | PredictionMode) -> str:
    try:
        return PredictionMode(mode).value
    except ValueError:
        raise ValueError(f"{mode!r} is not a PredictionMode; use one of {[m.value for m in PredictionMode]}.") from None


def prediction_mode(mode: str | PredictionMode, param_keys: tuple[str, ...] | list[str] = (),
                    fallback_to_default: bool = True) -> Callable:
    """Register the decorated method as the handler of ``mode``; it receives only the params in ``param_keys``.

    With ``fallback_to_default``, a handler that raises ``ModeNotApplicable`` hands the request to
    ``predict_default`` instead of failing.
    """
    spec = (_mode_value(mode), tuple(param_keys), bool(fallback_to_default))

    def register(method: Callable) -> Callable:
        setattr(method, MODE_ATTRIBUTE, spec)
        return method

    return register


def discover_handlers(cls: type) -> dict[str, ModeHandler]:
    """Mode -> handler for ``cls``, subclasses overriding bases; ordered as ``PredictionMode``."""
    modes = {m.value for m in PredictionMode}
    found: dict[str, ModeHandler] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            spec = getattr(value, MODE_ATTRIBUTE, None)
            if spec is not None:
                found[spec[0]] = ModeHandler(spec[0], name, spec[1], spec[2])
            elif name.startswith("predict_") and name[len("predict_"):] in modes and callable(value):
                found[name[len("predict_"):]] = ModeHandler(name[len("predict_"):], name, None)
    return {m.value: found[m.value] for m in PredictionMode if m.value in found}


def handler_params(handler: ModeHandler, owner: type, params: dict[str, Any]) -> dict[str, Any]:
    """The params that reach ``handler``; a clear error names a missing required one."""
    accepted = handler.accepted_params(owner)
    selected = dict(params) if accepted is None else {k: v for k, v in params.items() if k in accepted}
    missing = [name for name in handler.required_params(owner) if name not in selected]
    if missing:
        raise PredictionError(f"Mode {handler.mode!r} needs the param(s) {missing} "
                              f"(accepted params: {list(accepted) if accepted is not None else 'any'}).")
    return selected
