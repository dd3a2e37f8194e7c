"""Clean answers from MLflow's scoring server for what it checks before a Datamint model's ``predict`` runs.

``mlflow models serve`` parses the JSON body and checks params against the signature itself, and three of its
answers break the rules this package's ``predict`` keeps (400 for a client's mistake, 500 only for ours, bodies
that never carry the request back):

- a body nested deeper than Python's JSON parser recurses (``[[[...]]]``, 100,000 levels) raises
  ``RecursionError``, which nothing in MLflow catches: the client gets 500 "Internal Server Error";
- a body that is not JSON is answered 400 with the whole body quoted after "Input:";
- an ``MlflowException`` raised in ``predict``, MLflow's own param check included (a string sent as
  ``batch_size``), is rewritten to "Failed to predict data '<the whole request>'": megabytes of echo; and that
  param check itself answers 500 (``INTERNAL_ERROR``) for a client's wrong value.

``install`` wraps ``mlflow.pyfunc.scoring_server.invocations`` (the ``/invocations`` route looks it up at every
request, after the model is loaded) so that these become 400s naming the problem, quoting at most a short
excerpt, without a stack trace. Nothing else in MLflow is changed. ``BaseDatamintModel.load_context`` installs it
only inside the scoring server (its ``app`` module is the one loading the model), once per process.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

from datamint_lightning.serving.request_error import _FirstMessage

logger = logging.getLogger(__name__)

SERVER_APP_MODULE = "mlflow.pyfunc.scoring_server.app"
GUARD_ATTRIBUTE = "_datamint_guard"
SHORT_MESSAGE_CHARACTERS = 300
DEEP_JSON = (
    "The request is nested too deeply to be parsed; send a flat body: "
    '{"inputs": [<item>, ...], "params": {...}} (see datamint_lightning.serving.rest).'
)


class CleanRequestError(_FirstMessage):
    """An error MLflow raised about a request, re-raised with a short message, its status and no stack trace."""

    def __init__(self, message: str, error_code: Any = INVALID_PARAMETER_VALUE):
        MlflowException.__init__(self, message, error_code=error_code)


def short_message(message: str) -> str:
    """MLflow's message without the request it quotes ("Input: ..."), cut to a short excerpt."""
    message = message.split("\nInput:", 1)[0].strip()
    if len(message) <= SHORT_MESSAGE_CHARACTERS:
        return message
    return f"{message[: SHORT_MESSAGE_CHARACTERS - 40]}... (message cut: it quoted the request)"


def cleaned(error: MlflowException, client_error: bool = False) -> MlflowException:
    """``error`` if it is already this package's (short, fixed); else a short copy with the same status, or with
    400 when it is known to be about the client's request (``client_error``)."""
    if isinstance(error, _FirstMessage):
        return error
    code = INVALID_PARAMETER_VALUE if client_error else ErrorCode.Value(error.error_code)  # stored by name
    return CleanRequestError(short_message(error.message), code)


class GuardedModel:
    """The scoring server's ``PyFuncModel`` with MLflow's own input and param errors made short before
    ``invocations`` would prefix them with the whole request."""

    def __init__(self, model: Any):
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            return self._model.predict(data, params=params)
        except MlflowException as error:  # not ours (ours are already clean): MLflow's checks of the request
            raise cleaned(error, client_error=True) from None
        except RecursionError:
            raise CleanRequestError(DEEP_JSON) from None
        except Exception:  # MLflow's input conversion failed on the client's data (ours never raises this far)
            logger.exception("MLflow could not convert the request for the model")
            raise CleanRequestError(
                "The request's inputs could not be converted for the model; send "
                '{"inputs": [<item>, ...], "params": {...}} (see datamint_lightning.serving.rest).'
            ) from None


def in_scoring_server() -> bool:
    """Whether this process is MLflow's scoring server loading its model."""
    return SERVER_APP_MODULE in sys.modules


def install() -> bool:
    """Wrap ``scoring_server.invocations`` (once); returns whether it was installed now."""
    from mlflow.pyfunc import scoring_server

    original = scoring_server.invocations
    if getattr(original, GUARD_ATTRIBUTE, False):
        return False

    @functools.wraps(original)
    def invocations(data, content_type, model, input_schema):
        try:
            return original(data, content_type, GuardedModel(model), input_schema)
        except RecursionError:
            raise CleanRequestError(DEEP_JSON) from None
        except MlflowException as error:
            raise cleaned(error) from None

    setattr(invocations, GUARD_ATTRIBUTE, True)
    scoring_server.invocations = invocations
    logger.debug("Datamint scoring guard installed around %s.invocations", scoring_server.__name__)
    return True
