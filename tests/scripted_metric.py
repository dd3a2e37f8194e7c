"""A callback that logs a scripted validation metric, so tests can choose which epoch is best."""

from __future__ import annotations

import lightning as L


class ScriptedMetric(L.Callback):
    """Logs ``values[epoch]`` as ``name`` at the end of each validation epoch (the last value repeats)."""

    def __init__(self, values: list[float], name: str = "val/scripted"):
        self.values, self.name = list(values), name

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            pl_module.log(self.name, float(self.values[min(trainer.current_epoch, len(self.values) - 1)]))
