"""``InvalidRequest``: a bad prediction request, answered with HTTP 400 and its own message when served."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from datamint_lightning.errors import PredictionError


class InvalidRequest(PredictionError, MlflowException):
    """A ``PredictionError`` that MLflow's scoring server maps to HTTP 400 (any other error would become a
    generic "unexpected error" message with the real one buried in a stack trace)."""

    def __init__(self, message: str):
        MlflowException.__init__(self, message, error_code=INVALID_PARAMETER_VALUE)

    # The scoring server rewrites ``message`` to "Failed to predict data '<the whole request>'. Error: ...",
    # which for a base64 volume is megabytes of echo; keep the first message, which says what to fix.
    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value
