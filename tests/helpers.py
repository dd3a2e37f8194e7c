"""Helpers for tests that run the CLI or load models in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m datamint_lightning <args>`` in a fresh process, from a scratch working directory."""
    return subprocess.run([sys.executable, "-m", "datamint_lightning", *args], cwd=cwd or tempfile.mkdtemp(),
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def run_python(code: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd or REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)
