"""Helpers for tests that run the CLI or load models in a fresh process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def session_store_uri() -> str:
    """The session's MLflow store (conftest exports it as MLFLOW_TRACKING_URI)."""
    return f"sqlite:///{Path(os.environ['DATAMINT_LIGHTNING_HOME']) / 'mlflow.db'}"


def session_env(**overrides: str | None) -> dict[str, str]:
    """This session's environment with no MLFLOW_* variable but the session's store (module fixtures may have
    exported others); ``NAME=None`` removes a variable, e.g. MLFLOW_TRACKING_URI=None for MLflow's default store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = session_store_uri()
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str | None] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m datamint_lightning <args>`` in a fresh process, from a scratch working directory."""
    return subprocess.run(
        [sys.executable, "-m", "datamint_lightning", *args],
        cwd=cwd or tempfile.mkdtemp(),
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(code: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd or REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def reset_mlflow_environment(baseline: dict[str, str]) -> None:
    """Set the MLFLOW_* variables back to ``baseline``: MLflow's set_tracking_uri and set_experiment export
    MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_ID, which would make one test's store the next test's default."""
    for key in [key for key in os.environ if key.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(baseline)


@contextlib.contextmanager
def restored_mlflow_environment():
    """The MLFLOW_* variables as they were on entry, once the block is done."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("MLFLOW_")}
    try:
        yield
    finally:
        reset_mlflow_environment(saved)
