"""``ModelSettings``: what inference needs besides the weights, saved as the flavor's ``model_settings``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from datamint_lightning.errors import ConfigError


def _tuple(value: Any) -> tuple | None:
    return None if value is None else tuple(value)


@dataclass(frozen=True)
class ModelSettings:
    """Inference settings (the official SDK stores only ``need_gpu``; the rest is what this package needs).

    ``input_size``: the network's input grid ((H, W) or (D, H, W)); for 3D models the sliding-window ROI.
    ``spacing``: the (z, y, x) spacing in mm the network was trained at; volumes with known spacing are resampled
    to it and predictions resampled back to the input grid. ``intensity``: the intensity preprocessing
    (e.g. ``{"intensity": "ct_window", "window_center": 60, "window_width": 400}``). ``threshold``: the default
    confidence threshold for masks (None: arg-max). ``extra``: any other key, kept as is.
    """

    need_gpu: bool = False
    batch_size: int = 16
    input_size: tuple[int, ...] | None = None
    spacing: tuple[float, float, float] | None = None
    intensity: dict[str, Any] | None = None
    threshold: float | None = None
    sw_batch_size: int = 4
    overlap: float = 0.25
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", _tuple(self.input_size))
        object.__setattr__(self, "spacing", _tuple(self.spacing))
        if int(self.batch_size) <= 0 or int(self.sw_batch_size) <= 0:
            raise ConfigError(
                f"model_settings batch_size={self.batch_size} and sw_batch_size={self.sw_batch_size} must be positive."
            )
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"model_settings overlap={self.overlap} must be within [0, 1).")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise ConfigError(f"model_settings threshold={self.threshold} must be within [0, 1].")
        if self.input_size is not None and any(int(s) <= 0 for s in self.input_size):
            raise ConfigError(f"model_settings input_size={self.input_size} must hold positive sizes.")

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON/YAML-friendly dict (tuples as lists, ``extra`` merged in, unset values left out)."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "extra"}
        return {**{k: v for k, v in values.items() if v is not None}, **self.extra}

    @classmethod
    def coerce(cls, value: ModelSettings | dict[str, Any] | None) -> ModelSettings:
        """``value`` itself, or the settings a dict (or None) describes."""
        if isinstance(value, cls):
            return value
        if value is None or isinstance(value, dict):
            return cls.from_dict(value)
        raise ConfigError(f"settings must be a ModelSettings or a dict, got {type(value).__name__}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ModelSettings:
        names = {f.name for f in fields(cls)} - {"extra"}
        values = dict(values or {})
        known = {k: values.pop(k) for k in list(values) if k in names}
        return cls(**known, extra={**values.pop("extra", {}), **values})
