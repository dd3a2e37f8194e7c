"""``InvalidRequest``: a bad prediction request, answered with HTTP 400 (413 when too large) and its own message
when served; ``ServerFailure``: anything else, answered 500 without the stack trace MLflow would attach."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from datamint_lightning.errors import PredictionError

MAX_MESSAGE_CHARACTERS = 1000  # an error body names the problem; it never carries a request back


def bounded(message: str) -> str:
    """``message`` cut to ``MAX_MESSAGE_CHARACTERS`` (a last guard: messages quote client values as excerpts)."""
    if len(message) <= MAX_MESSAGE_CHARACTERS:
        return message
    return f"{message[: MAX_MESSAGE_CHARACTERS - 40]}... ({len(message):,} characters in all)"


class _FirstMessage(MlflowException):
    """Keeps the first ``message``: the scoring server rewrites it to "Failed to predict data '<the whole
    request>'. Error: ...", which for a base64 volume is megabytes of echo (and hides what to fix)."""

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


class InvalidRequest(PredictionError, _FirstMessage):
    """A ``PredictionError`` that MLflow's scoring server maps to HTTP 400, or to ``status`` (any other error
    would become a generic "unexpected error" message with the real one buried in a stack trace)."""

    def __init__(self, message: str, status: int = 400):
        MlflowException.__init__(self, bounded(message), error_code=INVALID_PARAMETER_VALUE)
        self.status = status

    def get_http_status_code(self) -> int:  # what the scoring server answers
        return self.status


class ServerFailure(_FirstMessage):
    """An unexpected error while serving: HTTP 500 with a fixed message (the details go to the server log)."""

    def __init__(self):
        MlflowException.__init__(
            self, "The model failed on this request; the details are in the server log.", error_code=INTERNAL_ERROR
        )
