"""User-facing errors: the CLI prints their message alone, without a stack trace."""

from typing import Any

EXCERPT_CHARACTERS = 80


def excerpt(value: Any, limit: int = EXCERPT_CHARACTERS) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message quotes what a client sent, never all of it."""
    if hasattr(value, "tolist") and getattr(value, "size", limit + 1) <= limit:  # small numpy values as Python
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text):,} characters)"


class DatamintLightningError(Exception):
    """An error caused by input the user controls (config, data, URIs); the message says what to fix."""


class ConfigError(DatamintLightningError, ValueError):
    """A configuration value is invalid."""


class ProjectNotFoundError(DatamintLightningError, LookupError):
    """A project name or id is not in the local project store."""


class DataError(DatamintLightningError, ValueError):
    """A data file or annotation is unreadable or inconsistent."""


class TrackingError(DatamintLightningError, RuntimeError):
    """The MLflow tracking store cannot be used."""


class PackagingError(DatamintLightningError, RuntimeError):
    """A trained model could not be packaged, verified or registered."""


class PredictionError(DatamintLightningError, ValueError):
    """A prediction request is invalid (input, mode or parameters)."""


class TrainingError(DatamintLightningError, RuntimeError):
    """Training cannot go on (for example, the loss is no longer a finite number)."""


class NonFiniteLossError(TrainingError):
    """The training loss or gradients became NaN or infinite; the weights can no longer be trusted."""

    corrupts_weights = True  # MLflowModelCheckpoint does not make such weights the resume point


class InputTooLarge(DataError):
    """An input exceeds a configured size limit (see ``data/limits.py``); REST answers it with HTTP 413."""
