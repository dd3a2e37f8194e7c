"""Real MLflow servers for tests (``mlflow models serve``, ``mlflow server``) on 127.0.0.1: bounded waits,
always killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_model(model_uri: str, tracking_uri: str, log_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``mlflow models serve -m <model_uri> --env-manager local`` with one worker (``env``: variables to add);
    yields its base URL."""
    with served_model(model_uri, tracking_uri, log_path, env) as served:
        yield served.url


class ServedModel:
    """A running ``mlflow models serve``: its URL and its process (the head of its own process group)."""

    def __init__(self, url: str, process: subprocess.Popen):
        self.url, self.process = url, process

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server and its children (the uvicorn worker)."""
        import psutil

        head = psutil.Process(self.process.pid)
        total = 0.0
        for process in [head, *head.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the server and its children."""
        import psutil

        head = psutil.Process(self.process.pid)
        total = 0
        for process in [head, *head.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total


@contextlib.contextmanager
def served_model(
    model_uri: str, tracking_uri: str, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[ServedModel]:
    """``serve_model``, yielding the ``ServedModel`` (URL and process)."""
    port = free_port()
    # The venv's bin/ must be on PATH: the scoring server is started through ``uvicorn``.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        **(env or {}),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = open(log_path, "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not answer /ping within {START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield ServedModel(url, process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server's own process group (uvicorn workers included)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


class MlflowServer:
    """``mlflow server`` (sqlite, proxied artifacts) in its own process group; ``stop``/``start`` keep the same
    store and port."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'server.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--serve-artifacts",
        ]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=(self.root / "server.log").open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("mlflow server exited: " + (self.root / "server.log").read_text()[-3000:])
            try:
                if requests.get(f"{self.uri}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"mlflow server did not answer within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the server and its worker only
            self.process.wait(timeout=30)


@contextlib.contextmanager
def tracking_store(folder: Path) -> Iterator[str]:
    """A fresh sqlite tracking + registry store in ``folder``, current while inside; yields its URI."""
    import mlflow
    from helpers import restored_mlflow_environment

    uri = f"sqlite:///{folder}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    with restored_mlflow_environment():
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(previous)


def post(url: str, inputs, **params) -> requests.Response:
    return requests.post(f"{url}/invocations", json={"inputs": inputs, "params": params}, timeout=60)


def volume_item(shape, spacing, seed: int = 0) -> dict:
    """A random int16 (Z, H, W) volume as the REST ``array_b64`` item, with its spacing."""
    import base64

    import numpy as np

    data = np.random.default_rng(seed).integers(-100, 300, shape).astype("<i2")
    return {
        "array_b64": base64.b64encode(data.tobytes()).decode(),
        "dtype": "int16",
        "shape": list(shape),
        "spacing": list(spacing),
    }
