"""Prediction modes: ``@prediction_mode``, ``ModeSpec`` and the ``PredictionRouter`` that dispatches ``predict``.

A handler is a method ``handler(self, inputs, **params)`` registered with ``@prediction_mode(mode, param_keys=...)``
or named ``predict_<mode>`` after a ``PredictionMode`` (its signature's keywords are then its param keys).
Unlike the official SDK, ``param_keys`` really filter: only those params reach the handler, and a keyword without
a default in the handler's signature is a required param of that mode. An unknown mode is an error listing the
supported ones (the SDK silently falls back to ``predict_default``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datamint_lightning.errors import PredictionError, excerpt
from datamint_lightning.serving.enums import PredictionMode

MODE_ATTRIBUTE = "_datamint_prediction_mode"

# MLflow signature types of the params handlers may declare (unknown keys are sent as strings).
PARAM_TYPES: dict[str, str] = {
    "confidence_threshold": "double",
    "threshold": "double",
    "batch_size": "long",
    "slice_index": "long",
    "axis": "long",
    "slice_start": "long",
    "slice_stop": "long",
    "model_name": "string",
    "prompts": "string",
    "log_predictions": "boolean",
    "entropy_map": "boolean",
}

Registry = dict[PredictionMode, tuple[Callable, "ModeSpec"]]


class ModeNotApplicable(PredictionError):
    """Raised by a handler whose mode does not fit the inputs; ``fallback_to_default`` handlers go to default."""


@dataclass(frozen=True)
class ModeSpec:
    """A registered mode: its ``param_keys`` (None: any param, for a ``**kwargs`` handler) and whether a handler
    raising ``ModeNotApplicable`` hands the request to ``predict_default``."""

    mode: PredictionMode
    param_keys: tuple[str, ...] | None = ()
    fallback_to_default: bool = True


def _mode(mode: str | PredictionMode) -> PredictionMode:
    try:
        return PredictionMode(getattr(mode, "value", mode))
    except ValueError:
        raise ValueError(f"{mode!r} is not a PredictionMode; use one of {[m.value for m in PredictionMode]}.") from None


def prediction_mode(
    mode: str | PredictionMode, *, param_keys: tuple[str, ...] | list[str] = (), fallback_to_default: bool = True
) -> Callable:
    """Register the decorated method as the handler of ``mode``; it receives only the params in ``param_keys``.

    With ``fallback_to_default``, a handler that raises ``ModeNotApplicable`` hands the request to
    ``predict_default`` instead of failing.
    """
    spec = ModeSpec(_mode(mode), tuple(param_keys), bool(fallback_to_default))

    def register(method: Callable) -> Callable:
        setattr(method, MODE_ATTRIBUTE, spec)
        return method

    return register


def _keywords(method: Callable) -> list[inspect.Parameter]:
    parameters = list(inspect.signature(method).parameters.values())  # bound: (inputs, **params)
    return parameters[1:]


def _signature_keys(method: Callable) -> tuple[str, ...] | None:
    parameters = _keywords(method)
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters)


def _required(method: Callable) -> list[str]:
    return [
        p.name
        for p in _keywords(method)
        if p.default is inspect.Parameter.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


class PredictionRouter:
    """Mode -> (bound handler, ``ModeSpec``) for one model instance; ``dispatch`` runs a request."""

    def __init__(self, model_instance: Any, base_class: type | None = None):
        self._registry: Registry = self.discover(model_instance, base_class)

    @staticmethod
    def discover(model: Any, base_class: type | None) -> Registry:
        """Decorated methods first, then ``predict_<mode>`` methods not inherited unchanged from ``base_class``;
        ``default`` is always ``predict_default``. Ordered as ``PredictionMode``."""
        found: dict[PredictionMode, tuple[str, ModeSpec]] = {}
        decorated: set[PredictionMode] = set()
        modes = {m.value for m in PredictionMode}
        for klass in reversed(type(model).__mro__):
            for name, value in vars(klass).items():
                spec = getattr(value, MODE_ATTRIBUTE, None)
                if spec is not None:
                    found[spec.mode] = (name, spec)
                    decorated.add(spec.mode)
                elif (
                    name.startswith("predict_")
                    and name[len("predict_") :] in modes
                    and callable(value)
                    and not (base_class is not None and vars(base_class).get(name) is value)
                    and PredictionMode(name[len("predict_") :]) not in decorated
                ):
                    found[PredictionMode(name[len("predict_") :])] = (name, ModeSpec(PredictionMode(name[8:]), None))
        found.setdefault(PredictionMode.DEFAULT, ("predict_default", ModeSpec(PredictionMode.DEFAULT, None)))
        registry: Registry = {}
        for mode in PredictionMode:
            if mode in found:
                name, spec = found[mode]
                method = getattr(model, name)
                if spec.param_keys is None:
                    spec = ModeSpec(mode, _signature_keys(method), spec.fallback_to_default)
                registry[mode] = (method, spec)
        return registry

    def update_registry(self, model_instance: Any, base_class: type | None = None, overwrite: bool = False) -> None:
        """Add the modes of another model (e.g. a linked Datamint model); existing modes win unless ``overwrite``."""
        for mode, entry in self.discover(model_instance, base_class).items():
            if overwrite or mode not in self._registry:
                self._registry[mode] = entry
        self._registry = {m: self._registry[m] for m in PredictionMode if m in self._registry}

    def supported_modes(self) -> list[str]:
        """Exactly the modes with a handler, in ``PredictionMode`` order."""
        return [mode.value for mode in self._registry]

    def accepted_params(self) -> list[str]:
        """Every param some handler names (for the MLflow signature)."""
        names: list[str] = []
        for _, spec in self._registry.values():
            names += [name for name in spec.param_keys or () if name not in names]
        return names

    def resolve_mode(self, mode: Any, inputs: list[Any] | None = None) -> PredictionMode:
        """The requested mode, checked; ``default`` becomes ``image`` (all images) or ``volume`` (all volumes)
        when the model has those handlers."""
        value = str(getattr(mode, "value", mode) or PredictionMode.DEFAULT.value)
        if value not in self.supported_modes():
            raise PredictionError(
                f"Prediction mode {excerpt(value)} is not supported by this model; supported modes: "
                f"{self.supported_modes()}."
            )
        if value != PredictionMode.DEFAULT.value or not inputs:
            return PredictionMode(value)
        from datamint_lightning.serving.inputs import ImageInput, VolumeInput

        for kind, auto in ((ImageInput, PredictionMode.IMAGE), (VolumeInput, PredictionMode.VOLUME)):
            if all(isinstance(i, kind) for i in inputs) and auto in self._registry:
                return auto
        return PredictionMode.DEFAULT

    def _params(self, mode: PredictionMode, params: dict[str, Any]) -> dict[str, Any]:
        method, spec = self._registry[mode]
        selected = (
            dict(params) if spec.param_keys is None else {k: v for k, v in params.items() if k in spec.param_keys}
        )
        missing = [name for name in _required(method) if name not in selected]
        if missing:
            raise PredictionError(
                f"Mode {mode.value!r} needs the param(s) {missing} (accepted params: "
                f"{list(spec.param_keys) if spec.param_keys is not None else 'any'})."
            )
        return selected

    def dispatch(self, model_input: list, params: dict[str, Any]) -> list:
        """Run ``params['mode']`` (default ``default``) on the decoded inputs with that mode's params."""
        params = dict(params)
        mode = self.resolve_mode(params.pop("mode", None), model_input)
        method, spec = self._registry[mode]
        try:
            return method(model_input, **self._params(mode, params))
        except ModeNotApplicable:
            if not spec.fallback_to_default or mode is PredictionMode.DEFAULT:
                raise
            default, _ = self._registry[PredictionMode.DEFAULT]
            return default(model_input, **self._params(PredictionMode.DEFAULT, params))
