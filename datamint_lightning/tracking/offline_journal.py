"""The offline journal: records a run could not send to MLflow, kept as JSON lines and replayed later.

Line one is a header (run id, redacted tracking URI); each further line is one record: ``metrics``, ``tags``,
``artifact`` (a local file to upload), ``delete_artifact`` or ``terminate``. Replaying sends them in order and
rewrites the journal with what is still unsent, so a replay interrupted half way can be run again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL_NAME = "mlflow_journal.jsonl"


class OfflineJournal:
    """An append-only, thread-safe JSON-lines file of unsent records for one run."""

    def __init__(self, path: str | Path, run_id: str, tracking_uri: str):
        from datamint_lightning.tracking.tracking_uri import redact

        self.path = Path(path)
        self.run_id = run_id
        self.tracking_uri = redact(tracking_uri)  # the journal is a plain file: never store a secret
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> "OfflineJournal":
        path = Path(path)
        if path.is_dir():
            path = path / JOURNAL_NAME
        if not path.is_file():
            raise FileNotFoundError(f"No offline journal at {path}.")
        header = json.loads(path.read_text().splitlines()[0])
        return cls(path, header["run_id"], header["tracking_uri"])

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            with self.path.open("a") as stream:
                if new:
                    stream.write(json.dumps({"run_id": self.run_id, "tracking_uri": self.tracking_uri}) + "\n")
                stream.write(json.dumps(record) + "\n")
                stream.flush()

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()[1:] if line.strip()]

    def __len__(self) -> int:
        return len(self.records())

    def replay(self, client) -> int:
        """Send every record with ``client``; returns how many were sent. Raises on the first that fails
        (the journal then holds that record and the ones after it)."""
        with self._lock:
            records = _compact(self.records())
            sent = 0
            try:
                for record in records:
                    apply_record(client, self.run_id, record)
                    sent += 1
            finally:
                rest = records[sent:]
                if rest:
                    header = json.dumps({"run_id": self.run_id, "tracking_uri": self.tracking_uri})
                    self.path.write_text("\n".join([header, *map(json.dumps, rest)]) + "\n")
                elif self.path.exists():
                    self.path.rename(self.path.with_suffix(f".replayed-{int(time.time())}.jsonl"))
            return sent


def _compact(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # An upload whose local file is gone was evicted before it ever reached the run: skip it and its deletion.
    skipped = {r["artifact_path"] for r in records if r["op"] == "artifact" and not Path(r["local_path"]).exists()}
    return [r for r in records if not (r["op"] == "artifact" and r["artifact_path"] in skipped)
            and not (r["op"] == "delete_artifact" and r["artifact_path"] in skipped)]


def apply_record(client, run_id: str, record: dict[str, Any]) -> None:
    """Send one record to the run with ``client`` (an ``MlflowClient``)."""
    from mlflow.entities import Metric, RunTag

    op = record["op"]
    if op == "metrics":
        metrics = [Metric(k, float(v), int(record["timestamp"]), int(record.get("step") or 0))
                   for k, v in record["metrics"].items()]
        client.log_batch(run_id, metrics=metrics)
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in record["tags"].items()])
    elif op == "artifact":
        local = Path(record["local_path"])
        directory = str(Path(record["artifact_path"]).parent)
        client.log_artifact(run_id, str(local), None if directory == "." else directory)
    elif op == "delete_artifact":
        delete_run_artifact(client, run_id, record["artifact_path"])
    elif op == "terminate":
        client.set_terminated(run_id, record["status"], end_time=record.get("end_time"))
    else:
        raise ValueError(f"Unknown journal record {op!r}.")


def delete_run_artifact(client, run_id: str, artifact_path: str) -> None:
    """Delete one artifact of a run (local or proxied ``mlflow-artifacts:`` store alike)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    run = client.get_run(run_id)
    get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri) \
        .delete_artifacts(artifact_path)
