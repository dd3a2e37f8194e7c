"""Keeping the console for what matters: third-party chatter is silenced unless the user asks for it.

Only the CLI calls ``quiet_third_party`` (the Python API leaves the host program's logging and warnings alone).
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# Lightning's informational lines that say nothing about this training.
_LIGHTNING_NOISE = re.compile(r"litlogger|LitLogger|TPU available|HPU available")
# Library warnings about library internals, printed on every run (the user cannot act on them).
_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),  # Lightning's _pytree on torch 2.14
    (r"Precision .* is not supported by the model summary", UserWarning),  # its size estimate, under bf16
)


# MLflow loggers whose INFO lines repeat on every run ("Creating initial MLflow database tables...", "Started
# monitoring system metrics.", ...).
MLFLOW_CHATTER = ("mlflow.store.db.utils", "mlflow.system_metrics")


class _DropMatching(logging.Filter):
    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_third_party(verbose: bool = False) -> None:
    """Silence Lightning's tips, MLflow's INFO chatter and artifact download bars, and known library warnings.

    With ``verbose`` nothing is silenced. The MLflow bars have no switch but MLflow's own environment variable;
    a value the user already set wins.
    """
    if verbose:
        return
    for message, category in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) for f in logger.filters):
            logger.addFilter(_DropMatching(_LIGHTNING_NOISE))
    # MLflow sets the "mlflow" logger's level when it is imported (after this call), but leaves descendants alone.
    for name in MLFLOW_CHATTER:
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
