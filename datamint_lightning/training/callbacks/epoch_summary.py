"""``EpochSummary``: one plain line per epoch (epoch, mean train loss, validation metrics, time) for people and
log files, where a progress bar becomes hundreds of carriage-return fragments."""

from __future__ import annotations

import logging
import math
import time

import lightning as L

log = logging.getLogger("datamint_lightning")


def _number(value) -> float | None:
    try:
        value = float(value.detach().float().mean()) if hasattr(value, "detach") else float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class EpochSummary(L.Callback):
    """``epoch 3/50  train/loss 0.4123  val/dice 0.8712  val/loss 0.2210  12.4 s  *best*`` on rank zero.

    The train loss is the mean of the epoch's step losses (the module logs it per step); ``metrics_prefix`` picks
    the validation metrics shown (all of them, sorted, so per-label Dice appears too)."""

    def __init__(self, metrics_prefix: str = "val/"):
        self.metrics_prefix = metrics_prefix
        self._losses: list[float] = []
        self._started = 0.0
        self._best: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._losses, self._started = [], time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if (value := _number(loss)) is not None:
            self._losses.append(value)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Validation of this epoch has already run (Lightning validates inside the training epoch).
        if trainer.is_global_zero and not trainer.sanity_checking:
            log.info(self.line(trainer))

    def line(self, trainer) -> str:
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"epoch {trainer.current_epoch + 1}{total}"]
        if self._losses:
            parts.append(f"train/loss {sum(self._losses) / len(self._losses):.4f}")
        metrics = trainer.callback_metrics
        for name in sorted(k for k in metrics if k.startswith(self.metrics_prefix)):
            if (value := _number(metrics[name])) is not None:
                parts.append(f"{name} {value:.4f}")
        parts.append(f"{time.monotonic() - self._started:.1f} s")
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None)
        # Tracked here: this hook may run before the checkpoint callback has saved (and updated its best) for
        # this epoch, and its own current_score only moves when it saves.
        current = _number(metrics.get(monitor)) if monitor else None
        if current is not None:
            mode_max = getattr(checkpoint, "mode", "max") == "max"
            if self._best is None or (current > self._best if mode_max else current < self._best):
                self._best = current
                parts.append(f"*best {monitor}*")
        return "  ".join(parts)
