"""``ResilientMLFlowLogger``: Lightning's MLFlowLogger whose records survive an unreachable tracking store."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only


class ResilientMLFlowLogger(MLFlowLogger):
    """Logs metrics through a ``RunRecorder`` (journaled while the store is down) and leaves the run's final
    status to the pipeline, which knows whether test, packaging and registration succeeded too."""

    def __init__(self, recorder, experiment_id: str | None = None, **kwargs: Any):
        kwargs.setdefault("log_model", False)  # checkpoints are uploaded by MLflowModelCheckpoint as written
        super().__init__(tracking_uri=recorder.tracking_uri, run_id=recorder.run_id, **kwargs)
        self.recorder = recorder
        # On resume: the last step already in the run per metric. The killed process logged some steps after its
        # last checkpoint; the resumed one trains them again, and a metric step must never appear twice.
        self.logged_through: dict[str, int] = {}
        if experiment_id is not None:
            # Known up front: Lightning's setup then never needs the (possibly unreachable) server for it, and
            # MLFlowLogger skips its global mlflow.set_tracking_uri call.
            self._experiment_id = experiment_id
            self._initialized = True

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        step = step or 0
        clean = {
            re.sub("[^a-zA-Z0-9_/. -]+", "", self._prefix + k if self._prefix else k): float(v)
            for k, v in metrics.items()
            if not isinstance(v, str)
        }
        clean = {k: v for k, v in clean.items() if step > self.logged_through.get(k, -1)}
        if clean:
            self.recorder.log_metrics(clean, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        pass  # the pipeline logs the whole resolved config as params; logging it twice would clash on resume

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        pass  # the run is terminated by the pipeline (after test/packaging), not at the end of fit
